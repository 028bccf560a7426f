"""The DSMR P1 protocol driver: read one telegram from a P1 port and map it to profile points.

A P1 port talks on its own (DSMR 5: every second; 4: every ten), so ``read`` connects to
``tcp://bridge:port`` (a ser2net-style P1-to-TCP bridge) or ``serial:///dev/ttyUSB0``
(115200 8N1 unless the URL query says ``baud=``, ``parity=`` ...) and takes the first
telegram that arrives whole with a good CRC within ``timeout`` seconds, so ``timeout``
must exceed the meter's send interval. Telegrams that fail their CRC are skipped and
named in the timeout error.

Luxembourg Smarty meters wrap the telegram in AES-GCM: the driver unwraps it when the
target has a key (``target.secrets["key"]``, 16 bytes or 32 hex digits) or the profile
parameter ``smarty`` is true (then a missing key is a KeyMissingError).

Point ``source`` rule: the OBIS reference exactly as the telegram writes it
(``1-0:1.8.1``, ``0-1:24.2.1``), with two additions:

* ``0-*:24.2.1``: any M-Bus channel; the point option ``medium`` (``gas``, ``water``,
  ``heat`` ... as the channel's device type 0-n:24.1.0 says) picks the channel, so a gas
  meter is found on whichever channel it was installed;
* ``1-0:1.8.1+1-0:1.8.2``: the sum of several references (every part must be there),
  e.g. total import over both tariffs, which DSMR does not send itself.

Only numeric values map. Units follow :mod:`gxcore.units` (the telegram's unit is
converted to ``meter_unit``, default the point's unit; then scale and offset apply).
A reading is stamped with its own time (the capture time of an M-Bus value), else the
telegram clock 0-0:1.0.0, else the time of receipt; ``meter_time`` is the telegram clock.
A point the telegram lacks yields no reading; a telegram with none is a ProtocolError.

``read(..., medium=...)`` takes the telegram from a P1 stream that is already open (and
leaves it open), e.g. one end of :func:`gxcore.media.memory_pair`. The constructor's
``on_traffic`` hook goes to every medium the driver opens.

Profile parameters: ``timeout`` (caps the caller's), ``smarty`` (true/false).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import ClassVar

from gxcore.drivers.api import MeterTarget, PointProblem, ReadRequest, ReadResult, nothing_selected
from gxcore.drivers.common import FieldDriver, LineDefaults, aes_key, exchange_timeout, read_medium
from gxcore.drivers.loop import drive
from gxcore.errors import ConfigurationError, KeyMissingError, ProtocolError
from gxcore.media import Medium
from gxcore.profiles.model import DeviceProfile, ProfilePoint
from gxcore.protocols.dsmr.first import FirstTelegram, TelegramReader
from gxcore.protocols.dsmr.reader import P1Reader
from gxcore.protocols.dsmr.smarty import SmartyReader
from gxcore.protocols.dsmr.telegram import DsmrRecord, DsmrTelegram
from gxcore.readings import Reading, exact_number
from gxcore.secrets import Secret
from gxcore.units import in_meter_unit, meter_unit, scaled

PROTOCOL = "dsmr"
P1_SERIAL = LineDefaults(baud=115200, bytesize=8, parity="N", stopbits=1)
_REFERENCE = re.compile(r"(\d{1,3})-(\d{1,3}|\*):(\d{1,3})\.(\d{1,3})\.(\d{1,3})")
_OPTIONS = frozenset({"medium", "meter_unit"})
_PARAMETERS = frozenset({"timeout", "smarty"})


@dataclass(frozen=True, slots=True)
class ObisPoint:
    """A profile point resolved to the telegram references it sums."""

    point: ProfilePoint
    references: tuple[str, ...]  # each ``A-B:C.D.E``, B possibly ``*``
    medium: str | None

    def records(self, telegram: DsmrTelegram) -> list[DsmrRecord] | None:
        """One numeric record per reference, or None if any is missing."""
        found = []
        for reference in self.references:
            record = next((r for r in telegram.records if self._matches(reference, r)), None)
            if record is None:
                return None
            found.append(record)
        return found

    def _matches(self, reference: str, record: DsmrRecord) -> bool:
        if not isinstance(record.value, Decimal):
            return False
        if "*" not in reference:
            return record.quantity == reference
        a, _, rest = reference.partition("-*:")
        head, _, tail = record.quantity.partition(":")
        return (
            head.split("-")[0] == a
            and tail == rest
            and record.channel > 0
            and (self.medium is None or record.medium == self.medium)
        )


def obis_point(point: ProfilePoint) -> ObisPoint:
    """Resolve one point's source and options (module doc); ConfigurationError names the point."""
    meter_unit(point)
    unknown = set(point.options) - _OPTIONS
    if unknown:
        raise ConfigurationError(f"point {point.quantity}: unknown DSMR options {sorted(unknown)}")
    references = tuple(part.strip() for part in point.source.split("+"))
    for reference in references:
        if not _REFERENCE.fullmatch(reference):
            raise ConfigurationError(
                f"point {point.quantity}: DSMR source part {reference!r} is not an OBIS reference such as"
                " 1-0:1.8.1 or 0-*:24.2.1"
            )
    medium = point.options.get("medium")
    if medium is not None and not isinstance(medium, str):
        raise ConfigurationError(f"point {point.quantity}: option medium must be text such as 'gas'")
    return ObisPoint(point, references, medium)


