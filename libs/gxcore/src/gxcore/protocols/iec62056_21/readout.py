"""Decode an IEC 62056-21 data readout (modes A, B, C; mode D style pushes without STX too).

Data lines hold one or more data sets ``address(value[*unit])``; a data set may carry
further ``(value)`` groups without an address, such as the time of a maximum demand
``1.6.0(01.234*kW)(23-01-15 12:30)``. The block ends with a ``!`` line (some meters put
the ``!`` at the end of the last data line). Meter times in the readout have no zone:
the caller says which zone the meter keeps (``tz``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, tzinfo
from decimal import Decimal
from typing import Any

from gxcore.errors import ChecksumError, ConfigurationError, FramingError
from gxcore.protocols.iec62056_21.frames import CRLF, ETX, STX, Identification, bcc, parse_identification
from gxcore.readings import Reading, exact_number

_LINE_RE = re.compile(r"(?:[^()/!]{0,32}\([^()]{0,128}\))+")
_SET_RE = re.compile(r"([^()/!]{0,32})\(([^()]{0,128})\)")
_NUMBER_RE = re.compile(r"[+-]?\d{1,24}(?:\.\d{1,24})?")
_DATETIME_RE = re.compile(r"(\d{2})-(\d{2})-(\d{2})[ ,](\d{2}):(\d{2})(?::(\d{2}))?")
_TIME_RE = re.compile(r"(\d{2}):?(\d{2}):?(\d{2})")
_DATE_RE = re.compile(r"0?(\d{2})-?(\d{2})-?(\d{2})")
_PRINTABLE_RE = re.compile(r"[ -~]*")
# Identifiers, versions, clock and error/status words: kept as text even when all digits,
# so serial numbers keep their leading zeros and never become readings.
_TEXT_ADDRESS_RE = re.compile(r"0\.[029]\.\d+|C\.\d+\.\d+|F\.F(?:\.\d+)?|96\.1\.\d+|0\.0")


@dataclass(frozen=True, slots=True)
class Iec62056Record:
    """One value of a data set; ``index`` > 0 for the further values of one address."""

    quantity: str
    value: Decimal | str
    unit: str | None
    timestamp: datetime | None = None
    index: int = 0


@dataclass(frozen=True, slots=True)
class Iec62056Readout:
    """A decoded readout; ``bcc`` is None when the data came without an STX/ETX block."""

    identification: Identification | None
    records: list[Iec62056Record]
    bcc: int | None
    meter_time: datetime | None = None
    raw: bytes = field(repr=False, default=b"")

    def find(self, quantity: str) -> list[Iec62056Record]:
        """Records of one address, as written in the readout."""
        return [r for r in self.records if r.quantity == quantity]

    def to_json_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict: id, manufacturer, medium, meter_time, records."""
        ident = self.identification
        serial = next((r.value for r in self.records if r.quantity in ("0.0.0", "C.1.0", "0.0")), None)
        return {
            "id": str(serial) if serial is not None else (ident.ident if ident else None),
            "manufacturer": ident.manufacturer if ident else None,
            "medium": "electricity",
            "meter_time": self.meter_time.isoformat() if self.meter_time else None,
            "records": [
                {
                    "quantity": r.quantity,
                    "value": float(r.value) if isinstance(r.value, Decimal) else r.value,
                    "unit": r.unit,
                    "timestamp": r.timestamp.isoformat() if r.timestamp else None,
                    "index": r.index,
                }
                for r in self.records
            ],
        }

    def to_readings(self, *, received_at: datetime) -> list[Reading]:
        """Numeric records as readings; values without their own time get meter time, else ``received_at``."""
        if received_at.tzinfo is None:
            raise ConfigurationError("received_at must be timezone-aware")
        default = self.meter_time or received_at
        return [
            Reading(r.quantity, exact_number(r.value), r.unit or "", r.timestamp or default, extra={"index": r.index})
            for r in self.records
            if isinstance(r.value, Decimal)
        ]


