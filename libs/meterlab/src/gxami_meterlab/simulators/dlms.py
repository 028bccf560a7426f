"""A deterministic fleet of DLMS/COSEM meters on localhost TCP (wrapper or HDLC, LN referencing).

Every value is a pure function of ``(seed, meter index, instant)``, so tests compare what a
client read with :func:`expected_register` / :func:`expected_profile`. With
``authentication="high-gmac"`` each meter has its own keys and system title, derived from
``(seed, index)`` too (:func:`meter_security`; :func:`client_security` is the matching
client side), and speaks HLS-GMAC with every APDU ciphered to its management clients. A meter's "now" is
frozen when its association is accepted (whole seconds, UTC): the clock and every register
read in one association describe the same instant.

A secured meter records every (system title, invocation counter) pair a client sends it
(:class:`~gxami_meterlab.dlms.meter_security.MeterCounters`); :attr:`DlmsFleetSimulator.repeats`
lists the pairs seen twice (a reused GCM nonce), and leaving the simulator's ``async with``
raises :class:`NonceReuseError` if there is one (``fail_on_repeat``, on by default).

The household model: a daily power curve ``P(t) = base + a1·(1+cos ω(t-φ1))/2 +
a2·(1+cos 2ω(t-φ2))/2`` (evening peak plus morning/evening second harmonic), whose
closed-form integral is the import register in whole Wh, and a rooftop-solar export
``pv·sin(π(h-6)/12)`` between 06:00 and 18:00 UTC. Counters start at 2000-01-01 UTC.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import itertools
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Final

from gurux_dlms.enums import DataType

from gxami_meterlab.dlms.image_transfer import FirmwareFaults, ImageTransferState
from gxami_meterlab.dlms.meter_security import MeterCounters
from gxami_meterlab.dlms.notify import HanStyle, PushRegister, encode_push, han_body, push_body
from gxami_meterlab.dlms.programmable import ProgrammableObjects
from gxami_meterlab.dlms.server import (
    CosemMeterCore,
    DataSpec,
    DemandRegisterSpec,
    ExtendedRegisterSpec,
    ProfileSpec,
    RegisterSpec,
)
from gxami_meterlab.dlms.tariff_calendar import CalendarState
from gxcore.errors import ConfigurationError, GxError
from gxcore.protocols.dlms.ciphering import SecurityPolicy
from gxcore.protocols.dlms.obis import UNIT_CODES, apply_scaler, dotted, reduced
from gxcore.protocols.dlms.parameters import PASSWORD_HLS, Authentication, DlmsSecurity, Interface
from gxcore.secrets import Secret

EPOCH: Final = datetime(2000, 1, 1, tzinfo=UTC)
DAY: Final = 86_400
ROW_PERIOD: Final = 900
_OMEGA: Final = 2 * math.pi / DAY
_SUN_UP, _SUN_DOWN = 6 * 3600, 18 * 3600

IMPORT, EXPORT, POWER, VOLTAGE, CURRENT = (
    "1.0.1.8.0.255",
    "1.0.2.8.0.255",
    "1.0.1.7.0.255",
    "1.0.32.7.0.255",
    "1.0.31.7.0.255",
)
LOAD_PROFILE: Final = "1.0.99.1.0.255"
log = logging.getLogger(__name__)
REGISTERS: Final = (
    RegisterSpec(IMPORT, 0, UNIT_CODES["Wh"], DataType.UINT32),
    RegisterSpec(EXPORT, 0, UNIT_CODES["Wh"], DataType.UINT32),
    RegisterSpec(POWER, 0, UNIT_CODES["W"], DataType.UINT32),
    RegisterSpec(VOLTAGE, -1, UNIT_CODES["V"], DataType.UINT16),
    RegisterSpec(CURRENT, -2, UNIT_CODES["A"], DataType.UINT16),
)
MAXIMUM_DEMAND, AVERAGE_DEMAND = "1.0.1.6.0.255", "1.0.1.4.0.255"
EVENT_CODE, DEVICE_NAME, EVENT_LOG = "0.0.96.11.0.255", "0.0.42.0.0.255", "0.0.99.98.0.255"
ACTIVE_TARIFF: Final = "0.0.96.14.0.255"  # currently active tariff: a writable Data object
SERIAL_NUMBER: Final = "0.0.96.1.0.255"  # the device serial number, a visible-string (text)
DEFAULT_TARIFF: Final = 1
EVENT_LOG_ENTRIES: Final = 100
# IDIS standard event log codes the model produces.
POWER_DOWN, POWER_UP = 1, 2
OBJECTS: Final = (
    ExtendedRegisterSpec(MAXIMUM_DEMAND, 0, UNIT_CODES["W"], DataType.UINT32),
    DemandRegisterSpec(AVERAGE_DEMAND, 0, UNIT_CODES["W"], ROW_PERIOD, DataType.UINT32),
    DataSpec(EVENT_CODE, DataType.UINT16),
    DataSpec(DEVICE_NAME, DataType.OCTET_STRING),
    DataSpec(SERIAL_NUMBER, DataType.STRING),
    DataSpec(ACTIVE_TARIFF, DataType.UINT8, writable=True),
)
PROFILES: Final = (ProfileSpec(LOAD_PROFILE, (IMPORT, EXPORT), ROW_PERIOD),)
EVENT_LOGS: Final = (ProfileSpec(EVENT_LOG, (EVENT_CODE,), 0, EVENT_LOG_ENTRIES),)
_SCALERS: Final = {r.obis: r.scaler for r in REGISTERS}
MAX_PROFILE_ROWS: Final = 31 * DAY // ROW_PERIOD
_EVENT_SCAN_DAYS: Final = 3650


@dataclass(frozen=True, slots=True)
class Household:
    """The per-meter constants of the model, derived from (seed, index)."""

    base: float
    evening: float
    evening_peak: int
    morning: float
    morning_peak: int
    pv: float
    import_start: int
    export_start: int
    grid_phase: float

    @classmethod
    def of(cls, seed: int, index: int) -> Household:
        digest = hashlib.blake2b(f"gxami-dlms:{seed}:{index}".encode(), digest_size=36).digest()
        u = [int.from_bytes(digest[i : i + 4], "big") / 2**32 for i in range(0, 36, 4)]
        return cls(
            base=150 + 300 * u[0],
            evening=300 + 1200 * u[1],
            evening_peak=int((18 + 3 * u[2]) * 3600),
            morning=100 + 500 * u[3],
            morning_peak=int((6.5 + 2 * u[4]) * 3600),
            pv=150 + 450 * u[5],
            import_start=10_000 + int(90_000 * u[6]),
            export_start=int(5_000 * u[7]),
            grid_phase=2 * math.pi * u[8],
        )

    def power(self, t: int) -> float:
        """Import power in W at ``t`` seconds since the epoch."""
        sod = t % DAY
        return (
            self.base
            + self.evening * (1 + math.cos(_OMEGA * (sod - self.evening_peak))) / 2
            + self.morning * (1 + math.cos(2 * _OMEGA * (sod - self.morning_peak))) / 2
        )

    def imported_wh(self, t: int) -> int:
        """Import register in whole Wh: the closed-form integral of :meth:`power` from the epoch."""
        if t <= 0:
            return self.import_start
        return self.import_start + math.floor(self.imported_joules(t) / 3600)

    def imported_joules(self, t: int) -> float:
        """Energy imported since the epoch, in J (exact, before rounding to whole Wh)."""
        sod = t % DAY
        mean = self.base + self.evening / 2 + self.morning / 2
        e = (
            self.evening
            / (2 * _OMEGA)
            * (math.sin(_OMEGA * (sod - self.evening_peak)) - math.sin(_OMEGA * -self.evening_peak))
        )
        m = (
            self.morning
            / (4 * _OMEGA)
            * (math.sin(2 * _OMEGA * (sod - self.morning_peak)) - math.sin(2 * _OMEGA * -self.morning_peak))
        )
        return mean * t + e + m

    def average_power(self, t0: int, t1: int) -> int:
        """Mean import power over ``[t0, t1]`` in whole W (0 for an empty interval)."""
        if t1 <= t0:
            return 0
        return round((self.imported_joules(t1) - self.imported_joules(t0)) / (t1 - t0))

    def maximum_demand(self, t: int) -> tuple[int, int]:
        """Today's highest 15-minute mean import power up to ``t``: (W, end of that period)."""
        midnight = t - t % DAY
        best, at = 0, midnight
        for end in range(midnight + ROW_PERIOD, t + 1, ROW_PERIOD):
            mean = self.average_power(end - ROW_PERIOD, end)
            if mean > best:
                best, at = mean, end
        return best, at

    def exported_wh(self, t: int) -> int:
        """Export register in whole Wh: solar half-sine each day between 06:00 and 18:00 UTC."""
        if t <= 0:
            return self.export_start
        days, sod = divmod(t, DAY)
        span = _SUN_DOWN - _SUN_UP
        daily = self.pv * span * 2 / math.pi
        if sod <= _SUN_UP:
            today = 0.0
        elif sod >= _SUN_DOWN:
            today = daily
        else:
            today = self.pv * span / math.pi * (1 - math.cos(math.pi * (sod - _SUN_UP) / span))
        return self.export_start + math.floor((days * daily + today) / 3600)

    def raw(self, obis: str, t: int) -> int:
        """Raw (pre-scaler) integer of register ``obis`` at ``t`` seconds since the epoch."""
        if obis == IMPORT:
            return self.imported_wh(t)
        if obis == EXPORT:
            return self.exported_wh(t)
        p = self.power(t)
        volts_x10 = round(10 * (230 + 4 * math.sin(_OMEGA * (t % DAY) + self.grid_phase) - 1.5 * p / 1000))
        if obis == POWER:
            return round(p)
        if obis == VOLTAGE:
            return volts_x10
        if obis == CURRENT:
            return round(100 * p / (volts_x10 / 10))
        raise KeyError(obis)