def validate_dsmr_profile(profile: DeviceProfile) -> None:
    """Raise ConfigurationError unless the profile's points and parameters follow the module doc."""
    if profile.protocol != PROTOCOL:
        raise ConfigurationError(f"profile {profile.name}: protocol is {profile.protocol!r}, not {PROTOCOL!r}")
    unknown = set(profile.parameters) - _PARAMETERS
    if unknown:
        raise ConfigurationError(f"profile {profile.name}: unknown DSMR parameters {sorted(unknown)}")
    if not isinstance(profile.parameters.get("smarty", False), bool):
        raise ConfigurationError(f"profile {profile.name}: smarty must be true or false")
    exchange_timeout(1.0, profile.parameters, profile.name)
    for point in profile.points:
        obis_point(point)


def dsmr_readings(
    telegram: DsmrTelegram, points: list[ObisPoint], received_at: datetime, *, meter_id: str | None = None
) -> list[Reading]:
    """One reading per point the telegram carries (module doc)."""
    readings = []
    for op in points:
        records = op.records(telegram)
        if records is None:
            continue
        raw: int | Decimal = 0
        for record in records:
            assert isinstance(record.value, Decimal)  # _matches admits numbers only
            # Convert each part alone: the parts of a sum may come in different units.
            raw += in_meter_unit(op.point, exact_number(record.value), record.unit)
        value = scaled(op.point, raw)
        at = records[0].timestamp or telegram.timestamp or received_at
        extra: dict[str, str | int] = {"source": op.point.source, "channel": records[0].channel}
        readings.append(Reading(op.point.quantity, value, op.point.unit, at, None, extra))
    if points and not readings:
        wanted = ", ".join(sorted({op.point.source for op in points}))
        raise ProtocolError(f"the telegram carries none of the profile's references ({wanted})", meter_id=meter_id)
    return readings


def dsmr_problems(telegram: DsmrTelegram, points: list[ObisPoint]) -> list[PointProblem]:
    """Each point the telegram does not carry, and each line the tolerant parser left unparsed."""
    problems = [
        PointProblem(op.point.quantity, op.point.source, "the telegram carries no such line")
        for op in points
        if op.records(telegram) is None
    ]
    problems.extend(
        PointProblem("", f"line {u.line}" if u.line is not None else f"offset {u.offset}", f"unparsed: {u.reason}")
        for u in telegram.unparsed
    )
    return problems


class DsmrDriver(FieldDriver):
    """Reads DSMR P1 ports (and Luxembourg Smarty) described by device profiles (protocol ``dsmr``)."""

    name: ClassVar[str] = PROTOCOL
    meter_options: ClassVar[frozenset[str] | None] = frozenset()

    def validate_profile(self, profile: DeviceProfile) -> None:
        validate_dsmr_profile(profile)

    async def read(
        self,
        target: MeterTarget,
        profile: DeviceProfile,
        request: ReadRequest,
        *,
        timeout: float,
        medium: Medium | None = None,
    ) -> ReadResult:
        validate_dsmr_profile(profile)
        endpoint = target.endpoint()
        points = [obis_point(p) for p in profile.points_for(request.purposes)]
        wait = exchange_timeout(timeout, profile.parameters, profile.name)
        key = aes_key(target.secrets.get("key"), target.meter_id)
        if profile.parameters.get("smarty", False) and key is None:
            raise KeyMissingError("Smarty P1 needs the meter's key (secret 'key')", meter_id=target.meter_id)
        if not points:
            return nothing_selected(profile, request)
        reader: TelegramReader = SmartyReader(Secret(key)) if key is not None else P1Reader()
        clock = asyncio.get_running_loop().time
        # The wait starts before the connect: ``timeout`` bounds the whole read.
        core = FirstTelegram(reader, now=clock(), wait=wait, meter_id=target.meter_id)
        async with read_medium(
            endpoint, medium, timeout=wait, serial_defaults=P1_SERIAL, on_traffic=self.on_traffic
        ) as port:
            await drive(core, port, idle_timeout=wait, send_timeout=wait, clock=clock)
        telegram = core.result()
        readings = dsmr_readings(telegram, points, self._clock(), meter_id=target.meter_id)
        return ReadResult(readings=readings, meter_time=telegram.timestamp, problems=dsmr_problems(telegram, points))
