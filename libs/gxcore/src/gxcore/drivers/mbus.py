"""The wired M-Bus protocol driver, and the record-to-point rule it shares with wireless M-Bus.

Media: ``tcp://gateway:port`` (an M-Bus TCP gateway: raw frames both ways) or
``serial:///dev/ttyUSB0`` (a level converter; 2400 8E1 unless the URL query says
``baud=``, ``parity=`` ...). The meter is addressed by ``target.options["secondary_address"]``
(16 hex characters, ``F`` wildcards allowed when they match one meter), else by
``target.options["primary_address"]``, else by the URL query ``address=``, else by the
profile parameter ``primary_address`` (0..250).

Point ``source`` rule (M-Bus and wM-Bus):

* ``6-0:1.0.0``: the canonical quantity of the record exactly as the decoder names it
  (:mod:`gxcore.protocols.mbus.quantities`: A from the medium, B the subunit, E the tariff, and
  ``*F`` for storage F, e.g. ``6-0:1.0.0*1`` last month's heat energy);
* ``record:<description>``: a record without a canonical name, by its description
  (``record:On time``, ``record:Power`` with ``function: maximum``), narrowed by the
  point options ``storage``, ``tariff``, ``subunit`` (default 0) and ``function``
  (default ``instantaneous``).

The first numeric, error-free record that matches gives the value; units follow
:mod:`gxcore.units` (the record's unit is converted to ``meter_unit``, default the point's
unit, then scale and offset apply). A point the meter does not send yields no reading;
a reply with none of the selected points is a ProtocolError. Readings are stamped
with the time of the read; ``meter_time`` is the meter's clock record, read in the
profile parameter ``timezone`` (IANA name, default UTC).

Profile parameters: ``primary_address``, ``timeout`` (caps the per-exchange timeout),
``retries`` (0..5, default 2), ``reset_before_read`` (default true), ``max_telegrams``
(1..64, default 16), ``timezone``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from decimal import Decimal
from typing import ClassVar
from weakref import WeakKeyDictionary
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gxcore.drivers.api import BaseDriver, MeterTarget, ReadRequest, ReadResult
from gxcore.drivers.streams import LineDefaults, MeterStream, open_stream
from gxcore.errors import ConfigurationError, ProtocolError
from gxcore.profiles.model import DeviceProfile, OptionValue, ProfilePoint
from gxcore.protocols.mbus.frame import MAX_PRIMARY, SecondaryAddress
from gxcore.protocols.mbus.master import Failed, MasterConfig, MBusMaster, ReadComplete
from gxcore.protocols.mbus.records import FUNCTIONS, MBusRecord
from gxcore.protocols.mbus.telegram import MBusTelegram
from gxcore.readings import Reading
from gxcore.units import meter_unit, point_value

PROTOCOL = "mbus"
RECORD_PREFIX = "record:"
MBUS_SERIAL = LineDefaults(baud=2400, bytesize=8, parity="E", stopbits=1)
_CANONICAL_SOURCE = re.compile(r"\d{1,3}-\d{1,3}:\d{1,3}\.\d{1,3}\.\d{1,3}(\*\d{1,4})?")
_RECORD_OPTIONS = frozenset({"storage", "tariff", "subunit", "function", "meter_unit"})
_PARAMETERS = frozenset({"primary_address", "timeout", "retries", "reset_before_read", "max_telegrams", "timezone"})


def _utc_now() -> datetime:
    return datetime.now(UTC)


# -- the record-to-point rule (shared with gxcore.drivers.wmbus) ------------------------


@dataclass(frozen=True, slots=True)
class RecordPoint:
    """A profile point resolved to the M-Bus record that carries it."""

    point: ProfilePoint
    quantity: str | None  # canonical record quantity, or None for a ``record:`` source
    description: str = ""
    storage: int = 0
    tariff: int = 0
    subunit: int = 0
    function: str = "instantaneous"

    def matches(self, record: MBusRecord) -> bool:
        if record.error is not None or isinstance(record.value, bool) or not isinstance(record.value, int | Decimal):
            return False
        if self.quantity is not None:
            return record.quantity == self.quantity
        return (record.description, record.storage, record.tariff, record.subunit, record.function) == (
            self.description, self.storage, self.tariff, self.subunit, self.function,
        )  # fmt: skip


def _small_int(point: ProfilePoint, key: str, top: int) -> int:
    value = point.options.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
        raise ConfigurationError(f"point {point.quantity}: option {key} must be an integer 0..{top}, not {value!r}")
    return value


def record_point(point: ProfilePoint) -> RecordPoint:
    """Resolve one point's source and options (see the module doc); ConfigurationError names the point."""
    meter_unit(point)  # checks the option's type
    unknown = set(point.options) - _RECORD_OPTIONS
    if unknown:
        raise ConfigurationError(f"point {point.quantity}: unknown M-Bus options {sorted(unknown)}")
    source = point.source.strip()
    if source.startswith(RECORD_PREFIX):
        description = source[len(RECORD_PREFIX) :].strip()
        function = point.options.get("function", "instantaneous")
        if not description or function not in FUNCTIONS:
            raise ConfigurationError(
                f"point {point.quantity}: 'record:' needs a description and function one of {list(FUNCTIONS)}"
            )
        return RecordPoint(
            point, None, description, _small_int(point, "storage", 2**41 - 1), _small_int(point, "tariff", 2**20 - 1),
            _small_int(point, "subunit", 2**10 - 1), str(function),
        )  # fmt: skip
    if not _CANONICAL_SOURCE.fullmatch(source):
        raise ConfigurationError(
            f"point {point.quantity}: M-Bus source {point.source!r} is neither a record quantity such as"
            " '6-0:1.0.0' / '6-0:1.0.0*1' nor 'record:<description>'"
        )
    placed = set(point.options) & {"storage", "tariff", "subunit", "function"}
    if placed:
        raise ConfigurationError(
            f"point {point.quantity}: {sorted(placed)} are part of a quantity source; use 'record:' to set them"
        )
    return RecordPoint(point, source)


