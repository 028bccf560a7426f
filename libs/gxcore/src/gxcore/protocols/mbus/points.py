"""The M-Bus record-to-point rule, shared by wired and wireless M-Bus: profile points -> readings.

Point ``source`` rule:

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
telegrams with none of the selected points are a ProtocolError. ``meter_time`` is the
meter's clock record, read in the meter's zone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from decimal import Decimal

from gxcore.errors import ConfigurationError, ProtocolError
from gxcore.profiles.model import ProfilePoint
from gxcore.protocols.mbus.records import FUNCTIONS, MBusRecord
from gxcore.protocols.mbus.telegram import MBusTelegram
from gxcore.readings import Reading
from gxcore.units import meter_unit, point_value

RECORD_PREFIX = "record:"
_CANONICAL_SOURCE = re.compile(r"\d{1,3}-\d{1,3}:\d{1,3}\.\d{1,3}\.\d{1,3}(\*\d{1,4})?")
_RECORD_OPTIONS = frozenset({"storage", "tariff", "subunit", "function", "meter_unit"})


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


def meter_time_of(telegrams: Iterable[MBusTelegram], zone: tzinfo) -> datetime | None:
    """The first clock record of ``telegrams``, as aware UTC."""
    for telegram in telegrams:
        local = telegram.meter_time()
        if local is not None:
            return local.replace(tzinfo=zone).astimezone(UTC)
    return None