def _seconds(at: datetime) -> int:
    """Whole seconds since the epoch (floor), the model's time axis."""
    if at.tzinfo is None:
        raise ConfigurationError("simulator instants must be timezone-aware")
    return math.floor((at - EPOCH).total_seconds())


def expected_register(
    seed: int, meter_index: int, obis: str, at: datetime, *, connected: bool = True
) -> int | Decimal | float:
    """The value meter ``meter_index`` reports for ``obis`` at meter time ``at``, after its scaler.

    A remotely disconnected meter (``connected=False``) shows no power and no current;
    its energy registers follow the model regardless (a simplification).
    """
    key = dotted(obis)
    if not connected and key in (POWER, CURRENT):
        return 0.0
    return apply_scaler(Household.of(seed, meter_index).raw(key, _seconds(at)), _SCALERS[key])


def day_events(seed: int, index: int, day: int) -> list[tuple[int, int]]:
    """Events of one day (days since the epoch): on about one day in three a power cut,
    ``(seconds since the epoch, event code)`` for its start and its end."""
    digest = hashlib.blake2b(f"gxami-dlms-events:{seed}:{index}:{day}".encode(), digest_size=12).digest()
    u = [int.from_bytes(digest[i : i + 4], "big") / 2**32 for i in range(0, 12, 4)]
    if day < 0 or u[0] >= 0.35:
        return []
    down = day * DAY + int(u[1] * (DAY - 3600))
    return [(down, POWER_DOWN), (down + 30 + int(u[2] * 900), POWER_UP)]


