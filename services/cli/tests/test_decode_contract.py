"""Hostile frames and meter replies end the CLI with a one-line reason, never "internal error"."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner, Result

import gxami_meterlab.dlms.server
from gxami_cli.main import app
from gxami_meterlab.simulators.dlms import DlmsFleetSimulator
from gxcore.protocols.dlms import hdlc

runner = CliRunner()
EMPTY_WRAPPER_PUSH = "0001000100660000"
LATE_DATETIME = "0c270f0c1f01173b3b00021ff8"  # 9999-12-31 23:59:59 local, deviation +543 min
AT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def one_line_error(result: Result, code: int) -> str:
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def hdlc_without_info() -> str:
    head = bytes([0xA0, 0x07, 0x03, 0x21, 0x13])
    return (b"\x7e" + head + hdlc.fcs16(head).to_bytes(2, "little") + b"\x7e").hex()


@pytest.mark.parametrize(
    ("frame", "says"),
    [
        (EMPTY_WRAPPER_PUSH, "push carries an empty APDU"),
        (hdlc_without_info(), "push carries an empty APDU"),
        ("0f00000001" + LATE_DATETIME + "00", "date-time in UTC falls outside years 1..9999"),
        ("0001000100660013" + "0f00000001" + LATE_DATETIME + "00", "outside years 1..9999"),
    ],
)
def test_undecodable_pushes_are_bad_input_with_a_reason(frame: str, says: str) -> None:
    line = one_line_error(runner.invoke(app, ["decode", "dlms-push", frame]), 2)
    assert line.startswith("gxami decode dlms-push: ") and says in line


async def test_a_meter_clock_past_9999_fails_the_read_as_the_meters_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    # The simulated meter answers its clock with the date-time of the defect report.
    monkeypatch.setattr(gxami_meterlab.dlms.server, "encode_time", lambda at: b"\x09" + bytes.fromhex(LATE_DATETIME))
    async with DlmsFleetSimulator(1, seed=2, clock=lambda: AT) as sim:
        url = f"tcp://127.0.0.1:{sim.meters[0].port}"
        result = await asyncio.to_thread(runner.invoke, app, ["read", url, "-p", "dlms", "--timeout", "2"])
    # A reply that breaks the protocol is the meter's fault: exit code 1, as for the field tools' other meter faults.
    line = one_line_error(result, 1)
    assert line.startswith("gxami read: ") and "outside years 1..9999" in line