def record_points(points: Iterable[ProfilePoint]) -> list[RecordPoint]:
    return [record_point(p) for p in points]


def readings_from(
    telegrams: Iterable[MBusTelegram], points: list[RecordPoint], at: datetime, *, meter_id: str | None = None
) -> list[Reading]:
    """One reading per point that a record of ``telegrams`` carries (first match wins)."""
    records = [(t, r) for t in telegrams for r in t.records]
    readings: list[Reading] = []
    for rp in points:
        found = next(((t, r) for t, r in records if rp.matches(r)), None)
        if found is None:
            continue
        telegram, record = found
        assert isinstance(record.value, int | Decimal)  # matches() admits numbers only
        value = point_value(rp.point, record.value, record.unit or None)
        extra: dict[str, str | int] = {"source": rp.point.source, "meter": telegram.id}
        readings.append(Reading(rp.point.quantity, value, rp.point.unit, at, telegram.status, extra))
    if points and not readings:
        wanted = ", ".join(sorted({rp.point.source for rp in points}))
        raise ProtocolError(f"the meter sent none of the profile's records ({wanted})", meter_id=meter_id)
    return readings


def meter_timezone(profile: DeviceProfile) -> tzinfo:
    """The zone of the meter's clock: profile parameter ``timezone`` (IANA name), default UTC."""
    name = profile.parameters.get("timezone", "UTC")
    if not isinstance(name, str):
        raise ConfigurationError(f"profile {profile.name}: timezone must be an IANA zone name")
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(f"profile {profile.name}: unknown timezone {name!r}") from None


def meter_time_of(telegrams: Iterable[MBusTelegram], zone: tzinfo) -> datetime | None:
    """The first clock record of ``telegrams``, as aware UTC."""
    for telegram in telegrams:
        local = telegram.meter_time()
        if local is not None:
            return local.replace(tzinfo=zone).astimezone(UTC)
    return None


def exchange_timeout(timeout: float, parameters: dict[str, OptionValue], profile_name: str) -> float:
    """The caller's per-exchange timeout, capped by the profile parameter ``timeout``."""
    if not timeout > 0:
        raise ConfigurationError(f"timeout must be positive, not {timeout}")
    cap = parameters.get("timeout")
    if cap is None:
        return timeout
    if isinstance(cap, bool) or not isinstance(cap, int | float) or not 0 < cap <= 600:
        raise ConfigurationError(f"profile {profile_name}: timeout must be seconds in (0, 600]")
    return min(timeout, float(cap))


# -- wired M-Bus ------------------------------------------------------------------------


def _int_parameter(profile: DeviceProfile, key: str, default: int, low: int, high: int) -> int:
    value = profile.parameters.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigurationError(f"profile {profile.name}: {key} must be an integer {low}..{high}, not {value!r}")
    return value


def master_config(profile: DeviceProfile, reply_timeout: float) -> MasterConfig:
    """The master's settings from the profile parameters (checked)."""
    reset = profile.parameters.get("reset_before_read", True)
    if not isinstance(reset, bool):
        raise ConfigurationError(f"profile {profile.name}: reset_before_read must be true or false")
    return MasterConfig(
        reply_timeout=reply_timeout,
        retries=_int_parameter(profile, "retries", 2, 0, 5),
        max_telegrams=_int_parameter(profile, "max_telegrams", 16, 1, 64),
        reset_before_read=reset,
    )


