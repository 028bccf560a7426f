"""Variable data records of EN 13757-3: DIF, DIFE, VIF, VIFE, data field -> MBusRecord.

Record layout::

    DIF | DIFE*(<=10) | VIF | VIFE*(<=10) | [plain-text: len + text] | data field

DIF bits: 7 extension, 6 storage LSB, 5-4 function (instantaneous, maximum,
minimum, error state), 3-0 data field coding. Each DIFE: 7 extension, 6 subunit
bit, 5-4 tariff bits, 3-0 storage bits. Special DIFs: 0x0F / 0x1F manufacturer data
to the end (0x1F: more records follow in the next telegram), 0x2F idle filler,
0x7F global readout request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal

from gxcore.errors import ProtocolError
from gxcore.protocols.mbus import values
from gxcore.protocols.mbus.quantities import canonical_quantity
from gxcore.protocols.mbus.vif import (
    NEUTRAL_VIFES,
    RECORD_ERRORS,
    VifInfo,
    combinable_vife,
    fb_vif,
    fd_vif,
    primary_vif,
)
from gxcore.readings import Unparsed, shortest_real32

# Numbers exactly: int for integer records, Decimal for scaled ones and for type H reals (their
# shortest single-precision decimal), see gxcore.readings.
RecordValue = int | Decimal | str | bytes | date | datetime | time | None

MAX_DIFE = 10
MAX_VIFE = 10
FUNCTIONS = ("instantaneous", "maximum", "minimum", "error")
_PHASES = {0x01: "at phase L1", 0x02: "at phase L2", 0x03: "at phase L3", 0x04: "at neutral"}


@dataclass(frozen=True, slots=True)
class MBusRecord:
    """One decoded data record; ``quantity`` is the canonical name or None (see quantities)."""

    quantity: str | None
    value: RecordValue
    unit: str
    storage: int
    tariff: int
    subunit: int
    function: str
    description: str
    error: str | None = None
    raw: bytes = field(default=b"", repr=False)

    def to_json_dict(self, *, full: bool = False) -> dict[str, object]:
        """JSON-ready dict: dates as ISO text, bytes as hex; ``full`` adds the record's error and raw bytes."""
        out: dict[str, object] = {
            "quantity": self.quantity,
            "value": json_value(self.value),
            "unit": self.unit,
            "storage": self.storage,
            "tariff": self.tariff,
            "subunit": self.subunit,
            "function": self.function,
            "description": self.description,
        }
        if full:
            out["error"] = self.error
            out["raw"] = self.raw.hex().upper()
        return out


