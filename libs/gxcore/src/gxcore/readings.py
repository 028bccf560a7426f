"""What every protocol driver hands upward: readings in canonical quantities, and the events a meter reported."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final, Literal

from gxcore.errors import ProtocolError

EventSeverity = Literal["info", "warning", "alarm"]
EventValue = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class BitString:
    """A meter's bit-string (a DLMS status word, say): ``bits`` is ``0``/``1`` text, first bit first."""

    bits: str

    def __post_init__(self) -> None:
        if not set(self.bits) <= {"0", "1"}:
            raise ProtocolError(f"a bit-string holds only 0 and 1, not {self.bits[:32]!r}")

    def __str__(self) -> str:
        return self.bits


Number = int | Decimal | float
"""A numeric value: ``int`` for an integer register, ``Decimal`` for a scaled or decimal one
(exact: ``38296251`` with scaler -3 is ``Decimal("38296.251")``), ``float`` only for what the
meter itself sends as a binary float (M-Bus/Modbus real32, DLMS float64)."""

MeterValue = Number | str | bytes | bool | BitString
"""Any value of a reading (see :class:`Reading` and the README section "Values")."""


def exact_number(value: Decimal) -> int | Decimal:
    """A decimal the meter wrote (``000123.456``, ``42``) as an int when written without decimals, else itself."""
    exponent = value.as_tuple().exponent
    return int(value) if isinstance(exponent, int) and exponent >= 0 else value


_REAL32: Final = struct.Struct("<f")
_SHORTEST: Final = ("%.6g", "%.7g", "%.8g", "%.9g")
_ALL_LENGTHS: Final = tuple(f"%.{d}g" for d in range(1, 10))
_SMALLEST_NORMAL32: Final = 2.0**-126  # below it a float32 has fewer significant bits


def shortest_real32(value: float) -> Decimal:
    """A single-precision float (M-Bus type H, a Modbus float32) as the shortest decimal that packs back
    to the same 4 bytes: ``230.1``, not the ``230.10000610351562`` its widening to double prints."""
    pack = _REAL32.pack
    packed = pack(value)
    # Start at 6 digits: a float32 lies within 6e-8 (relative) of any shorter decimal that packs back
    # to it, far inside half a unit of the 6th digit, so "%.6g" (which drops trailing zeros) is that
    # shorter decimal whenever there is one; 7 to 9 digits are needed only for the rest. (Not for
    # subnormals, whose precision is lower: they try every length.)
    for form in _SHORTEST if abs(value) >= _SMALLEST_NORMAL32 or value == 0 else _ALL_LENGTHS:
        text = form % value
        if pack(float(text)) == packed:
            return Decimal(text)
    return Decimal(repr(value))  # not reached: 9 significant digits always round-trip a float32


def json_value(value: MeterValue) -> int | float | str | bool:
    """A value for JSON output (the CLI): numbers as numbers (a Decimal as the float that prints its
    digits), text as is, bytes as lowercase hex, bits as their 0/1 text."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, BitString):
        return value.bits
    return value


def is_number(value: object) -> bool:
    """True for a numeric value (int, Decimal, float), False for text, bytes, bits and booleans."""
    return isinstance(value, int | Decimal | float) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class Reading:
    """One value of one quantity of one meter at one instant.

    ``quantity`` is the canonical, OBIS-style name (``1-0:1.8.0``); ``ts`` is timezone-aware
    UTC (the spelling of the contract and the database; ``timestamp`` is kept as a read-only alias
    for code written before). ``status`` carries the meter's own status word where it has one (the
    contract's ``status``, stored in ``readings.status``).

    ``value`` keeps the form the meter gave it, exactly: ``int`` for integer registers,
    ``Decimal`` for scaled and decimal ones (no binary-float noise, the meter's resolution
    kept: scaler -3 gives three decimals), ``float`` only for values the meter sends as binary
    floats; ``str`` for text (visible strings, printable octet-strings such as the logical
    device name), ``bytes`` for other octet-strings, ``bool`` and :class:`BitString`. Enums are
    their integer code. Numbers are stored in ``readings.value`` (converted to double once, at the
    edge of the contract); the others in ``register_values`` (see the README section "Values").
    ``extra`` says where a value came from (a profile's OBIS code, a record index); it stays in
    the process for tools and logs and is not published.
    """

    quantity: str
    value: MeterValue
    unit: str
    ts: datetime
    status: int | None = None
    extra: dict[str, str | int] = field(default_factory=dict)

    @property
    def timestamp(self) -> datetime:
        """The old spelling of :attr:`ts`."""
        return self.ts


@dataclass(frozen=True, slots=True)
class Unparsed:
    """Bytes or a line a tolerant decoder could not read, kept as they were, with where and why.

    A decoder returns every complete record it read and one of these for the rest (trailing fill,
    a record cut short, an odd line); ``--strict`` refuses instead. Checksums and decryption are
    never tolerant: a bad CRC or a wrong key is still an error.
    """

    offset: int  # byte offset in the input
    data: bytes
    reason: str
    line: int | None = None  # for line-based formats (DSMR, IEC 62056-21): the 1-based line number

    def to_json_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"offset": self.offset, "hex": self.data.hex().upper(), "reason": self.reason}
        if self.line is not None:
            out["line"] = self.line
            out["text"] = self.data.decode("ascii", "replace")
        return out

    @property
    def warning(self) -> str:
        where = f"line {self.line} (byte offset {self.offset})" if self.line is not None else f"offset {self.offset}"
        return f"{len(self.data)} byte(s) at {where} not decoded: {self.reason}"


def stable_event_id(meter_id: str, source: str, timestamp: datetime, code: int | str) -> str:
    """An id that is the same every time the same event is read: from meter, source, time and code.

    Reading a meter's event log again (a redelivered job, overlapping ranges) yields the same
    ids, so storing events is idempotent. Two entries with the same code in the same second of
    the same log are one event.
    """
    stamp = timestamp.astimezone(UTC).isoformat()
    digest = hashlib.blake2b(f"{meter_id}\x1f{source}\x1f{stamp}\x1f{code}".encode(), digest_size=16)
    return f"ev-{digest.hexdigest()}"


@dataclass(frozen=True, slots=True)
class MeterEventRecord:
    """One event a meter reported (an event-log entry, an alarm), as a driver hands it upward.

    ``source`` names where the meter recorded it (a DLMS event log's OBIS code, say), ``code``
    is the meter's own event code, ``kind`` a short name (``power-down``); ``timestamp`` is
    timezone-aware UTC. ``event_id`` defaults to :func:`stable_event_id` over meter, source,
    timestamp and code; a driver whose meters number their events may pass its own.
    """

    meter_id: str
    timestamp: datetime
    kind: str
    source: str
    code: int | None = None
    severity: EventSeverity = "info"
    extra: Mapping[str, EventValue] = field(default_factory=dict)
    event_id: str = ""

    def __post_init__(self) -> None:
        if self.timestamp.tzinfo is None:
            raise ProtocolError(f"event {self.kind!r} from {self.source} has no time zone", meter_id=self.meter_id)
        if not 1 <= len(self.kind) <= 64:
            raise ProtocolError(f"event kind from {self.source} must be 1..64 characters", meter_id=self.meter_id)
        if not self.event_id:
            ident: int | str = self.code if self.code is not None else self.kind
            object.__setattr__(self, "event_id", stable_event_id(self.meter_id, self.source, self.timestamp, ident))