def validate_mbus_profile(profile: DeviceProfile) -> None:
    """Raise ConfigurationError unless the profile's points and parameters follow the module doc."""
    if profile.protocol != PROTOCOL:
        raise ConfigurationError(f"profile {profile.name}: protocol is {profile.protocol!r}, not {PROTOCOL!r}")
    unknown = set(profile.parameters) - _PARAMETERS
    if unknown:
        raise ConfigurationError(f"profile {profile.name}: unknown M-Bus parameters {sorted(unknown)}")
    if "primary_address" in profile.parameters:
        _primary(profile.parameters["primary_address"], f"profile {profile.name}")
    meter_timezone(profile)
    exchange_timeout(1.0, profile.parameters, profile.name)
    master_config(profile, 1.0)
    record_points(profile.points)


def _primary(value: object, where: str) -> int:
    try:
        address = int(str(value), 0)
    except ValueError:
        raise ConfigurationError(f"{where}: primary address {value!r} is not a number") from None
    if not 0 <= address <= MAX_PRIMARY:
        raise ConfigurationError(f"{where}: primary address {address} outside 0..{MAX_PRIMARY}")
    return address


def meter_address(target: MeterTarget, profile: DeviceProfile) -> int | SecondaryAddress:
    """Secondary address, else primary from options, URL query ``address``, profile (module doc)."""
    where = f"meter {target.meter_id}"
    secondary = target.options.get("secondary_address")
    if secondary is not None:
        try:
            return SecondaryAddress.parse(secondary)
        except ValueError:
            raise ConfigurationError(f"{where}: secondary_address must be 16 hex characters (F = wildcard)") from None
    if "primary_address" in target.options:
        return _primary(target.options["primary_address"], where)
    query = target.endpoint().query
    if "address" in query:
        return _primary(query["address"], f"{where} URL")
    if "primary_address" in profile.parameters:
        return _primary(profile.parameters["primary_address"], f"profile {profile.name}")
    raise ConfigurationError(f"{where}: give options primary_address or secondary_address, or the URL query address=")


async def run_master(master: MBusMaster, stream: MeterStream, *, write_timeout: float) -> ReadComplete:
    """Drive a started ``master`` over ``stream`` until its operation ends; raise its error on failure."""
    clock = asyncio.get_running_loop().time
    while True:
        out = master.data_to_send()
        if out:
            await stream.write(out, timeout=write_timeout)
        event = master.next_event()
        if isinstance(event, ReadComplete):
            return event
        if isinstance(event, Failed):
            raise event.error
        if event is not None:
            raise ProtocolError(f"unexpected master event {type(event).__name__}", meter_id=stream.meter_id)
        deadline = master.next_deadline()
        if deadline is None:
            raise ProtocolError(f"M-Bus master stalled in state {master.state.value}", meter_id=stream.meter_id)
        data = await stream.read_some(timeout=deadline - clock())
        if data is None:
            master.handle_timeout(clock())
        else:
            master.receive_data(data, clock())


class MBusDriver(BaseDriver):
    """Reads wired M-Bus meters described by device profiles (protocol ``mbus``)."""

    name: ClassVar[str] = PROTOCOL

    def __init__(self, *, clock: Callable[[], datetime] = _utc_now) -> None:
        self._clock = clock
        # One master per bus: reads through one gateway or port wait for each other.
        self._locks: WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = WeakKeyDictionary()

    def validate_profile(self, profile: DeviceProfile) -> None:
        validate_mbus_profile(profile)

    def _bus_lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(asyncio.get_running_loop(), {}).setdefault(key, asyncio.Lock())

    async def read(
        self, target: MeterTarget, profile: DeviceProfile, request: ReadRequest, *, timeout: float
    ) -> ReadResult:
        validate_mbus_profile(profile)
        points = record_points(profile.points_for(request.purposes))
        address = meter_address(target, profile)
        reply_timeout = exchange_timeout(timeout, profile.parameters, profile.name)
        config = master_config(profile, reply_timeout)
        endpoint = target.endpoint()
        if not points:
            return ReadResult(readings=[])
        async with self._bus_lock(f"{endpoint.scheme}://{endpoint.host}:{endpoint.port}{endpoint.path}"):
            stream = await open_stream(
                endpoint, timeout=reply_timeout, meter_id=target.meter_id, serial_defaults=MBUS_SERIAL
            )
            try:
                master = MBusMaster(config)
                now = asyncio.get_running_loop().time()
                if isinstance(address, SecondaryAddress):
                    master.read_secondary(address, now)
                else:
                    master.read_primary(address, now)
                complete = await run_master(master, stream, write_timeout=reply_timeout)
            finally:
                await stream.close()
        at = self._clock()
        readings = readings_from(complete.telegrams, points, at, meter_id=target.meter_id)
        return ReadResult(readings=readings, meter_time=meter_time_of(complete.telegrams, meter_timezone(profile)))
