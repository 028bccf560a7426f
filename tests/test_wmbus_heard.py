"""`gxami simulate wmbus --feed tcp` heard by `gxami wmbus heard`: every simulated meter, with the right counts."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from gxami_meterlab.simulators.wmbus import WMBusTelegramGenerator

pytestmark = pytest.mark.timeout(120)
METERS, PER_METER, SEED = 5, 3, 4


def _start(args: list[str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gxami_cli", "simulate", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.search(r"tcp://127\.0\.0\.1:(\d+)", line)
        if m:
            return proc, f"tcp://127.0.0.1:{m.group(1)}"
    proc.kill()
    proc.wait(10)
    proc.stdout.close()
    raise AssertionError("simulator printed no address")


def _stop(proc: subprocess.Popen[str]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(15) is not None
    assert proc.stdout is not None
    proc.stdout.close()


@pytest.mark.parametrize("framing", ["hex", "length", "lfield", "im871a", "amber"])
def test_every_simulated_meter_is_heard_with_its_count(framing: str) -> None:
    sim, url = _start(
        ["wmbus", "--feed", "tcp", "--meters", str(METERS), "--seed", str(SEED), "--framing", framing,
         "--interval", "0.2", "--telegrams", str(PER_METER), "--junk"]
    )  # fmt: skip
    try:
        out = subprocess.run(
            [sys.executable, "-m", "gxami_cli", "wmbus", "heard", url, "--framing", framing, "--seconds", "2"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        _stop(sim)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    generator = WMBusTelegramGenerator(SEED, METERS)
    heard = {m["id"]: m for m in doc["meters"]}
    assert set(heard) == {m.id for m in generator.meters}
    assert doc["telegrams"] == METERS * PER_METER and doc["ended"] == "time"
    assert doc["skipped"].get("garbage", 0) + doc["skipped"].get("message", 0) > 0  # --junk was reported
    for meter in generator.meters:
        entry = heard[meter.id]
        assert entry["count"] == PER_METER
        assert (entry["manufacturer"], entry["version"], entry["type"]) == ("GXW", 1, 7)
        assert entry["encrypted"] is (meter.key is not None)
        if framing in ("im871a", "amber"):
            assert entry["last_rssi_raw"] == generator.rssi_of(meter.index)
        if framing == "amber":
            assert entry["last_rssi_dbm"] is not None and -128 <= entry["last_rssi_dbm"] <= -50


def test_a_refused_receiver_is_a_one_line_error() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gxami_cli", "wmbus", "heard", "tcp://127.0.0.1:9", "--seconds", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 1
    assert out.stderr.startswith("gxami wmbus heard: ") and len(out.stderr.strip().splitlines()) == 1
    assert "Traceback" not in out.stderr


def test_the_wmbus_commands_start_without_the_driver_stack_and_know_gxcores_framings() -> None:
    from gxami_cli import wmbus_tools
    from gxcore.protocols.wmbus.receivers import FRAMINGS

    assert wmbus_tools.FRAMINGS == FRAMINGS  # spelled out in the CLI so that its module stays light
    code = (
        "import json, sys, typer; from gxami_cli.main import app; command = typer.main.get_command(app)\n"
        "try:\n    command.main(['wmbus', 'heard', '--help'], prog_name='gxami', standalone_mode=False)\n"
        "except SystemExit:\n    pass\nprint(json.dumps(sorted(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    modules = set(json.loads(done.stdout.splitlines()[-1]))
    assert "--framing" in done.stdout
    assert not {"asyncio", "gxcore.drivers", "gxcore.protocols.wmbus", "yaml"} & modules
