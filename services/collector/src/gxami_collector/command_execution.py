"""Running one meter's command through its driver and checking what the meter reports back.

The result is what the meter says afterwards, never what was asked: a relay command succeeds only
if the disconnect control's state read back is the one the command leads to (``disconnect``:
disconnected; ``reconnect``: connected, or ready-for-reconnection where the control mode needs the
customer's button; ``arm-reconnect``: ready-for-reconnection), a clock command only if the clock
read back lies within the tolerance of the time set, a write only if the value read back is the
value written. A relay command that fails is followed by one more association that reads the
relay's state, so the result still says where the relay is. ``read`` runs an on-demand read
through the job path (:class:`~gxami_collector.jobs.MeterReader`), with its readings and events.
Tariff calendars go to the driver as they are (``DriverCommand.body``). A ``firmware-update``
names its image by SHA-256: the image is fetched (:class:`~gxami_collector.firmware_images.FirmwareImages`)
and the driver gets the bytes; the session is bounded by ``firmware_session_timeout_s`` rather than
the normal session bound, and the driver's progress (blocks done of all, the next block it sends)
reaches the caller's ``on_progress`` as ``sent`` results, so the scheduler shows each meter's
transfer while it runs. A command that comes again after a collector died mid-transfer runs again,
and the driver resumes from the meter's first missing block.

Every meter fault becomes a ``failed`` result with a typed error; nothing here raises for one.
No key, password or tag reaches a result or a log: secrets stay in the target, and an unexpected
error is reported by its type and where it was raised, not by its message.
"""

from __future__ import annotations

import asyncio
import logging
import math
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Final, cast

from pydantic import ValidationError

from gxami_collector.firmware_images import FirmwareFetchError, FirmwareImages
from gxami_collector.jobs import JobOutcome, MeterReader
from gxami_contracts import (
    CommandKind,
    CommandOutcome,
    CommandResult,
    JobStatus,
    MeterCommand,
    MeterEvent,
    ReadingBatch,
    ReadJob,
)
from gxami_contracts.messages import FIRST_INSTANT, INT8_MAX, INT8_MIN, LAST_INSTANT
from gxami_runtime.kafka import describe_validation_error
from gxcore.drivers.api import CommandKind as DriverKind
from gxcore.drivers.api import CommandResult as DriverResult
from gxcore.drivers.api import DriverCommand
from gxcore.drivers.dlms.firmware import FirmwareProgress, FirmwareTransferError
from gxcore.errors import GxError
from gxcore.readings import Reading

log = logging.getLogger("gxami.collector.commands")

# The relay states each relay command must leave the meter in (class 70 control_state names).
RELAY_STATES: Final[dict[CommandKind, frozenset[str]]] = {
    CommandKind.DISCONNECT: frozenset({"disconnected"}),
    CommandKind.RECONNECT: frozenset({"connected", "ready-for-reconnection"}),
    CommandKind.ARM_RECONNECT: frozenset({"ready-for-reconnection"}),
}
RELAY_KINDS: Final = frozenset({*RELAY_STATES, CommandKind.RELAY_STATE})
CLOCK_KINDS: Final = frozenset({CommandKind.CLOCK_SET, CommandKind.CLOCK_SYNC})
WRITE_KINDS: Final = frozenset({CommandKind.SET_ATTRIBUTE, CommandKind.WRITE_POINT})
_DATA_ENTRIES: Final = 48  # of the contract's 64: room for what the collector adds beside the read-back
_JOB_NAMESPACE: Final = uuid.UUID("5d1c8a1e-6f0b-4c43-9f43-2b0c9e6f1a11")
ProgressSink = Callable[[CommandResult], None]


@dataclass(frozen=True, slots=True)
class CommandDone:
    """What one command produced: its final result and, for ``read``, the readings and events."""

    result: CommandResult
    batch: ReadingBatch | None = None
    events: tuple[MeterEvent, ...] = field(default_factory=tuple)


def utc_now() -> datetime:
    return datetime.now(UTC)


def _instant(at: datetime | None) -> datetime | None:
    """``at`` if the contract carries it (a meter set to 9999-12-31 does not), else None."""
    return at if at is not None and at.tzinfo is not None and FIRST_INSTANT <= at <= LAST_INSTANT else None