def events_between(seed: int, index: int, start: int, end: int) -> list[tuple[int, int]]:
    """Every event with ``start <= t <= end`` (seconds since the epoch), oldest first."""
    out: list[tuple[int, int]] = []
    for day in range(max(start, 0) // DAY, end // DAY + 1):
        out.extend(e for e in day_events(seed, index, day) if start <= e[0] <= end)
    return out


def event_buffer(seed: int, index: int, now: int) -> list[tuple[int, int]]:
    """The event log at ``now``: its newest :data:`EVENT_LOG_ENTRIES` events, oldest first."""
    found: list[tuple[int, int]] = []
    day = now // DAY
    while len(found) < EVENT_LOG_ENTRIES and day >= 0 and now // DAY - day < _EVENT_SCAN_DAYS:
        found = [e for e in day_events(seed, index, day) if e[0] <= now] + found
        day -= 1
    return found[-EVENT_LOG_ENTRIES:]


def expected_events(seed: int, meter_index: int, start: datetime, end: datetime) -> list[tuple[datetime, int]]:
    """Event log rows in ``[start, end]`` a meter holds at ``end``: (time, event code)."""
    buffer = event_buffer(seed, meter_index, _seconds(end))
    first = _seconds(start)
    return [(EPOCH + timedelta(seconds=t), code) for t, code in buffer if t >= first]


def expected_maximum_demand(seed: int, meter_index: int, at: datetime) -> tuple[float, datetime]:
    """Extended register 1-0:1.6.0: today's highest 15-minute mean import power (W) and when it ended."""
    value, end = Household.of(seed, meter_index).maximum_demand(_seconds(at))
    return float(value), EPOCH + timedelta(seconds=end)


def expected_demand(seed: int, meter_index: int, at: datetime) -> tuple[float, float, datetime]:
    """Demand register 1-0:1.4.0: (current average W, last average W, start of the current period)."""
    house, t = Household.of(seed, meter_index), _seconds(at)
    start = t - t % ROW_PERIOD
    current, last = house.average_power(start, t), house.average_power(start - ROW_PERIOD, start)
    return float(current), float(last), EPOCH + timedelta(seconds=start)


def _row_times(start: datetime, end: datetime) -> list[int]:
    first = -(-_seconds(start) // ROW_PERIOD) * ROW_PERIOD
    last = _seconds(end) // ROW_PERIOD * ROW_PERIOD
    if last < first:
        return []
    return list(range(first, min(last, first + (MAX_PROFILE_ROWS - 1) * ROW_PERIOD) + 1, ROW_PERIOD))


def expected_profile(
    seed: int, meter_index: int, start: datetime, end: datetime, *, now: datetime | None = None
) -> list[tuple[datetime, dict[str, float]]]:
    """Load-profile rows in ``[start, min(end, now)]``: every 15-minute boundary, at most 31 days."""
    house = Household.of(seed, meter_index)
    stop = min(end, now) if now is not None else end
    return [
        (
            EPOCH + timedelta(seconds=t),
            {reduced(IMPORT): float(house.imported_wh(t)), reduced(EXPORT): float(house.exported_wh(t))},
        )
        for t in _row_times(start, stop)
    ]


CLIENT_SYSTEM_TITLE: Final = b"GXC\x00\x00\x00\x00\x01"


def meter_system_title(seed: int, index: int) -> bytes:
    """A simulated meter's system title: "GXA", the seed's low byte, the index (4 bytes)."""
    return b"GXA" + bytes([seed & 0xFF]) + index.to_bytes(4, "big")


def _key(seed: int, index: int, name: str) -> Secret:
    return Secret(hashlib.blake2b(f"gxami-dlms-key:{seed}:{index}:{name}".encode(), digest_size=16).digest())


def meter_security(
    seed: int, index: int, policy: SecurityPolicy = "authenticated-encrypted", *, peer: bytes | None = None
) -> DlmsSecurity:
    """Meter ``index``'s own security: its system title and its two keys (deterministic from the seed)."""
    return DlmsSecurity(meter_system_title(seed, index), _key(seed, index, "ek"), _key(seed, index, "ak"), policy, peer)


def client_security(
    seed: int, index: int, policy: SecurityPolicy = "authenticated-encrypted", *, title: bytes = CLIENT_SYSTEM_TITLE
) -> DlmsSecurity:
    """What a client needs to talk to meter ``index``: its keys, our title, the meter's title to expect."""
    return DlmsSecurity(
        title, _key(seed, index, "ek"), _key(seed, index, "ak"), policy, meter_system_title(seed, index)
    )


def meter_secrets(seed: int, index: int) -> dict[str, str]:
    """The secrets a collector needs for meter ``index`` of a high-gmac fleet: ``key``, ``auth_key`` and
    ``dedicated_key`` (what its general-ded-ciphered pushes use) as hex."""
    security = meter_security(seed, index)
    return {
        "key": security.block_cipher_key.reveal().hex(),
        "auth_key": security.authentication_key.reveal().hex(),
        "dedicated_key": dedicated_key(seed, index).reveal().hex(),
    }


def dedicated_key(seed: int, index: int) -> Secret:
    """Meter ``index``'s dedicated key: the one its general-ded-ciphered pushes are ciphered with."""
    return _key(seed, index, "dk")


def push_message(
    seed: int,
    index: int,
    at: datetime,
    *,
    policy: SecurityPolicy | None = None,
    invocation_counter: int = 1,
    dedicated_key: Secret | None = None,
    interface: Interface = "wrapper",
    han: HanStyle | None = None,
    stamped: bool = True,
) -> bytes:
    """The DataNotification meter ``index`` pushes at ``at``: its name, clock and registers.

    Ciphered (general-glo, or general-ded with ``dedicated_key``) with the meter's own keys
    when ``policy`` is given; the values equal :func:`expected_register` at ``at``. ``han``:
    a HAN-port list over HDLC instead (see :func:`~gxami_meterlab.dlms.notify.han_body`; the
    ``han-<style>`` profile reads it). ``stamped`` False: no date-time in the notification
    header (nor a clock element), so the receiver dates it.
    """
    house, t = Household.of(seed, index), _seconds(at)
    registers = [PushRegister(r.obis, house.raw(r.obis, t), r.data_type, r.scaler, r.unit) for r in REGISTERS]
    name = meter_id(seed, index).encode()
    if han is not None:
        body = han_body(registers, serial=name, style=han, clock=at.replace(microsecond=0) if stamped else None)
        interface = "hdlc"
    else:
        body = push_body(registers, name=name, clock=at.replace(microsecond=0) if stamped else None)
    return encode_push(
        body,
        at=at.replace(microsecond=0) if stamped else None,
        security=meter_security(seed, index, policy) if policy is not None else None,
        invocation_counter=invocation_counter,
        dedicated_key=dedicated_key,
        interface=interface,
    )


@dataclass(frozen=True, slots=True)
class ExecutedCommand:
    """One state change a simulated meter made on a client's request (or its button): the meter's own log.

    ``action`` is ``remote-disconnect``, ``remote-reconnect`` (class 70 methods 1 and 2),
    ``clock-set`` (class 8 attribute 2 written), ``clock-shift`` (class 8 method 6, shift_time),
    ``set`` (a Data value written) or ``button``;
    ``detail`` what it changed to; ``at`` the simulator's (true) clock when it did.
    """

    at: datetime
    action: str
    detail: str = ""


@dataclass(slots=True)
class MeterState:
    """What a simulated meter remembers across associations: clock offset, supply switch, counters.

    ``control_mode`` is the disconnect control's (Blue Book class 70): 1, remote reconnect
    closes the relay; 2, it arms the meter (ready-for-reconnection, ``armed``) and the
    customer's button (:meth:`press_button`) closes it. ``data`` holds written Data values.
    ``clock_offset`` is how far the meter's clock is from the true one (a drifted meter starts
    with one, see ``DlmsFleetSimulator(clock_offset=...)``; a clock write resets it).
    ``executed`` logs every command the meter carried out, oldest first (:class:`ExecutedCommand`),
    so a test can prove one never reached it.
    """

    clock_offset: timedelta = timedelta(0)
    connected: bool = True
    counters: MeterCounters = field(default_factory=MeterCounters)
    control_mode: int = 1
    armed: bool = False
    data: dict[str, int] = field(default_factory=dict)
    executed: list[ExecutedCommand] = field(default_factory=list)
    # Image transfer and tariff calendars (see gxami_meterlab.dlms.programmable): kept across connections.
    firmware: ImageTransferState = field(default_factory=ImageTransferState)
    calendar: CalendarState = field(default_factory=CalendarState)

    def press_button(self) -> None:
        """Manual reconnection: an armed meter closes its relay; otherwise nothing happens."""
        if self.armed:
            self.connected, self.armed = True, False
            self.executed.append(ExecutedCommand(utc_now(), "button", "connected"))


class _MeterValues:
    """The MeterModel one simulated meter hands its protocol core."""

    def __init__(self, seed: int, index: int, state: MeterState | None = None) -> None:
        self.seed, self.index = seed, index
        self.house = Household.of(seed, index)
        self.state = state if state is not None else MeterState()

    def extended(self, obis: str, at: datetime) -> tuple[int, int, datetime]:
        value, end = self.house.maximum_demand(_seconds(at))
        return value, 0, EPOCH + timedelta(seconds=end)

    def demand(self, obis: str, at: datetime) -> tuple[int, int, int, datetime, datetime]:
        current, last, started = expected_demand(self.seed, self.index, at)
        return int(current), int(last), 0, started, started

    def data_value(self, obis: str, at: datetime) -> int | bytes | str:
        if obis == DEVICE_NAME:
            return meter_id(self.seed, self.index).encode()
        if obis == SERIAL_NUMBER:
            return serial_number(self.seed, self.index)  # a visible-string: gurux encodes str
        if obis == ACTIVE_TARIFF:
            return self.state.data.get(obis, DEFAULT_TARIFF)
        buffer = event_buffer(self.seed, self.index, _seconds(at))
        return buffer[-1][1] if buffer else 0

    def profile_entries(
        self, obis: str, first: int, last: int, now: datetime
    ) -> tuple[Sequence[tuple[datetime, Sequence[int]]], int]:
        if obis == EVENT_LOG:
            events = event_buffer(self.seed, self.index, _seconds(now))
            chosen = events[first - 1 : last or None]
            return [(EPOCH + timedelta(seconds=t), (code,)) for t, code in chosen], len(events)
        newest = _seconds(now) // ROW_PERIOD * ROW_PERIOD
        oldest = max(newest - (MAX_PROFILE_ROWS - 1) * ROW_PERIOD, 0)
        in_use = (newest - oldest) // ROW_PERIOD + 1
        stop = min(last or in_use, in_use)
        times = [oldest + (i - 1) * ROW_PERIOD for i in range(first, stop + 1)]
        return [(EPOCH + timedelta(seconds=t), self._energies(t)) for t in times], in_use

    def _energies(self, t: int) -> tuple[int, int]:
        return self.house.imported_wh(t), self.house.exported_wh(t)

    def register_raw(self, obis: str, at: datetime) -> int:
        if not self.state.connected and obis in (POWER, CURRENT):
            return 0
        return self.house.raw(obis, _seconds(at))

    def meter_time(self, now: datetime) -> datetime:
        return now + self.state.clock_offset

    def set_clock(self, meter_time: datetime, now: datetime) -> None:
        self.state.clock_offset = meter_time - now
        self.state.executed.append(ExecutedCommand(now, "clock-set", meter_time.isoformat()))

    def shift_clock(self, by: timedelta, now: datetime) -> None:
        """shift_time: the clock moves by ``by`` (the server refuses more than 900 s either way)."""
        self.state.clock_offset += by
        self.state.executed.append(ExecutedCommand(now, "clock-shift", f"{by.total_seconds():+g}"))

    def set_data_value(self, obis: str, value: int) -> None:
        self.state.data[obis] = value
        self.state.executed.append(ExecutedCommand(utc_now(), "set", f"{obis}={value}"))

    def supply(self) -> tuple[bool, int]:
        state = self.state
        return state.connected, 1 if state.connected else 2 if state.armed else 0

    def control_mode(self) -> int:
        return self.state.control_mode

    def switch_supply(self, connect: bool) -> None:
        state = self.state
        state.executed.append(ExecutedCommand(utc_now(), "remote-reconnect" if connect else "remote-disconnect"))
        if not connect:
            state.connected = state.armed = False
        elif state.connected:
            return
        elif state.control_mode in (2, 4):
            state.armed = True  # remote reconnect arms; the customer closes the relay
        else:
            state.connected, state.armed = True, False

    def profile_rows(
        self, obis: str, start: datetime, end: datetime, now: datetime
    ) -> Sequence[tuple[datetime, Sequence[int]]]:
        if obis == EVENT_LOG:
            return [(at, (code,)) for at, code in expected_events(self.seed, self.index, start, min(end, now))]
        return [(EPOCH + timedelta(seconds=t), self._energies(t)) for t in _row_times(start, min(end, now))]


@dataclass(frozen=True, slots=True)
class SimulatedMeter:
    """One meter of the fleet: its index, id (serial) and TCP port."""

    index: int
    meter_id: str
    port: int


def meter_id(seed: int, index: int) -> str:
    """Deterministic meter id / serial number."""
    return f"SIM{seed:03d}{index:05d}"


def serial_number(seed: int, index: int) -> str:
    """Deterministic serial number (0-0:96.1.0), digits only, as on a meter's name plate."""
    return f"{seed:04d}{index:06d}"


def utc_now() -> datetime:
    return datetime.now(UTC)


class NonceReuseError(AssertionError):
    """A client sent one (system title, invocation counter) pair twice to a simulated meter: a test failure."""


@dataclass(frozen=True, slots=True)
class RepeatedNonce:
    """One GCM nonce a simulated meter received twice."""

    meter: int
    system_title: bytes
    invocation_counter: int


class DlmsFleetSimulator:
    """N simulated DLMS meters, one TCP port each; ``silent_meters`` accept but never answer,
    ``refusing_meters`` close every connection at once. Both sets may be changed while running."""

    def __init__(
        self,
        meters: int,
        *,
        seed: int = 1,
        host: str = "127.0.0.1",
        base_port: int = 0,
        authentication: Authentication = "none",
        password: str | Secret | None = None,
        clock: Callable[[], datetime] = utc_now,
        silent_meters: set[int] | None = None,
        refusing_meters: set[int] | None = None,
        max_pdu: int = 1024,
        interface: Interface = "wrapper",
        security_policy: SecurityPolicy = "authenticated-encrypted",
        fail_on_repeat: bool = True,
        clock_offset: timedelta = timedelta(0),
        firmware_faults: FirmwareFaults | None = None,
    ) -> None:
        if meters < 0 or not 0 <= base_port <= 65535 or (base_port and base_port + meters > 65536):
            raise ConfigurationError("simulator needs meters >= 0 and ports within 0..65535")
        if (authentication == "low" or authentication in PASSWORD_HLS) and not password:
            raise ConfigurationError(f"a simulator with {authentication} authentication needs a password")
        self.count = meters
        self.seed = seed
        self.host = host
        self.base_port = base_port
        self.authentication: Authentication = authentication
        self.password = Secret(password) if isinstance(password, str) else password
        self.clock = clock
        self.silent_meters = silent_meters if silent_meters is not None else set()
        self.refusing_meters = refusing_meters if refusing_meters is not None else set()
        self.max_pdu = max_pdu
        self.interface: Interface = interface
        self.security_policy: SecurityPolicy = security_policy
        self.fail_on_repeat = fail_on_repeat
        self.meters: list[SimulatedMeter] = []
        # Per-meter memory (clock offset, supply switch); survives connections, not restarts.
        # ``clock_offset``: every meter's clock starts that far off (a drifted fleet, for clock-sync tests).
        self.states = [MeterState(clock_offset=clock_offset) for _ in range(meters)]
        self._seed_firmware(firmware_faults)
        self._servers: list[asyncio.Server] = []
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        # Every connection a meter accepted: opened/closed as steps of one counter, so that tests can
        # tell which sessions overlapped without comparing clock readings.
        self.sessions: list[SessionRecord] = []
        self._steps = itertools.count()

    def _seed_firmware(self, faults: FirmwareFaults | None) -> None:
        """Each meter's image transfer faults (a copy of ``faults``) drawn from its own seeded generator."""
        for index, state in enumerate(self.states):
            # Simulated faults must repeat from the seed: not a secret.
            state.firmware.rng = random.Random(f"gxami-firmware:{self.seed}:{index}")  # noqa: S311
            if faults is not None:
                state.firmware.faults = dataclasses.replace(faults)

    async def start(self) -> None:
        """Listen for every meter; with ``base_port`` 0 each gets a free port."""
        try:
            for index in range(self.count):
                port = self.base_port + index if self.base_port else 0
                server = await asyncio.start_server(functools.partial(self._serve, index), self.host, port)
                self._servers.append(server)
                bound = server.sockets[0].getsockname()[1]
                self.meters.append(SimulatedMeter(index, meter_id(self.seed, index), int(bound)))
        except OSError as exc:
            await self.stop()
            raise ConfigurationError(f"simulator cannot listen on {self.host}: {exc.strerror}") from None

    async def stop(self) -> None:
        """Stop listening and drop every open connection."""
        for server in self._servers:
            server.close()
        # Abort rather than cancel: a cancelled handler task trips asyncio's stream callback.
        for writer in self._connections.values():
            writer.transport.abort()
        await asyncio.gather(*self._connections, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        self.meters = []

    async def __aenter__(self) -> DlmsFleetSimulator:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        await self.stop()
        if self.fail_on_repeat and exc_type is None and self.repeats:
            shown = ", ".join(f"meter {r.meter}: {r.system_title.hex()}/{r.invocation_counter}" for r in self.repeats)
            raise NonceReuseError(f"invocation counters used twice (GCM nonce reuse): {shown}")

    @property
    def repeats(self) -> list[RepeatedNonce]:
        """Every (system title, invocation counter) pair some meter received twice, in meter order."""
        return [
            RepeatedNonce(index, title, counter)
            for index, state in enumerate(self.states)
            for title, counter in state.counters.repeats
        ]

    def endpoints(self) -> list[tuple[str, int]]:
        """``(meter_id, port)`` of every meter, in index order."""
        return [(m.meter_id, m.port) for m in self.meters]

    async def _serve(self, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections[task] = writer
        record = SessionRecord(index, self.meters[index].port if index < len(self.meters) else 0, next(self._steps))
        self.sessions.append(record)
        try:
            if index in self.refusing_meters:
                return
            core = CosemMeterCore(
                _MeterValues(self.seed, index, self.states[index]),
                REGISTERS,
                PROFILES + EVENT_LOGS,
                objects=OBJECTS,
                authentication=self.authentication,
                password=self.password,
                max_pdu=self.max_pdu,
                interface=self.interface,
                security=(
                    meter_security(self.seed, index, self.security_policy)
                    if self.authentication == "high-gmac"
                    else None
                ),
                counters=self.states[index].counters,
                system_title=meter_system_title(self.seed, index),
                programs=ProgrammableObjects(self.states[index].firmware, self.states[index].calendar),
            )
            firmware = self.states[index].firmware
            firmware.connection_opened()
            while data := await reader.read(65536):
                if index in self.silent_meters:
                    continue  # swallow requests: the client must time out
                try:
                    out = core.receive_data(data, self.clock())
                except GxError:
                    return  # this connection's stream is out of step; the listener lives on
                if firmware.drop_now:
                    writer.transport.abort()  # the meter drops the link mid-transfer, before its reply
                    return
                if out:
                    writer.write(out)
                    await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            record.closed_step = next(self._steps)
            if task is not None:
                self._connections.pop(task, None)
            writer.close()

    def max_concurrent(self, indexes: Sequence[int] | None = None) -> int:
        """The most sessions that were open at once, over the meters ``indexes`` (all: None)."""
        chosen = [r for r in self.sessions if indexes is None or r.index in indexes]
        events = sorted(
            [(r.opened_step, 1) for r in chosen] + [(r.closed_step, -1) for r in chosen if r.closed_step is not None]
        )
        most = now = 0
        for _, delta in events:
            now += delta
            most = max(most, now)
        return most


@dataclass(slots=True)
class SessionRecord:
    """One connection to a simulated meter: which meter, and when it opened and closed (steps of one counter)."""

    index: int
    port: int
    opened_step: int
    closed_step: int | None = None


async def run_simulator(
    meters: int,
    seed: int,
    host: str,
    base_port: int,
    authentication: Authentication,
    password: str | None,
    stop: asyncio.Event,
    *,
    interface: Interface = "wrapper",
    security_policy: SecurityPolicy = "authenticated-encrypted",
    on_started: Callable[[list[SimulatedMeter]], None] | None = None,
    firmware_faults: FirmwareFaults | None = None,
) -> None:
    """Serve a fleet until ``stop`` is set; ``on_started`` gets the meters once they listen."""
    async with DlmsFleetSimulator(
        meters,
        seed=seed,
        host=host,
        base_port=base_port,
        authentication=authentication,
        password=password,
        interface=interface,
        security_policy=security_policy,
        fail_on_repeat=False,  # a long-running dev simulator; tests use the class directly
        firmware_faults=firmware_faults,
    ) as fleet:
        if on_started is not None:
            on_started(list(fleet.meters))
        await stop.wait()


@dataclass(frozen=True, slots=True)
class SentPush:
    """One push the simulator sent: which meter, the instant it carries, its counter and where it went."""

    meter_id: str
    index: int
    at: datetime
    invocation_counter: int
    target: str


async def _send_frame(host: str, port: int, frame: bytes, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        _, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(frame)
            await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def run_pusher(
    meters: int,
    seed: int,
    targets: Sequence[tuple[str, int]],
    every_s: float,
    stop: asyncio.Event,
    *,
    ciphered: bool = True,
    policy: SecurityPolicy = "authenticated-encrypted",
    pushes: int = 0,
    on_sent: Callable[[SentPush], None] | None = None,
    timeout: float = 10.0,
    interface: Interface = "wrapper",
    dedicated: bool = False,
    han: HanStyle | None = None,
) -> None:
    """Meters that push their registers every ``every_s`` (staggered), to the targets in turn.

    ``interface`` frames them (wrapper or HDLC); ``dedicated`` ciphers them general-ded with
    each meter's :func:`dedicated_key`; ``han`` sends HAN-port lists (HDLC) instead.

    Push ``n`` of meter ``i`` goes to ``targets[(i + n) % len(targets)]``; ``pushes`` > 0 stops each
    meter after that many. The invocation counter is the Unix time in seconds (strictly rising
    per meter), so a restarted simulator never repeats one; each push carries a new whole second.
    A target that is down costs that push only (reported as not sent).
    """
    if not targets:
        raise ConfigurationError("push simulator: no target to push to")

    async def meter(index: int) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every_s * index / max(meters, 1))
        last_counter, last_at, n = 0, None, 0
        while not stop.is_set() and (pushes <= 0 or n < pushes):
            now = utc_now().replace(microsecond=0)
            at = now if last_at is None or now > last_at else last_at + timedelta(seconds=1)
            counter = max(last_counter + 1, int(time.time()))
            host, port = targets[(index + n) % len(targets)]
            frame = push_message(
                seed,
                index,
                at,
                policy=policy if ciphered else None,
                invocation_counter=counter,
                dedicated_key=dedicated_key(seed, index) if ciphered and dedicated else None,
                interface=interface,
                han=han,
            )
            try:
                await _send_frame(host, port, frame, timeout)
            except (OSError, TimeoutError) as exc:
                log.warning("push of meter %s to %s:%s not sent: %s", meter_id(seed, index), host, port, exc)
            else:
                if on_sent is not None:
                    on_sent(SentPush(meter_id(seed, index), index, at, counter, f"{host}:{port}"))
            last_counter, last_at, n = counter, at, n + 1
            if pushes > 0 and n >= pushes:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=every_s)

    await asyncio.gather(*(meter(i) for i in range(meters)))
