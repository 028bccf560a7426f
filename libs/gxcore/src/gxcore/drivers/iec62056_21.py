"""The IEC 62056-21 protocol driver: one readout (modes A, B, C) mapped to profile points.

Media: ``tcp://bridge:port`` (an optical probe or RS-485 line behind a ser2net-style
bridge; speed changes are the bridge's business) or ``serial:///dev/ttyUSB0`` (300 7E1
to start, as the standard says; the session switches speed as the meter offers, up to
the profile parameter ``max_baud``). The device address of the sign-on request
``/?<address>!`` comes from ``target.options["device_address"]``, else the URL query
``address``, else the profile parameter ``device_address``, else none (any meter).

Point ``source`` rule: the data-set address as the readout writes it. A source without
``:`` is compared in reduced form, so ``1.8.0`` matches ``1.8.0`` and ``1-0:1.8.0*255``
alike; a source with ``:`` must match exactly. The point option ``index`` picks a further
value of one data set (``0`` default; e.g. ``1.6.0(1.234*kW)(24-01-15 12:30)`` has its
time folded into the value, so index 0 is the demand and its timestamp the time of it).
Only numeric values map; units follow :mod:`gxcore.units`. A reading is stamped with
its own time, else the meter clock (0.9.1 + 0.9.2 read in the profile parameter
``timezone``), else the time of receipt; ``meter_time`` is the meter clock. A point the
readout lacks yields no reading; a readout with none of them is a ProtocolError.

Every wait (connect, identification, readout, each pause between characters) is bounded
by ``timeout`` capped by the profile parameter ``timeout``; readouts are bounded in size.

``read(..., medium=...)`` reads over a medium that is already open (and leaves it open),
e.g. one end of :func:`gxcore.media.memory_pair` (``serial=True`` to see the speed
changes). Speed changes go to the medium when it can set its line (serial ports), once
the bytes before them have left. The constructor's ``on_traffic`` hook goes to every
medium the driver opens.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import ClassVar

from gxcore.drivers.api import MeterTarget, PointProblem, ReadRequest, ReadResult, nothing_selected
from gxcore.drivers.common import FieldDriver, LineDefaults, exchange_timeout, meter_timezone, read_medium
from gxcore.drivers.loop import drive
from gxcore.errors import ConfigurationError, GxError, ProtocolError
from gxcore.media import Medium
from gxcore.media.endpoint import Endpoint
from gxcore.profiles.model import DeviceProfile, ProfilePoint
from gxcore.protocols.iec62056_21.frames import MODE_C_BAUD, encode_request
from gxcore.protocols.iec62056_21.readout import Iec62056Readout, Iec62056Record
from gxcore.protocols.iec62056_21.session import Iec62056Session, SessionCore, SessionTimings
from gxcore.readings import Reading, exact_number
from gxcore.units import meter_unit, point_value

PROTOCOL = "iec62056-21"
IEC_SERIAL = LineDefaults(baud=300, bytesize=7, parity="E", stopbits=1)
_OPTIONS = frozenset({"index", "meter_unit"})
_PARAMETERS = frozenset({"device_address", "timeout", "timezone", "max_baud"})


def _reduced(address: str) -> str:
    return address.rsplit(":", maxsplit=1)[-1].split("*", maxsplit=1)[0].strip()


@dataclass(frozen=True, slots=True)
class DataSetPoint:
    """A profile point resolved to a data-set address and value index."""

    point: ProfilePoint
    address: str
    index: int

    def matches(self, record: Iec62056Record) -> bool:
        if record.index != self.index or not isinstance(record.value, Decimal):
            return False
        if ":" in self.address:
            return record.quantity == self.address
        return _reduced(record.quantity) == _reduced(self.address)


def data_set_point(point: ProfilePoint) -> DataSetPoint:
    """Resolve one point's source and options (module doc); ConfigurationError names the point."""
    meter_unit(point)
    unknown = set(point.options) - _OPTIONS
    if unknown:
        raise ConfigurationError(f"point {point.quantity}: unknown IEC 62056-21 options {sorted(unknown)}")
    index = point.options.get("index", 0)
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= 99:
        raise ConfigurationError(f"point {point.quantity}: option index must be an integer 0..99")
    address = point.source.strip()
    if not address or any(ch in address for ch in "()!/") or len(address) > 32:
        raise ConfigurationError(f"point {point.quantity}: {point.source!r} is not a data-set address such as 1.8.0")
    return DataSetPoint(point, address, index)


def _max_baud(profile: DeviceProfile) -> int:
    value = profile.parameters.get("max_baud", 19200)
    if isinstance(value, bool) or not isinstance(value, int) or value not in MODE_C_BAUD.values():
        raise ConfigurationError(f"profile {profile.name}: max_baud must be one of {sorted(MODE_C_BAUD.values())}")
    return value


