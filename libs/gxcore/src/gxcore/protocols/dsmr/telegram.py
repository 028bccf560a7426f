"""Decode one DSMR P1 telegram (2.2, 3, 4.x, 5.0, e-MUCS, Smarty) into records.

A record keeps the OBIS reference exactly as the telegram wrote it, the value
(``Decimal`` for numbers, ``str`` for text, as written), the unit, an aware-UTC
timestamp and the M-Bus channel. Lines whose reference is not listed in
``objects`` are kept as ``raw`` records; an OBIS reference's ``*255`` (F unused) is dropped.

Tolerant by default, as field telegrams need: a line that does not have the layout its OBIS
reference promises (a history whose first value is a time where a count belongs, a stray
character) is left out of the records and comes back in ``unparsed`` with its line number and
byte offset; every other line still decodes. A CRC written with fewer than four hex digits is
accepted when it matches, a telegram without a CRC is accepted with a warning, and lines after
the ``!`` line are ignored (reported). A CRC that does not match is always a ``ChecksumError``.
``strict=True`` refuses all of these with a ``FramingError`` naming the line and its offset.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from gxcore.errors import ChecksumError, ConfigurationError, FramingError
from gxcore.protocols.dsmr.framer import MAX_TELEGRAM_SIZE, crc16_arc
from gxcore.protocols.dsmr.objects import OBIS_RE, LineKind, decode_hex_text, line_kind, medium_of_device_type
from gxcore.protocols.dsmr.timestamps import parse_dsmr_timestamp
from gxcore.readings import Reading, Unparsed, exact_number

_HEADER_RE = re.compile(r"/([A-Za-z]{3})([ -~])([ -~]*)")
_GROUPS_RE = re.compile(r"(?:\([^()]*\))+")
_GROUP_RE = re.compile(r"\(([^()]*)\)")
_NUMBER_RE = re.compile(r"([+-]?\d{1,24}(?:\.\d{1,24})?)(?:\*([!-'+-~]{1,16}))?")
_COUNT_RE = re.compile(r"\d{1,5}")
_PRINTABLE_RE = re.compile(r"[ -~]*")


@dataclass(frozen=True, slots=True)
class DsmrHeader:
    """The identification line: ``/`` + manufacturer (3 letters) + baud char + identification."""

    manufacturer: str
    baud_char: str
    ident: str


@dataclass(frozen=True, slots=True)
class DsmrRecord:
    """One value of a telegram line; a line with a list (event log, peaks) gives several."""

    quantity: str
    value: Decimal | str | None
    unit: str | None
    timestamp: datetime | None
    channel: int = 0
    medium: str = "electricity"
    kind: str = LineKind.REGISTER.value
    extra: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DsmrTelegram:
    """A decoded telegram. ``timestamp`` is the meter clock (0-0:1.0.0) in UTC, if the telegram has one."""

    header: DsmrHeader
    version: str | None
    variant: str
    equipment_id: str | None
    timestamp: datetime | None
    records: list[DsmrRecord]
    crc: int | None
    raw: bytes = field(repr=False, default=b"")
    unparsed: list[Unparsed] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def find(self, quantity: str) -> list[DsmrRecord]:
        """Records whose quantity is ``quantity`` (as written in the telegram)."""
        return [r for r in self.records if r.quantity == quantity]

    def to_json_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict: id, manufacturer, medium, version, variant, timestamp, records."""
        return {
            "id": self.equipment_id,
            "manufacturer": self.header.manufacturer,
            "medium": "electricity",
            "version": self.version,
            "variant": self.variant,
            "timestamp": _iso(self.timestamp),
            "records": [
                {
                    "quantity": r.quantity,
                    "value": _json_value(r.value),
                    "unit": r.unit,
                    "timestamp": _iso(r.timestamp),
                    "channel": r.channel,
                    "medium": r.medium,
                    "kind": r.kind,
                    **r.extra,
                }
                for r in self.records
            ],
            **({"unparsed": [u.to_json_dict() for u in self.unparsed]} if self.unparsed else {}),
            **({"warnings": list(self.warnings)} if self.warnings else {}),
        }

    def to_readings(self, *, received_at: datetime) -> list[Reading]:
        """Numeric records as canonical readings; records without a time get ``received_at``."""
        if received_at.tzinfo is None:
            raise ConfigurationError("received_at must be timezone-aware")
        readings = []
        for r in self.records:
            if not isinstance(r.value, Decimal):
                continue
            extra: dict[str, str | int] = {"channel": r.channel, "medium": r.medium, **r.extra}
            readings.append(
                Reading(r.quantity, exact_number(r.value), r.unit or "", r.timestamp or received_at, extra=extra)
            )
        return readings


