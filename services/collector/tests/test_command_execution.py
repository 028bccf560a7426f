"""The executor's read-back checks against drivers that report the wrong effect (plug-ins, faulty meters).

The DLMS and Modbus drivers check their own read-back too; a plug-in driver may not, so the
collector checks every result itself. Stand-in drivers report what a faulty meter would.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from gxami_collector.command_execution import CommandExecutor
from gxami_collector.jobs import MeterReader
from gxami_collector.secret_store import SecretStore
from gxami_contracts import CommandOutcome, MeterCommand
from gxcore.drivers.api import CommandResult as DriverResult
from gxcore.drivers.api import DriverCommand
from gxcore.profiles import ProfileCatalog
from gxcore.readings import Reading
from gxcore.secrets import Secret

KEY = "00112233445566778899aabbccddeeff"


class FaultyMeterDriver:
    """A plug-in whose meter takes every command and reports an effect other than the one asked for."""

    name = "faulty"

    def __init__(self) -> None:
        self.commands: list[DriverCommand] = []

    def validate_profile(self, profile: object) -> None:
        return None

    async def execute(self, target: object, profile: object, command: DriverCommand, *, timeout: float) -> DriverResult:
        self.commands.append(command)
        now = datetime.now(UTC)
        if command.kind == "disconnect":
            relay = Reading("relay-state", 1.0, "", now, extra={"output_state": 1})
            return DriverResult(command, state="connected", readings=[relay])
        if command.kind == "clock-set":
            return DriverResult(command, meter_time_before=now, meter_time_after=now + timedelta(minutes=3))
        if command.kind == "write-point":
            return DriverResult(command, readings=[Reading(command.point or "", 14.0, "min", now)])
        if command.kind in ("firmware-update", "tariff-calendar"):
            return DriverResult(command, readings=[Reading("blocks-sent", 12, "", now)], detail="image verified")
        raise RuntimeError(f"meter exploded; key was {KEY}")  # a driver bug whose message carries a secret


def _executor() -> tuple[CommandExecutor, FaultyMeterDriver]:
    reader = MeterReader(
        ProfileCatalog(), SecretStore(default={"key": Secret(KEY)}), exchange_timeout=1, session_timeout=5
    )
    driver = FaultyMeterDriver()
    reader._drivers["dlms"] = driver  # type: ignore[assignment]  # a stand-in meter
    return CommandExecutor(reader, clock_tolerance_s=5, collector="unit"), driver


def _command(kind: str, **fields: object) -> MeterCommand:
    now = datetime.now(UTC)
    base: dict[str, object] = {
        "command_id": uuid.uuid4().hex,
        "meter_id": "FAULTY1",
        "link_id": "tcp://127.0.0.1:1",
        "protocol": "dlms",
        "url": "tcp://127.0.0.1:1",
        "profile": "generic-dlms",
        "kind": kind,
        "requested_by": "unit-test",
        "issued_at": now,
        "expires_at": now + timedelta(minutes=5),
    }
    return MeterCommand.model_validate({**base, **fields})


async def test_an_effect_other_than_asked_fails_with_the_read_back(caplog: pytest.LogCaptureFixture) -> None:
    executor, driver = _executor()
    relay = (await executor.execute(_command("disconnect"))).result
    assert (relay.outcome, relay.error_kind, relay.state) == (CommandOutcome.FAILED, "read-back", "connected")
    assert relay.data["output_state"] is True and relay.data["control_state"] == 1

    wanted = datetime.now(UTC).replace(microsecond=0)
    clock = (await executor.execute(_command("clock-set", clock=wanted))).result
    assert (clock.outcome, clock.error_kind) == (CommandOutcome.FAILED, "read-back")
    assert clock.meter_time_after is not None and clock.data["clock_error_s"] >= 170

    write = (await executor.execute(_command("write-point", point="1-0:0.8.0", value=15))).result
    assert (write.outcome, write.error_kind, write.data["value"]) == (CommandOutcome.FAILED, "read-back", 14.0)

    # A tariff calendar goes to the driver as it is, body included.
    body = {"calendar": "day-night", "activate_at": "2026-01-01T00:00:00Z"}
    tariff = (await executor.execute(_command("tariff-calendar", body=body))).result
    assert tariff.outcome is CommandOutcome.SUCCEEDED and tariff.data == {
        "blocks-sent": 12,
        "detail": "image verified",
    }
    assert driver.commands[-1].body == body
    # A firmware update names its image by hash: without the scheduler's API to fetch it from,
    # it fails as a configuration error and the meter is never touched.
    sent = len(driver.commands)
    firmware = (await executor.execute(_command("firmware-update", body={"sha256": "ab" * 32}))).result
    assert (firmware.outcome, firmware.error_kind) == (CommandOutcome.FAILED, "configuration")
    assert "GXAMI_SCHEDULER_API_URL" in (firmware.error_message or "") and len(driver.commands) == sent

    with caplog.at_level(logging.DEBUG):
        broken = (await executor.execute(_command("clock-sync"))).result
    assert (broken.outcome, broken.error_kind) == (CommandOutcome.FAILED, "internal")
    assert KEY not in broken.model_dump_json() and KEY not in caplog.text
    assert "RuntimeError" in (broken.error_message or "")


async def test_read_back_is_written_to_the_result_with_the_collector_and_attempt() -> None:
    executor, _ = _executor()
    done = (await executor.execute(_command("firmware-update", attempt=3), interrupted_before=True)).result
    assert (done.attempt, done.collector, done.data["interrupted_before"]) == (3, "unit", True)
    assert done.started_at is not None and done.started_at <= done.finished_at
