"""Profile generic (class 7) specifics: capture objects, range selective access, buffer rows.

A range read uses selective access selector 1 (range_descriptor, Blue Book 4.3.6)::

    01                                selector 1: range_descriptor
    02 04                             structure of 4
       02 04                          restricting_object: capture_object_definition
          12 <class u16>              class_id (the clock, 8)
          09 06 <logical name>        0.0.1.0.0.255
          0F <attribute i8>           2 (time)
          12 <data index u16>         0
       09 0C <date-time>              from_value (inclusive)
       09 0C <date-time>              to_value (inclusive)
       01 00                          selected_values: empty array = every column

A read by entry uses selector 2 (entry_descriptor)::

    02                                selector 2: entry_descriptor
    02 04                             structure of 4
       06 <u32>  06 <u32>             from_entry, to_entry (1 = oldest kept; to 0 = newest)
       12 <u16>  12 <u16>             from_selected_value, to_selected_value (1.., 0 = last column)
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from gxcore.errors import ProtocolError
from gxcore.protocols.dlms.cosem_time import decode_datetime, encode_datetime, is_unspecified
from gxcore.protocols.dlms.obis import obis_from_bytes, obis_to_bytes, parse_obis
from gxcore.protocols.dlms.parameters import CLASS_CLOCK, CLASS_DATA

Row = tuple[datetime, list[object]]
# A-XDR tag -> fixed encoding of the integer types a simulated buffer holds
# (double-long-unsigned 0x06, double-long 0x05, long-unsigned 0x12, long 0x10).
VALUE_FORMATS: Final[dict[int, struct.Struct]] = {
    0x06: struct.Struct(">BI"),
    0x05: struct.Struct(">Bi"),
    0x12: struct.Struct(">BH"),
    0x10: struct.Struct(">Bh"),
}


@dataclass(frozen=True, slots=True)
class CaptureObject:
    """One column of a profile: which attribute of which object is captured."""

    class_id: int
    obis: str
    attribute: int
    data_index: int = 0

    @property
    def is_clock(self) -> bool:
        return self.class_id == CLASS_CLOCK and self.attribute == 2

    @property
    def is_status(self) -> bool:
        """An AMR status word (Data 0-x:96.10.n), whose value flags the whole row."""
        _a, _b, c, d, _e, _f = parse_obis(self.obis)
        return self.class_id == CLASS_DATA and c == 96 and d == 10


def parse_capture_objects(value: object) -> tuple[CaptureObject, ...]:
    """Decode attribute 3 (array of {class_id, logical_name, attribute_index, data_index})."""
    if not isinstance(value, list):
        raise ProtocolError("capture objects are not an array")
    columns: list[CaptureObject] = []
    for pos, item in enumerate(value):
        if not (isinstance(item, list) and len(item) == 4):
            raise ProtocolError(f"capture object {pos} is not a structure of 4")
        class_id, ln, attribute, data_index = item
        if not (isinstance(class_id, int) and isinstance(ln, bytes | bytearray)):
            raise ProtocolError(f"capture object {pos} has no class id or logical name")
        if not (isinstance(attribute, int) and isinstance(data_index, int)):
            raise ProtocolError(f"capture object {pos} has no attribute or data index")
        # The Blue Book types (long-unsigned, integer, long-unsigned): a range read sends them back.
        if not (0 <= class_id <= 0xFFFF and -128 <= attribute <= 127 and 0 <= data_index <= 0xFFFF):
            raise ProtocolError(f"capture object {pos} has a class id, attribute or data index out of range")
        columns.append(CaptureObject(class_id, obis_from_bytes(ln), attribute, data_index))
    return tuple(columns)


def encode_range_selection(restricting: CaptureObject, start: datetime, end: datetime) -> bytes:
    """Selector byte and parameters of a by-range read over ``restricting`` (the clock column)."""
    return b"".join(
        (
            b"\x01\x02\x04\x02\x04",
            b"\x12" + struct.pack(">H", restricting.class_id),
            b"\x09\x06" + obis_to_bytes(restricting.obis),
            b"\x0f" + struct.pack(">b", restricting.attribute),
            b"\x12" + struct.pack(">H", restricting.data_index),
            b"\x09\x0c" + encode_datetime(start),
            b"\x09\x0c" + encode_datetime(end),
            b"\x01\x00",
        )
    )


def encode_entry_selection(first: int, last: int, first_column: int = 1, last_column: int = 0) -> bytes:
    """Selector byte and parameters of a by-entry read (see the module doc)."""
    return b"".join(
        (
            b"\x02\x02\x04",
            b"\x06" + struct.pack(">I", first),
            b"\x06" + struct.pack(">I", last),
            b"\x12" + struct.pack(">H", first_column),
            b"\x12" + struct.pack(">H", last_column),
        )
    )


def clock_column(columns: tuple[CaptureObject, ...]) -> int:
    """Index of the capture-time column; ProtocolError if the profile has none."""
    for pos, col in enumerate(columns):
        if col.is_clock:
            return pos
    raise ProtocolError("profile captures no clock, so rows have no time and cannot be read by range")


def decode_rows(value: object, columns: tuple[CaptureObject, ...], capture_period: int | None) -> list[Row]:
    """Rows of the buffer as ``(capture time UTC, column values)``.

    A row whose time is null-data or empty (compact profiles) is one ``capture_period``
    after the previous row; without a period such a row is an error, not a guess. A buffer of
    null-data is no rows: meters (and gurux's own server) answer so for a selection with no entry,
    such as a range shorter than one capture period.
    """
    if value is None:
        return []
    if not isinstance(value, list):
        raise ProtocolError(f"profile buffer is not an array: {type(value).__name__} {value!r:.40}")
    at_col = clock_column(columns)
    rows: list[Row] = []
    previous: datetime | None = None
    for pos, row in enumerate(value):
        if not (isinstance(row, list) and len(row) == len(columns)):
            raise ProtocolError(f"profile row {pos} does not have {len(columns)} columns")
        raw_time = row[at_col]
        if raw_time is None or (isinstance(raw_time, bytes | bytearray) and is_unspecified(raw_time)):
            if previous is None or not capture_period:
                raise ProtocolError(f"profile row {pos} has no time and none can be inferred")
            try:
                at = previous + timedelta(seconds=capture_period)
            except OverflowError:  # a period (up to 136 years in a u32) that carries the row past 9999
                raise ProtocolError(
                    f"profile row {pos}: capture period {capture_period} s runs past year 9999"
                ) from None
        elif isinstance(raw_time, bytes | bytearray):
            at = decode_datetime(raw_time)
        else:
            raise ProtocolError(f"profile row {pos} time is not an octet string")
        rows.append((at, row))
        previous = at
    return rows


def needs_capture_period(value: object, columns: tuple[CaptureObject, ...]) -> bool:
    """True if some row leaves its time out, so attribute 4 (capture period) must be read."""
    if not isinstance(value, list):
        return False
    at_col = clock_column(columns)
    for row in value:
        if isinstance(row, list) and len(row) > at_col:
            t = row[at_col]
            if t is None or (isinstance(t, bytes | bytearray) and not t):
                return True
    return False


def encode_buffer(rows: Sequence[tuple[datetime, Sequence[int]]], columns: list[int], types: list[int]) -> bytes:
    """A-XDR array of row structures: clock as a 12-byte octet string, registers in their types."""
    out = bytearray(b"\x01")
    out += _length(len(rows))
    head = b"\x02" + _length(len(columns))
    for at, values in rows:
        out += head
        for col in columns:
            if col == 0:
                out += b"\x09\x0c" + encode_datetime(at)
            else:
                tag = types[col - 1]
                out += VALUE_FORMATS[tag].pack(tag, values[col - 1])
    return bytes(out)


def _length(n: int) -> bytes:
    """A-XDR length: one byte below 0x80, else 0x8N followed by N bytes."""
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body