def _iso(instant: datetime | None) -> str | None:
    return instant.isoformat() if instant is not None else None


def _json_value(value: Decimal | str | None) -> float | int | str | None:
    if isinstance(value, Decimal):
        number = exact_number(value)
        return number if isinstance(number, int) else float(number)  # json has no decimals; same digits
    return value


class _LineError(ValueError):
    """A line does not have the layout its OBIS reference promises."""


@dataclass(frozen=True, slots=True)
class _Line:
    number: int  # 1-based line number in the telegram
    offset: int  # byte offset of the line in the decoded bytes
    text: str
    quantity: str = ""
    obis: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)
    groups: tuple[str, ...] = ()


class _Tolerance:
    """What a tolerant decode sets aside; ``strict`` turns each into the FramingError instead."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.unparsed: list[Unparsed] = []
        self.warnings: list[str] = []

    def line(self, line: _Line, message: str) -> None:
        if self.strict:
            raise _fail(line, message)
        self.unparsed.append(Unparsed(line.offset, line.text.encode(), message, line=line.number))


def decode_dsmr_telegram(text: bytes, *, strict: bool = False) -> DsmrTelegram:
    """Decode one telegram from '/' through '!' and its CRC (surrounding CR LF allowed)."""
    data = bytes(text)
    if len(data) > MAX_TELEGRAM_SIZE:
        raise FramingError(f"telegram longer than {MAX_TELEGRAM_SIZE} bytes", offset=MAX_TELEGRAM_SIZE)
    start = len(data) - len(data.lstrip(b"\r\n "))
    if start >= len(data) or data[start] != ord("/"):
        raise FramingError("telegram does not start with '/'", offset=start, frame=data[start : start + 16])
    bang = data.find(b"!", start)
    if bang < 0:
        raise FramingError("telegram has no '!' end line", offset=len(data), frame=data[-16:])
    keep = _Tolerance(strict)
    crc = _crc(data, start, bang, keep)
    try:
        body = data[start : bang + 1].decode("ascii")
    except UnicodeDecodeError as exc:
        raise FramingError("telegram has a non-ASCII byte", offset=start + exc.start) from None
    header, lines = _split_lines(body, start, keep)
    telegram = _build(header, lines, crc, data, keep)
    return replace(telegram, unparsed=keep.unparsed, warnings=keep.warnings)


def _crc(data: bytes, start: int, bang: int, keep: _Tolerance) -> int | None:
    """The CRC on the '!' line (None without one); lines after it are ignored, or refused when strict."""
    crc_line, newline, after = data[bang + 1 :].partition(b"\n")
    trailer = crc_line.rstrip(b"\r ")
    if newline and after.strip(b"\r\n \x00"):
        at = bang + 1 + len(crc_line) + 1
        if keep.strict:
            raise FramingError("text after the '!' line", offset=at, frame=after[:16])
        keep.unparsed.append(Unparsed(at, after, "lines after the '!' end line are ignored"))
    if not trailer:
        return None
    hex_digits = all(chr(b) in "0123456789ABCDEFabcdef" for b in trailer)
    if not hex_digits or len(trailer) > 4 or (keep.strict and len(trailer) != 4):
        raise FramingError("CRC after '!' is not 4 hex digits", offset=bang + 1, frame=trailer[:16])
    crc = int(trailer, 16)
    computed = crc16_arc(data[start : bang + 1])
    if computed != crc:
        raise ChecksumError(f"CRC {trailer.decode()} in telegram, {computed:04X} computed", offset=bang + 1, frame=data)
    if len(trailer) != 4:
        keep.warnings.append(f"CRC written with {len(trailer)} hex digit(s) instead of 4; it matches")
    return crc


def _fail(line: _Line, message: str) -> FramingError:
    return FramingError(f"line {line.number}: {message}", offset=line.offset, frame=line.text.encode())


def _split_lines(body: str, base: int, keep: _Tolerance) -> tuple[DsmrHeader, list[_Line]]:
    physical: list[_Line] = []
    offset = base
    for number, piece in enumerate(body.split("\n"), start=1):
        text = piece.removesuffix("\r")
        physical.append(_Line(number, offset, text))
        offset += len(piece) + 1
    head = _HEADER_RE.fullmatch(physical[0].text)
    if head is None:
        raise _fail(physical[0], "header is not '/XXXZ<identification>'")
    if physical[-1].text != "!":
        raise _fail(physical[-1], "'!' must stand at the start of the last line")
    logical: list[_Line] = []
    for line in physical[1:-1]:
        if not _PRINTABLE_RE.fullmatch(line.text):
            keep.line(line, "control or non-printable character in a data line")
            continue
        if not line.text:
            continue
        if line.text.startswith("("):
            if not logical:
                keep.line(line, "value continuation without a preceding OBIS line")
                continue
            prev = logical[-1]
            logical[-1] = _Line(prev.number, prev.offset, prev.text + line.text)
            continue
        logical.append(line)
    parsed: list[_Line] = []
    for line in logical:
        try:
            parsed.append(_parse_line(line))
        except _LineError as exc:
            keep.line(line, str(exc))
    return DsmrHeader(head.group(1), head.group(2), head.group(3).strip()), parsed


def _parse_line(line: _Line) -> _Line:
    match = OBIS_RE.match(line.text)
    if match is None:
        raise _LineError("expected an OBIS reference such as 1-0:1.8.1")
    rest = line.text[match.end() :]
    if not _GROUPS_RE.fullmatch(rest):
        raise _LineError("expected one or more '(value)' groups after the OBIS reference")
    a, b, c, d, e = (int(match.group(i)) for i in range(1, 6))
    quantity = match.group(0).removesuffix("*255")  # F = 255: "not used", the same quantity
    return _Line(line.number, line.offset, line.text, quantity, (a, b, c, d, e), tuple(_GROUP_RE.findall(rest)))


def _number(text: str) -> tuple[Decimal, str | None]:
    match = _NUMBER_RE.fullmatch(text)
    if match is None:
        raise _LineError(f"not a number with optional unit: {text[:24]!r}")
    return Decimal(match.group(1)), match.group(2)


def _count(text: str) -> int:
    if not _COUNT_RE.fullmatch(text):
        raise _LineError(f"not a count: {text[:24]!r}")
    return int(text)


def _time(text: str) -> datetime | None:
    try:
        return parse_dsmr_timestamp(text)
    except ValueError as exc:
        raise _LineError(str(exc)) from None


def _build(header: DsmrHeader, lines: list[_Line], crc: int | None, raw: bytes, keep: _Tolerance) -> DsmrTelegram:
    device_types: dict[int, int] = {}
    clock: datetime | None = None
    version: str | None = None
    equipment: str | None = None
    good: list[_Line] = []
    for line in lines:
        a, b, c, d, e = line.obis
        try:
            if (a, c, d, e) == (0, 24, 1, 0) and len(line.groups) == 1:
                device_types[b] = int(_number(line.groups[0])[0])
            elif (a, b, c, d, e) == (0, 0, 1, 0, 0) and len(line.groups) == 1:
                clock = _time(line.groups[0])
        except _LineError as exc:
            keep.line(line, str(exc))
            continue
        good.append(line)
        if (a, c, d, e) in ((1, 0, 2, 8), (0, 96, 1, 4)) and line.groups:
            version = line.groups[0]
        if b == 0 and (a, c, d, e) in ((0, 96, 1, 1), (0, 42, 0, 0)) and line.groups:
            equipment = decode_hex_text(line.groups[0]) or line.groups[0]
    records: list[DsmrRecord] = []
    for line in good:
        channel = line.obis[1] if line.obis[0] == 0 else 0
        medium = "electricity" if channel == 0 else medium_of_device_type(device_types.get(channel))
        try:
            records.extend(_records(line, channel, medium, clock))
        except _LineError as exc:
            keep.line(line, str(exc))
    quantities = {(line.obis[0], line.obis[2], line.obis[3], line.obis[4]) for line in lines}
    variant = _variant(header, version, quantities, crc)
    if crc is None and variant != "dsmr2.2/3":
        if keep.strict:
            raise ChecksumError(f"{variant} telegram without a CRC", offset=len(raw.rstrip(b"\r\n ")))
        keep.warnings.append(f"{variant} telegram without a CRC: its content is not checked")
    return DsmrTelegram(header, version, variant, equipment, clock, records, crc, raw)


def _variant(
    header: DsmrHeader, version: str | None, quantities: set[tuple[int, int, int, int]], crc: int | None
) -> str:
    if (0, 96, 1, 4) in quantities or header.manufacturer == "FLU":
        return "e-mucs"
    if (0, 42, 0, 0) in quantities or header.manufacturer.upper() == "LUX":
        return "smarty"
    if version is not None and version.startswith("5"):
        return "dsmr5"
    if version is not None and version.startswith("4"):
        return "dsmr4"
    return "dsmr2.2/3" if crc is None else "dsmr"


@dataclass(frozen=True, slots=True)
class _Make:
    """Builds the records of one line: quantity, channel, medium and kind are fixed per line."""

    quantity: str
    channel: int
    medium: str
    kind: LineKind

    def __call__(
        self, value: Decimal | str | None, unit: str | None, when: datetime | None, extra: dict[str, str] | None = None
    ) -> DsmrRecord:
        return DsmrRecord(self.quantity, value, unit, when, self.channel, self.medium, self.kind.value, extra or {})


def _records(line: _Line, channel: int, medium: str, clock: datetime | None) -> list[DsmrRecord]:
    a, _, c, d, e = line.obis
    kind = line_kind(a, c, d, e)
    groups = line.groups
    if kind is LineKind.RAW and len(groups) == 1 and "*" in groups[0]:
        kind = LineKind.REGISTER  # unlisted, but "(number*unit)" is unambiguous
    make = _Make(line.quantity, channel, medium, kind)
    if kind is LineKind.REGISTER:
        if len(groups) == 1:
            return [make(*_number(groups[0]), clock)]
        return [make(*_number(g), clock, {"index": str(i)}) for i, g in enumerate(groups)]
    if kind in (LineKind.TEXT, LineKind.HEX_TEXT) and len(groups) == 1:
        decoded = decode_hex_text(groups[0]) if kind is LineKind.HEX_TEXT else None
        return [make(groups[0], None, clock, {"text": decoded} if decoded is not None else None)]
    if kind is LineKind.CLOCK and len(groups) == 1:
        return [make(groups[0], None, _time(groups[0]))]
    if kind is LineKind.TIMED_REGISTER and len(groups) == 2:
        return [_timed(make, groups[0], groups[1], {})]
    if kind is LineKind.EVENT_LOG:
        return _event_log(make, groups)
    if kind is LineKind.PEAK_HISTORY:
        return _peak_history(make, groups)
    if kind is LineKind.LEGACY_CAPTURE:
        return _legacy_capture(make, groups)
    if kind is LineKind.RAW:
        return [make(groups[0] if len(groups) == 1 else line.text[len(line.quantity) :], None, clock)]
    raise _LineError(f"{len(groups)} value groups do not fit a {kind.value} line")


def _timed(make: _Make, when: str, value: str, extra: dict[str, str]) -> DsmrRecord:
    instant = _time(when)
    if instant is None:
        extra = {**extra, "time": "unspecified"}
    return make(*_number(value), instant, extra)


def _event_log(make: _Make, groups: tuple[str, ...]) -> list[DsmrRecord]:
    count = 0 if groups == ("",) else _count(groups[0])
    if len(groups) != 2 + 2 * count and not (count == 0 and len(groups) == 1):
        raise _LineError(f"event log announces {count} entries but has {len(groups)} groups")
    return [
        _timed(make, groups[2 + 2 * i], groups[3 + 2 * i], {"log": groups[1], "index": str(i)}) for i in range(count)
    ]


def _peak_history(make: _Make, groups: tuple[str, ...]) -> list[DsmrRecord]:
    count = _count(groups[0])
    if len(groups) != 3 + 3 * count:
        raise _LineError(f"peak history announces {count} months but has {len(groups)} groups")
    records = []
    for i in range(count):
        period, occurred, value = groups[3 + 3 * i : 6 + 3 * i]
        at = _time(occurred)
        extra = {"index": str(i), "occurred": at.isoformat() if at is not None else "unspecified"}
        records.append(_timed(make, period, value, extra))
    return records


def _legacy_capture(make: _Make, groups: tuple[str, ...]) -> list[DsmrRecord]:
    if len(groups) < 6:
        raise _LineError("DSMR 2.2/3 capture needs (time)(tariff)(period)(n)(obis)(unit)(value)")
    start = _time(groups[0])
    period = timedelta(minutes=_count(groups[2]))
    count = _count(groups[3])
    if len(groups) != 6 + count:
        raise _LineError(f"capture announces {count} values but has {len(groups) - 6}")
    unit = groups[5] or None
    records = []
    for i, text in enumerate(groups[6:]):
        number, own_unit = _number(text)
        when = start + period * i if start is not None else None
        records.append(make(number, own_unit or unit, when, {"obis": groups[4], "index": str(i)}))
    return records