def decode_iec62056_21_readout(data: bytes, *, tz: tzinfo = UTC) -> Iec62056Readout:
    """Decode ``[identification CR LF] STX lines ! CR LF ETX BCC`` (or the same lines without STX/BCC)."""
    raw = bytes(data)
    pos = 0
    identification = None
    if raw.startswith(b"/"):
        end = raw.find(CRLF)
        if end < 0:
            raise FramingError("identification line has no CR LF", offset=0, frame=raw[:32])
        identification = parse_identification(raw[:end])
        pos = end + 2
    check: int | None = None
    if pos < len(raw) and raw[pos] == STX:
        etx = raw.find(bytes([ETX]), pos + 1)
        if etx < 0 or etx + 2 != len(raw):
            raise FramingError("data message must end with ETX and one BCC byte", offset=len(raw))
        check = raw[etx + 1]
        computed = bcc(raw[pos + 1 : etx + 1])
        if computed != check:
            raise ChecksumError(f"BCC {check:02X} in readout, {computed:02X} computed", offset=etx + 1, frame=raw)
        body, base = raw[pos + 1 : etx], pos + 1
    else:
        body, base = raw[pos:], pos
    records, meter_time = parse_data_lines(body, base_offset=base, tz=tz)
    return Iec62056Readout(identification, records, check, meter_time, raw)


def _fail(number: int, offset: int, message: str, text: str) -> FramingError:
    return FramingError(f"line {number}: {message}", offset=offset, frame=text.encode("ascii", "replace")[:64])


def parse_data_lines(
    body: bytes, *, base_offset: int = 0, tz: tzinfo = UTC
) -> tuple[list[Iec62056Record], datetime | None]:
    """Parse data lines up to the '!' end line; returns the records and the meter clock (0.9.1 + 0.9.2)."""
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError as exc:
        raise FramingError("readout has a non-ASCII byte", offset=base_offset + exc.start) from None
    records: list[Iec62056Record] = []
    clock: dict[str, str] = {}
    offset = base_offset
    ended = False
    pieces = text.split("\n")
    for number, piece in enumerate(pieces, start=1):
        line = piece.removesuffix("\r")
        line_offset, offset = offset, offset + len(piece) + 1
        if ended:
            if line:
                raise _fail(number, line_offset, "data after the '!' end line", line)
            continue
        if not _PRINTABLE_RE.fullmatch(line):
            raise _fail(number, line_offset, "control or non-printable character", line)
        if line.endswith("!"):
            ended, line = True, line[:-1]
        if not line:
            continue
        if not _LINE_RE.fullmatch(line):
            raise _fail(number, line_offset, "expected 'address(value*unit)' data sets", line)
        records.extend(_data_sets(line, tz, clock))
    if not ended:
        raise FramingError("readout has no '!' end line", offset=offset - 1)
    return records, _meter_time(clock, tz)


def _data_sets(line: str, tz: tzinfo, clock: dict[str, str]) -> list[Iec62056Record]:
    records: list[Iec62056Record] = []
    address, index, is_text = "", 0, False
    for name, content in _SET_RE.findall(line):
        value, unit = content.rsplit("*", 1) if "*" in content else (content, None)
        if name:
            address, index = name.strip(), 0
            reduced = address.split(":")[-1].split("*")[0]
            is_text = _TEXT_ADDRESS_RE.fullmatch(reduced) is not None
            if reduced in ("0.9.1", "0.9.2"):
                clock[reduced] = value  # raw text: leading zeros matter for hhmmss / 0YYMMDD
        else:
            index += 1
            when = _datetime(value, tz)
            if when is not None and records and records[-1].timestamp is None:
                # (value)(date time): the time belongs to the value before it, e.g. a maximum demand
                prev = records[-1]
                records[-1] = Iec62056Record(prev.quantity, prev.value, prev.unit, when, prev.index)
                continue
        number: Decimal | str = Decimal(value) if not is_text and _NUMBER_RE.fullmatch(value) else value
        records.append(Iec62056Record(address, number, unit or None, None, index))
    return records


def _datetime(text: str, tz: tzinfo) -> datetime | None:
    match = _DATETIME_RE.fullmatch(text)
    if match is None:
        return None
    yy, mo, dd, hh, mi, ss = match.groups()
    try:
        local = datetime(2000 + int(yy), int(mo), int(dd), int(hh), int(mi), int(ss or 0), tzinfo=tz)
    except ValueError:
        return None
    return local.astimezone(UTC)


def _meter_time(clock: dict[str, str], tz: tzinfo) -> datetime | None:
    time_match = _TIME_RE.fullmatch(clock.get("0.9.1", ""))
    date_match = _DATE_RE.fullmatch(clock.get("0.9.2", ""))
    if time_match is None or date_match is None:
        return None
    yy, mo, dd = (int(g) for g in date_match.groups())
    hh, mi, ss = (int(g) for g in time_match.groups())
    try:
        local = datetime.combine(date(2000 + yy, mo, dd), time(hh, mi, ss), tzinfo=tz)
    except ValueError:
        return None
    return local.astimezone(UTC)