def json_value(value: RecordValue) -> object:
    """A record value as JSON: numbers and text as they are, dates ISO, bytes hex."""
    if isinstance(value, date | datetime | time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex().upper()
    if isinstance(value, Decimal):
        return float(value)  # json has no decimals; a float's shortest repr prints the same digits
    return value


@dataclass(slots=True)
class _Vib:
    info: VifInfo
    notes: list[str]
    exponent: int = 0
    additive: int | None = None  # exponent of an additive constant
    direction: str | None = None
    phase: int | None = None
    modified: bool = False  # a VIFE changed the meaning
    manufacturer: bool = False
    profile: bool = False  # compact profile: the data field is an array, kept as bytes
    error: str | None = None


def parse_records(
    payload: bytes, *, medium: int, msb_first: bool = False, base_offset: int = 0, strict: bool = False
) -> tuple[list[MBusRecord], bool, list[Unparsed]]:
    """Decode the records of ``payload``: the records, whether more follow (DIF 0x1F), and what was left.

    Tolerant by default: a record that breaks the layout (cut short at the end, a reserved DIF,
    fill bytes that are not 0x2F) ends the decoding; the complete records before it are kept and
    the rest comes back as one :class:`Unparsed` (offset in the frame, the bytes, the reason).
    ``strict=True`` raises the ProtocolError instead.
    """
    records: list[MBusRecord] = []
    unparsed: list[Unparsed] = []
    pos = 0
    size = len(payload)
    while pos < size:
        start = pos
        try:
            record, pos, more = _parse_record(payload, pos, medium, msb_first, base_offset)
        except ProtocolError as exc:
            if strict:
                raise
            unparsed.append(Unparsed(base_offset + start, bytes(payload[start:]), exc.reason))
            break
        if record is not None:
            records.append(record)
        if more is not None:
            return records, more, unparsed
    return records, False, unparsed


def _parse_record(
    payload: bytes, pos: int, medium: int, msb_first: bool, base_offset: int
) -> tuple[MBusRecord | None, int, bool | None]:
    """One record from ``pos``: (record or None for filler, next position, more-follow flag at the end or None)."""
    size = len(payload)
    dif = payload[pos]
    start = pos
    pos += 1
    if dif in (0x2F, 0x7F):  # idle filler; global readout request
        return None, pos, None
    if dif in (0x0F, 0x1F):
        rest = bytes(payload[pos:])
        text = "More records follow" if dif == 0x1F else "Manufacturer specific data"
        if dif == 0x1F and rest:
            text += ", manufacturer specific data"
        return MBusRecord(None, rest, "", 0, 0, 0, "instantaneous", text, raw=rest), size, dif == 0x1F
    if dif & 0x0F == 0x0F:
        raise ProtocolError(f"reserved special DIF 0x{dif:02X}", offset=base_offset + start, frame=payload)
    difes, pos = _extension_chain(payload, pos, MAX_DIFE, "DIFE", base_offset)
    storage = (dif >> 6) & 1
    tariff = subunit = 0
    for index, dife in enumerate(difes):
        storage |= (dife & 0x0F) << (1 + 4 * index)
        tariff |= ((dife >> 4) & 0x03) << (2 * index)
        subunit |= ((dife >> 6) & 0x01) << index
    if pos >= size:
        raise ProtocolError("premature end of record: VIF missing", offset=base_offset + pos, frame=payload)
    vib, pos = _parse_vib(payload, pos, base_offset)
    value, raw, error, pos = _parse_data(payload, pos, dif & 0x0F, vib, msb_first=msb_first, base_offset=base_offset)
    function = FUNCTIONS[(dif >> 4) & 0x03]
    error = error or vib.error
    quantity = None
    numeric = isinstance(value, int | Decimal) or (isinstance(value, datetime) and vib.info.kind == "datetime")
    if numeric and error is None and not vib.modified and not vib.manufacturer:
        quantity = canonical_quantity(
            medium,
            vib.info.kind,
            storage=storage,
            tariff=tariff,
            subunit=subunit,
            function=function,
            direction=vib.direction,
            phase=vib.phase,
        )
    description = ", ".join([vib.info.description, *vib.notes])
    record = MBusRecord(quantity, value, vib.info.unit, storage, tariff, subunit, function, description, error, raw)
    return record, pos, None


def _extension_chain(payload: bytes, pos: int, limit: int, what: str, base_offset: int) -> tuple[list[int], int]:
    chain: list[int] = []
    previous = payload[pos - 1]
    while previous & 0x80:
        if pos >= len(payload):
            raise ProtocolError(f"premature end of record inside the {what}s", offset=base_offset + pos, frame=payload)
        if len(chain) == limit:
            raise ProtocolError(f"more than {limit} {what}s", offset=base_offset + pos, frame=payload)
        previous = payload[pos]
        chain.append(previous)
        pos += 1
    return chain, pos


def _parse_vib(payload: bytes, pos: int, base_offset: int) -> tuple[_Vib, int]:
    vif = payload[pos]
    pos += 1
    vifes, pos = _extension_chain(payload, pos, MAX_VIFE, "VIFE", base_offset)
    code = vif & 0x7F
    if vif in (0xFB, 0xFD):
        table = fd_vif if vif == 0xFD else fb_vif
        vib = _Vib(table(vifes[0]), [])
        rest = vifes[1:]
    elif code == 0x7F:
        return _Vib(VifInfo("Manufacturer specific"), [], manufacturer=True), pos
    elif code == 0x7C:
        if pos >= len(payload):
            raise ProtocolError("premature end: plain-text VIF length missing", offset=base_offset + pos)
        length = payload[pos]
        text_end = pos + 1 + length
        if text_end > len(payload):
            raise ProtocolError("plain-text VIF runs past the end", offset=base_offset + pos, frame=payload)
        text = values.decode_text(bytes(payload[pos + 1 : text_end]))
        pos = text_end
        vib = _Vib(VifInfo(text, text), [])
        rest = vifes
    else:
        vib = _Vib(primary_vif(code), [])
        rest = vifes
    _apply_vifes(vib, rest)
    return vib, pos


def _apply_vifes(vib: _Vib, vifes: list[int]) -> None:
    index = 0
    while index < len(vifes):
        c = vifes[index] & 0x7F
        index += 1
        if c == 0x7C and index < len(vifes):
            ext = vifes[index] & 0x7F
            index += 1
            note = _PHASES.get(ext, f"extension VIFE 0x{ext:02X}")
            vib.notes.append(note)
            if ext in (1, 2, 3):
                vib.phase = ext
            else:
                vib.modified = True
            continue
        if c == 0x7F:
            vib.notes.append("manufacturer specific VIFEs")
            vib.manufacturer = True
            return
        if 0x70 <= c <= 0x77:
            vib.exponent += (c & 0x07) - 6
        elif c == 0x7D:
            vib.exponent += 3
        elif 0x78 <= c <= 0x7B:
            vib.additive = (c & 0x03) - 3
        elif c in (0x1E, 0x1F):
            vib.profile = True
            vib.modified = True
            vib.notes.append("compact profile" + (" with register numbers" if c == 0x1E else ""))
            continue
        elif c <= 0x1F:
            if c:
                vib.error = RECORD_ERRORS.get(c, f"record error 0x{c:02X}")
            continue
        elif c == 0x3B:
            vib.direction = "import"
        elif c == 0x3C:
            vib.direction = "export"
        if c not in NEUTRAL_VIFES and not (0x70 <= c <= 0x7D):
            vib.modified = True
        vib.notes.append(combinable_vife(c))


def _parse_data(
    payload: bytes, pos: int, code: int, vib: _Vib, *, msb_first: bool, base_offset: int
) -> tuple[RecordValue, bytes, str | None, int]:
    length, coding = values.DATA_FIELDS[code]
    lvar: values.Lvar | None = None
    if coding == "lvar":
        if pos >= len(payload):
            raise ProtocolError("premature end: LVAR byte missing", offset=base_offset + pos, frame=payload)
        lvar = values.decode_lvar(payload[pos], base_offset + pos)
        pos += 1
        length = lvar.length
    if pos + length > len(payload):
        raise ProtocolError(
            f"premature end of data: record needs {length} bytes, {len(payload) - pos} left",
            offset=base_offset + pos,
            frame=payload,
        )
    raw = bytes(payload[pos : pos + length])
    pos += length
    wire = raw[::-1] if msb_first and coding in ("int", "bcd", "real") else raw
    info = vib.info
    if coding in ("none", "selection"):
        return None, raw, None, pos
    if vib.profile:
        return raw, raw, None, pos
    if lvar is not None:
        return _lvar_value(wire, lvar, vib), raw, None, pos
    if coding == "int" and info.value_type in ("date", "datetime"):
        moment = _date_value(wire)
        return moment, raw, None if moment is not None else "date/time not set or invalid", pos
    if coding == "bcd":
        number = values.decode_bcd(wire)
        if number is None:
            return None, raw, f"invalid BCD digits {wire[::-1].hex().upper()}", pos
        return _scaled(number, vib), raw, None, pos
    if coding == "real":
        real = values.decode_real(wire)
        if not math.isfinite(real):
            return None, raw, "real value is not finite", pos
        return _scaled(real, vib), raw, None, pos
    signed = info.value_type not in ("flags", "id")
    return _scaled(values.decode_int(wire, signed), vib), raw, None, pos


def _date_value(wire: bytes) -> date | datetime | time | None:
    if len(wire) == 2:
        return values.decode_date_g(wire)
    if len(wire) == 4:
        return values.decode_datetime_f(wire)
    if len(wire) == 6:
        return values.decode_datetime_i(wire)
    if len(wire) == 3:
        return values.decode_time_j(wire)
    return None


def _lvar_value(wire: bytes, lvar: values.Lvar, vib: _Vib) -> RecordValue:
    if lvar.coding == "text":
        return values.decode_text(wire)
    if lvar.coding in ("bcd", "negative_bcd"):
        number = values.decode_bcd(wire)
        if number is None:
            return wire
        return _scaled(-number if lvar.coding == "negative_bcd" else number, vib)
    return wire


def _scaled(number: int | float, vib: _Vib) -> int | Decimal:
    """The record's value exactly: an int when the VIF's exponent keeps it whole, else a Decimal
    with the VIF's resolution (a type H real from its shortest single-precision decimal)."""
    if vib.info.value_type in ("flags", "id", "text"):
        return shortest_real32(number) if isinstance(number, float) else number
    exponent = vib.info.exponent + vib.exponent
    result = (shortest_real32(number) if isinstance(number, float) else Decimal(number)).scaleb(exponent)
    if vib.additive is not None:
        result += Decimal(1).scaleb(vib.additive)
    if isinstance(number, int) and exponent >= 0 and (vib.additive or 0) >= 0:
        return int(result)
    return result
