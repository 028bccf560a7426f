"""`gxami simulate iec62056-21 --dial-in` and `gxami simulate mbus --dial-in`: fleet files, bad targets, a real call."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import yaml
from typer.testing import CliRunner

from gxami_meterlab.cli_simulate import app
from gxami_meterlab.simulators.dlms import meter_id
from gxami_meterlab.simulators.mbus_dialin import MBusDialInMeters


def test_a_bad_dial_in_target_is_one_line_and_exit_2() -> None:
    for command in ("iec62056-21", "mbus"):
        result = CliRunner().invoke(app, [command, "--dial-in", "nohost"])
        assert result.exit_code == 2, result.output
        assert f"gxami simulate {command}: --dial-in 'nohost': write HOST:PORT" in result.output


def test_write_only_writes_the_identities_the_collector_matches(tmp_path: Path) -> None:
    iec, mbus = tmp_path / "iec.yaml", tmp_path / "mbus.yaml"
    common = ["--dial-in", "127.0.0.1:4062", "--meters", "2", "--seed", "7", "--write-only", "--schedule", "1h"]
    assert CliRunner().invoke(app, ["iec62056-21", *common, "--fleet-out", str(iec)]).exit_code == 0
    assert CliRunner().invoke(app, ["mbus", *common, "--fleet-out", str(mbus)]).exit_code == 0
    iec_rows = yaml.safe_load(iec.read_text())["meters"]
    assert [(m["meter_id"], m["serial"], m["connection"], m["protocol"]) for m in iec_rows] == [
        (meter_id(7, i), meter_id(7, i), "dial-in", "iec62056-21") for i in range(2)
    ]
    sims = MBusDialInMeters([7000, 7001], [("127.0.0.1", 1)])
    mbus_rows = yaml.safe_load(mbus.read_text())["meters"]
    assert [m["serial"] for m in mbus_rows] == [sims.secondary_address(0), sims.secondary_address(1)]
    assert all(len(m["serial"]) == 16 and m["schedule"] == "1h" for m in mbus_rows)


def test_an_iec_meter_calls_answers_the_sign_on_with_its_id_and_logs_the_call(tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(60)
        port = server.getsockname()[1]
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gxami_cli",
                "simulate",
                "iec62056-21",
                "--dial-in",
                f"127.0.0.1:{port}",
                "--seed",
                "7",
                "--calls",
                "1",
                "--call-log",
                str(log),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            conn, _ = server.accept()
            with conn:
                conn.settimeout(30)
                conn.sendall(b"/?!\r\n")
                answer = b""
                while not answer.endswith(b"\r\n"):
                    chunk = conn.recv(256)
                    assert chunk, "the meter hung up before identifying itself"
                    answer += chunk
            assert proc.wait(60) == 0, proc.stderr.read() if proc.stderr else b""
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            if proc.stderr:
                proc.stderr.close()
    assert answer.startswith(b"/") and meter_id(7, 0).encode() in answer
    (call,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert call["meter_id"] == meter_id(7, 0) and call["answered"] == 1 and call["ended"] == "hung-up"
