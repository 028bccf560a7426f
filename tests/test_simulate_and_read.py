"""Every protocol's simulator, started as `gxami simulate X`, read once by `gxami read URL --protocol X`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

CASES = {
    "dlms": (["dlms", "--meters", "1", "--authentication", "none"], [], "1-0:1.8.0"),
    "modbus": (["modbus", "--meters", "1"], [], "1-0:1.8.0"),
    "mbus": (["mbus", "--meters", "2"], ["--option", "primary_address=1"], None),
    "iec62056-21": (["iec62056-21"], [], "1.8.0"),
    "dsmr": (["dsmr", "--interval", "0.5"], [], "1-0:1.8.1"),
}


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
        m = re.search(r"tcp://127\.0\.0\.1:(\d+)", line) or re.search(r"ports (\d+)\.\.", line)
        if m:
            return proc, f"tcp://127.0.0.1:{m.group(1)}"
    proc.kill()
    proc.wait(10)
    proc.stdout.close()
    raise AssertionError("simulator printed no address")


@pytest.mark.parametrize("protocol", sorted(CASES))
def test_simulator_is_read_through_gxami_read(protocol: str) -> None:
    sim_args, read_args, must_have = CASES[protocol]
    sim, url = _start(sim_args)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "gxami_cli", "read", url, "--protocol", protocol, "--timeout", "10", *read_args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.killpg(sim.pid, signal.SIGTERM)
        assert sim.wait(15) is not None
        assert sim.stdout is not None
        sim.stdout.close()
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    readings = doc["readings"]
    assert readings, doc
    for r in readings:
        assert set(r) >= {"quantity", "value", "unit", "timestamp"}
    if must_have is not None:
        assert any(r["quantity"].endswith(must_have) for r in readings), readings


def test_dlms_high_gmac_meter_is_read_with_keys_from_the_environment(tmp_path: Path) -> None:
    import yaml

    fleet, secrets = tmp_path / "fleet.yaml", tmp_path / "secrets.yaml"
    sim = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gxami_cli",
            "simulate",
            "dlms",
            "--meters",
            "1",
            "--authentication",
            "high-gmac",
            "--fleet-out",
            str(fleet),
            "--secrets-out",
            str(secrets),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not fleet.exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        meter = yaml.safe_load(fleet.read_text())["meters"][0]
        keys = yaml.safe_load(secrets.read_text())["meters"][meter["meter_id"]]
        opts = [a for k, v in meter["options"].items() for a in ("--option", f"{k}={v}")]
        env = {**os.environ, "K": keys["key"], "A": keys["auth_key"]}
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "gxami_cli",
                "read",
                meter["address"],
                "--protocol",
                "dlms",
                *opts,
                "--key-env",
                "K",
                "--secret-env",
                "auth_key=A",
                "--timeout",
                "10",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=env,
        )
        wrong = subprocess.run(
            [
                sys.executable,
                "-m",
                "gxami_cli",
                "read",
                meter["address"],
                "--protocol",
                "dlms",
                *opts,
                "--key-env",
                "K",
                "--secret-env",
                "auth_key=K",
                "--timeout",
                "5",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=env,
        )
    finally:
        os.killpg(sim.pid, signal.SIGTERM)
        sim.wait(15)
    assert out.returncode == 0, out.stderr
    assert any(r["quantity"] == "1-0:1.8.0" for r in json.loads(out.stdout)["readings"])
    assert wrong.returncode != 0
    for secret in (keys["key"], keys["auth_key"]):
        assert secret.lower() not in (out.stdout + out.stderr + wrong.stdout + wrong.stderr).lower()


def test_dlms_password_hls_meter_from_gxami_simulate_is_read_with_its_password(tmp_path: Path) -> None:
    """`gxami simulate dlms --authentication high-sha256`: the fleet and secrets files it writes read back."""
    import yaml

    fleet, secrets = tmp_path / "fleet.yaml", tmp_path / "secrets.yaml"
    args = ["dlms", "--meters", "1", "--authentication", "high-sha256", "--fleet-out", str(fleet)]
    sim = subprocess.Popen(
        [sys.executable, "-m", "gxami_cli", "simulate", *args, "--secrets-out", str(secrets)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (fleet.exists() and secrets.exists()):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        meter = yaml.safe_load(fleet.read_text())["meters"][0]
        password = yaml.safe_load(secrets.read_text())["default"]["password"]
        assert meter["options"] == {"authentication": "high-sha256"}

        read_args = ["read", "--protocol", "dlms", "-o", "authentication=high-sha256"]
        command = [sys.executable, "-m", "gxami_cli", *read_args]

        def read(secret: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*command, meter["address"], "--password-env", "PW", "--timeout", "10"],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                env={**os.environ, "PW": secret},
            )

        out, wrong = read(password), read("not-" + password)
    finally:
        os.killpg(sim.pid, signal.SIGTERM)
        sim.wait(15)
    assert out.returncode == 0, out.stderr
    assert any(r["quantity"] == "1-0:1.8.0" for r in json.loads(out.stdout)["readings"])
    assert wrong.returncode != 0 and "HLS authentication" in wrong.stderr, wrong.stderr
    assert password not in out.stdout + out.stderr + wrong.stdout + wrong.stderr