def data_value(value: object) -> str | int | float | bool | None:
    """A read-back value as the contract's ``data`` holds it: numbers finite and int8, bytes as hex, else text."""
    if value is None or isinstance(value, bool | str):
        return value if not isinstance(value, str) else value.replace("\x00", "\\0")[:2000]
    if isinstance(value, int):
        return value if INT8_MIN <= value <= INT8_MAX else str(value)
    if isinstance(value, float | Decimal):
        number = float(value)
        return number if math.isfinite(number) else str(value)
    if isinstance(value, bytes):
        return value.hex()[:2000]
    return str(value)[:2000]


def same_value(written: object, read: object) -> bool:
    """The value read back is the one written: numbers (a coil's ``True`` reads back 1) to a millionth
    of the value (a float32 register rounds), anything else exactly."""
    if _numeric(written, read):
        a, b = float(cast("float", written)), float(cast("float", read))
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    return written == read


def _numeric(*values: object) -> bool:
    return all(isinstance(v, int | float | Decimal | bool) for v in values)


class CommandExecutor:
    """Runs commands on meters through the reader's drivers, secrets and allow-list (see the module doc)."""

    def __init__(
        self,
        reader: MeterReader,
        *,
        clock_tolerance_s: float,
        collector: str | None = None,
        clock: Callable[[], datetime] = utc_now,
        firmware: FirmwareImages | None = None,
        firmware_session_timeout: float | None = None,
    ) -> None:
        self.reader = reader
        self.clock = clock
        self._tolerance = timedelta(seconds=clock_tolerance_s)
        self._collector = collector or None
        self.firmware = firmware  # None: no scheduler API configured, firmware-update commands fail
        self._firmware_timeout = firmware_session_timeout or reader.session_timeout
        # Where each meter's running firmware transfer reports (one command per meter at a time).
        self._progress: dict[str, Callable[[FirmwareProgress], None]] = {}

    def result(
        self, command: MeterCommand, outcome: CommandOutcome, started: datetime | None = None, **fields: object
    ) -> CommandResult:
        """A result of ``command`` with ``outcome``, finished now."""
        return CommandResult.model_validate(
            {
                "command_id": command.command_id,
                "meter_id": command.meter_id,
                "kind": command.kind,
                "outcome": outcome,
                "attempt": command.attempt,
                "started_at": started,
                "finished_at": self.clock(),
                "collector": self._collector,
                **fields,
            }
        )

    def failed(
        self, command: MeterCommand, started: datetime, kind: str, message: str, **fields: object
    ) -> CommandDone:
        text = message.replace("\x00", "\\0")[:2000]
        return CommandDone(
            self.result(command, CommandOutcome.FAILED, started, error_kind=kind[:64], error_message=text, **fields)
        )

    async def execute(
        self, command: MeterCommand, *, interrupted_before: bool = False, on_progress: ProgressSink | None = None
    ) -> CommandDone:
        """Run ``command`` now (the caller checked expiry and holds the meter's link) and check its read-back.

        ``on_progress`` hears a firmware transfer's progress as ``sent`` results (it must not block).
        """
        started = self.clock()
        if command.kind is CommandKind.READ:
            done = await self._read(command, started)
        elif command.kind is CommandKind.FIRMWARE_UPDATE:
            done = await self._firmware(command, started, on_progress)
        else:
            done = await self._driver_command(command, started)
        if interrupted_before:  # see gxami_collector.command_records: a crash fell inside an earlier run
            result = done.result.model_copy(update={"data": {**done.result.data, "interrupted_before": True}})
            done = CommandDone(result, done.batch, done.events)
        return done

    async def _firmware(
        self, command: MeterCommand, started: datetime, on_progress: ProgressSink | None
    ) -> CommandDone:
        """A firmware-update: the image fetched by hash, the driver's progress relayed, a longer session bound."""
        if self.firmware is None:
            message = f"meter {command.meter_id}: firmware-update needs GXAMI_SCHEDULER_API_URL to fetch the image"
            return self.failed(command, started, "configuration", message)
        try:
            body = await self.firmware.driver_body(command.body)
        except FirmwareFetchError as exc:
            return self.failed(command, started, "firmware-image", f"meter {command.meter_id}: {exc}")

        def progress(p: FirmwareProgress) -> None:
            if on_progress is None:
                return
            data: dict[str, object] = {
                "firmware-blocks-done": p.blocks_done,
                "firmware-blocks-total": p.blocks_total,
                "firmware-blocks-sent": p.sent,
            }
            if p.first_missing is not None:
                data["firmware-first-missing"] = p.first_missing
            on_progress(self.result(command, CommandOutcome.SENT, started, state="transferring", data=data))

        self._progress[command.meter_id] = progress
        try:
            return await self._driver_command(command, started, body=body, timeout=self._firmware_timeout)
        finally:
            self._progress.pop(command.meter_id, None)

    def _relay_progress(self, p: FirmwareProgress) -> None:
        """The drivers' firmware hook: hands a transfer's progress to its meter's running command."""
        sink = self._progress.get(p.meter_id)
        if sink is not None:
            sink(p)

    async def _driver_command(
        self,
        command: MeterCommand,
        started: datetime,
        *,
        body: dict[str, object] | None = None,
        timeout: float | None = None,
    ) -> CommandDone:
        wanted = DriverCommand(
            kind=cast("DriverKind", command.kind.value),
            point=command.point,
            value=command.value,
            clock=command.clock,
            options=command.options,
            body=body if body is not None else command.body,
        )
        limit = timeout if timeout is not None else self.reader.session_timeout
        try:
            done = await self._run_driver(command, wanted, limit)
        except FirmwareTransferError as exc:
            if exc.meter_id is None:
                exc.meter_id = command.meter_id
            figures = {
                "firmware-blocks-done": exc.blocks_done,
                "firmware-blocks-total": exc.blocks_total,
                "firmware-first-missing": exc.first_missing,
            }
            return self.failed(command, started, "firmware-transfer", str(exc), data=figures)
        except GxError as exc:
            if exc.meter_id is None:
                exc.meter_id = command.meter_id
            state = await self._relay_state(command) if command.kind in RELAY_STATES else None
            return self.failed(command, started, exc.kind, str(exc), state=state)
        except TimeoutError:
            return self.failed(command, started, "timeout", f"meter {command.meter_id}: session exceeded {limit:.0f} s")
        except Exception as exc:  # noqa: BLE001 - a driver bug must not stop the collector; logged by type
            self._log_internal(command, exc)
            return self.failed(
                command, started, "internal", f"meter {command.meter_id}: {type(exc).__name__} in driver"
            )
        try:
            return self._checked(command, done, started)
        except ValidationError as exc:  # the driver reported something the contract cannot carry
            reason = describe_validation_error(exc)
            return self.failed(command, started, "protocol", f"meter {command.meter_id}: read-back refused: {reason}")

    async def _run_driver(
        self, command: MeterCommand, wanted: DriverCommand, limit: float | None = None
    ) -> DriverResult:
        driver, profile, target = await self.reader.meter(
            command.meter_id, command.url, command.protocol, command.profile, command.options
        )
        if wanted.kind == "firmware-update" and hasattr(driver, "firmware_progress"):
            driver.firmware_progress = self._relay_progress  # a shared driver: routed by meter id
        async with asyncio.timeout(limit if limit is not None else self.reader.session_timeout):
            return await driver.execute(target, profile, wanted, timeout=self.reader.exchange_timeout)

    async def _relay_state(self, command: MeterCommand) -> str | None:
        """After a failed relay command: where the relay is now (one more association), or None if unknown."""
        try:
            done = await self._run_driver(command, DriverCommand("relay-state", point=command.point))
        except (GxError, TimeoutError):
            return None
        except Exception as exc:  # noqa: BLE001 - the same driver bug again: the failed command's, logged by type
            self._log_internal(command, exc)
            return None
        return done.state[:64] if done.state else None

    def _checked(self, command: MeterCommand, done: DriverResult, started: datetime) -> CommandDone:
        """The final result of a command the driver ran: succeeded only if the read-back shows its effect."""
        data = self._readings(done.readings)
        if done.detail:
            data["detail"] = done.detail[:2000]
        kind, meter = command.kind, command.meter_id
        if kind in RELAY_KINDS:
            return self._relay(command, done, data, started)
        if kind in CLOCK_KINDS:
            return self._clock(command, done, data, started)
        if kind in WRITE_KINDS:
            back = [r for r in done.readings if command.point in (r.quantity, r.extra.get("source"))] or done.readings
            if not back:
                return self.failed(command, started, "read-back", f"meter {meter}: {kind} read nothing back", data=data)
            data["value"] = data_value(back[0].value)
            if not same_value(command.value, back[0].value):
                message = f"meter {meter}: wrote {command.value!r} to {command.point} but read back {data['value']!r}"
                return self.failed(command, started, "read-back", message, data=data)
        state = done.state[:64] if done.state else None
        return CommandDone(self.result(command, CommandOutcome.SUCCEEDED, started, state=state, data=data))

    def _relay(
        self, command: MeterCommand, done: DriverResult, data: dict[str, object], started: datetime
    ) -> CommandDone:
        meter, state = command.meter_id, done.state
        relay = next((r for r in done.readings if "output_state" in r.extra), None)
        if relay is not None:
            data.pop(relay.quantity, None)
            data["output_state"] = bool(relay.extra["output_state"])
            if _numeric(relay.value):
                data["control_state"] = int(cast("float", relay.value))
        if state is None:
            return self.failed(command, started, "read-back", f"meter {meter}: no relay state read back", data=data)
        wanted = RELAY_STATES.get(command.kind)
        if wanted is not None and state not in wanted:
            message = f"meter {meter}: {command.kind} left the relay {state}, not {' or '.join(sorted(wanted))}"
            return self.failed(command, started, "read-back", message, state=state[:64], data=data)
        return CommandDone(self.result(command, CommandOutcome.SUCCEEDED, started, state=state[:64], data=data))

    def _clock(
        self, command: MeterCommand, done: DriverResult, data: dict[str, object], started: datetime
    ) -> CommandDone:
        meter = command.meter_id
        finished = self.clock()
        before, after = _instant(done.meter_time_before), _instant(done.meter_time_after)
        times = {"meter_time_before": before, "meter_time_after": after}
        if after is None:
            return self.failed(command, started, "read-back", f"meter {meter}: no clock read back", data=data, **times)
        # The meter's clock ran on between the write and the read-back: at most the session's length.
        target = command.clock if command.kind is CommandKind.CLOCK_SET and command.clock is not None else finished
        off = abs((after - target).total_seconds())
        data["clock_error_s"] = round(off, 3)
        if before is not None:
            data["drift_before_s"] = round((before - started).total_seconds(), 3)
        if off > (self._tolerance + (finished - started)).total_seconds():
            message = f"meter {meter}: clock read back {after.isoformat()}, {off:.1f} s from {target.isoformat()}"
            return self.failed(command, started, "read-back", message, data=data, **times)
        return CommandDone(self.result(command, CommandOutcome.SUCCEEDED, started, data=data, **times))

    @staticmethod
    def _readings(readings: list[Reading]) -> dict[str, object]:
        out: dict[str, object] = {}
        for r in readings[:_DATA_ENTRIES]:
            out[r.quantity[:64]] = data_value(r.value)
        return out

    async def _read(self, command: MeterCommand, started: datetime) -> CommandDone:
        """An on-demand read: the job path's session, its readings and events, and the command's result."""
        options = dict(command.options)
        purposes = [p.strip() for p in options.pop("purposes", "billing").split(",") if p.strip()]
        # A job id per (command, meter, attempt): stable over a redelivery, apart from the other meters'.
        job_id = uuid.uuid5(_JOB_NAMESPACE, f"{command.command_id}/{command.meter_id}/{command.attempt}").hex
        try:
            job = ReadJob(
                job_id=job_id,
                meter_id=command.meter_id,
                link_id=command.link_id,
                protocol=command.protocol,
                url=command.url,
                profile=command.profile,
                options=options,
                purposes=purposes,
                attempt=command.attempt,
                issued_at=command.issued_at,
                deadline=command.expires_at,
            )
        except ValidationError as exc:
            return self.failed(command, started, "configuration", f"read command: {describe_validation_error(exc)}")
        outcome: JobOutcome = await self.reader.run(job)
        r = outcome.result
        if r.status is JobStatus.ERROR:
            return self.failed(command, started, r.error_kind or "internal", r.error_message or "read failed")
        data: dict[str, object] = {"readings_count": r.readings_count, "events_count": r.events_count}
        if r.meter_time is not None:
            data["meter_time"] = r.meter_time.isoformat()
        return CommandDone(
            self.result(command, CommandOutcome.SUCCEEDED, started, data=data), outcome.batch, outcome.events
        )

    @staticmethod
    def _log_internal(command: MeterCommand, exc: BaseException) -> None:
        # The type and where it was raised, not the message nor a traceback: an unexpected error
        # deep in a meter session must not carry key material into the logs.
        frames = traceback.extract_tb(exc.__traceback__)
        raised_at = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
        log.error(
            "driver failed unexpectedly on a command",
            extra={
                "meter_id": command.meter_id,
                "command_id": command.command_id,
                "kind": command.kind.value,
                "error": type(exc).__name__,
                "raised_at": raised_at,
            },
        )