def _address(value: object, where: str) -> str:
    text = str(value)
    try:
        encode_request(text)
    except ConfigurationError:
        raise ConfigurationError(f"{where}: device address must be up to 32 letters, digits or spaces") from None
    return text


def device_address(target: MeterTarget, profile: DeviceProfile, endpoint: Endpoint) -> str:
    """The sign-on address (module doc for where it comes from)."""
    if "device_address" in target.options:
        return _address(target.options["device_address"], f"meter {target.meter_id}")
    query = endpoint.query
    if "address" in query:
        return _address(query["address"], f"meter {target.meter_id} URL")
    return _address(profile.parameters.get("device_address", ""), f"profile {profile.name}")


def validate_iec_profile(profile: DeviceProfile) -> None:
    """Raise ConfigurationError unless the profile's points and parameters follow the module doc."""
    if profile.protocol != PROTOCOL:
        raise ConfigurationError(f"profile {profile.name}: protocol is {profile.protocol!r}, not {PROTOCOL!r}")
    unknown = set(profile.parameters) - _PARAMETERS
    if unknown:
        raise ConfigurationError(f"profile {profile.name}: unknown IEC 62056-21 parameters {sorted(unknown)}")
    _address(profile.parameters.get("device_address", ""), f"profile {profile.name}")
    _max_baud(profile)
    meter_timezone(profile)
    exchange_timeout(1.0, profile.parameters, profile.name)
    for point in profile.points:
        data_set_point(point)


def iec_readings(
    readout: Iec62056Readout, points: list[DataSetPoint], received_at: datetime, *, meter_id: str | None = None
) -> list[Reading]:
    """One reading per point the readout carries (module doc)."""
    readings = []
    for dp in points:
        record = next((r for r in readout.records if dp.matches(r)), None)
        if record is None:
            continue
        assert isinstance(record.value, Decimal)  # matches() admits numbers only
        value = point_value(dp.point, exact_number(record.value), record.unit)
        at = record.timestamp or readout.meter_time or received_at
        readings.append(Reading(dp.point.quantity, value, dp.point.unit, at, None, {"source": dp.point.source}))
    if points and not readings:
        wanted = ", ".join(sorted({dp.point.source for dp in points}))
        raise ProtocolError(f"the readout carries none of the profile's data sets ({wanted})", meter_id=meter_id)
    return readings


async def run_readout(
    session: Iec62056Session, medium: Medium, *, timeout: float, meter_id: str | None = None
) -> Iec62056Readout:
    """Drive ``session`` over the open ``medium`` to its end; return the readout or raise the session's error."""
    clock = asyncio.get_running_loop().time
    core = SessionCore(session, clock())

    async def switch_speed() -> None:
        while (baud := core.take_baud()) is not None:
            if medium.can_set_line:  # over a TCP bridge the speed is the bridge's business
                await medium.set_line(baudrate=baud)

    await drive(core, medium, idle_timeout=timeout, send_timeout=timeout, clock=clock, between=switch_speed)
    try:
        return core.result()
    except GxError as exc:
        exc.meter_id = exc.meter_id or meter_id  # the session does not know which meter it read
        raise


class Iec62056Driver(FieldDriver):
    """Reads IEC 62056-21 meters described by device profiles (protocol ``iec62056-21``)."""

    name: ClassVar[str] = PROTOCOL
    meter_options: ClassVar[frozenset[str] | None] = frozenset({"device_address"})

    def validate_profile(self, profile: DeviceProfile) -> None:
        validate_iec_profile(profile)

    async def read(
        self,
        target: MeterTarget,
        profile: DeviceProfile,
        request: ReadRequest,
        *,
        timeout: float,
        medium: Medium | None = None,
    ) -> ReadResult:
        validate_iec_profile(profile)
        endpoint = target.endpoint()
        points = [data_set_point(p) for p in profile.points_for(request.purposes)]
        wait = exchange_timeout(timeout, profile.parameters, profile.name)
        session = Iec62056Session(
            address=device_address(target, profile, endpoint),
            max_baud=_max_baud(profile),
            timings=SessionTimings(response_timeout=wait, inter_char_timeout=wait),
            meter_tz=meter_timezone(profile),
        )
        if not points:
            return nothing_selected(profile, request)
        async with read_medium(
            endpoint, medium, timeout=wait, serial_defaults=IEC_SERIAL, on_traffic=self.on_traffic
        ) as line:
            readout = await run_readout(session, line, timeout=wait, meter_id=target.meter_id)
        readings = iec_readings(readout, points, self._clock(), meter_id=target.meter_id)
        missing = [
            PointProblem(dp.point.quantity, dp.point.source, "the readout carries no such data set")
            for dp in points
            if not any(dp.matches(r) for r in readout.records)
        ]
        return ReadResult(readings=readings, meter_time=readout.meter_time, problems=missing)
