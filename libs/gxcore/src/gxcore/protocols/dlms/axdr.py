"""A-XDR ``Data`` (IEC 62056-6-2 / Green Book 9.5): a bounded, pure decoder for notification bodies.

Each value is a tag byte then its encoding::

    00 null-data                        -> None
    01 array | 02 structure  L  items   -> list (L: A-XDR length, one byte or 0x8N + N bytes)
    03 boolean (1)                      -> bool
    04 bit-string  L(bits)  bytes       -> str of "0"/"1"
    05/06 double-long (4), 0F/10/11/12 integer/long/unsigned/long-unsigned (1/2/1/2),
    14/15 long64 (8), 16 enum (1)       -> int (signed or not, big-endian)
    09 octet-string  L  bytes           -> bytes
    0A visible-string / 0C utf8  L      -> str
    0D bcd (1)                          -> int
    17 float32 (4) / 18 float64 (8)     -> float
    19 date-time (12), 1A date (5), 1B time (4)  -> bytes (the caller knows what it expects)

A length is checked against the bytes present before anything is taken, nesting is at
most :data:`MAX_DEPTH` deep, compact-array (0x13) and unknown tags are refused; every
failure is a ProtocolError naming the byte offset.
"""

from __future__ import annotations

import struct
from typing import Final

from gxcore.errors import ProtocolError

MAX_DEPTH: Final = 16
AxdrValue = None | bool | int | float | str | bytes | list["AxdrValue"]
_FIXED: Final[dict[int, tuple[int, str]]] = {
    0x05: (4, ">i"),
    0x06: (4, ">I"),
    0x0F: (1, ">b"),
    0x10: (2, ">h"),
    0x11: (1, ">B"),
    0x12: (2, ">H"),
    0x14: (8, ">q"),
    0x15: (8, ">Q"),
    0x16: (1, ">B"),
    0x17: (4, ">f"),
    0x18: (8, ">d"),
}
_OCTETS: Final = {0x19: 12, 0x1A: 5, 0x1B: 4}


def decode(data: bytes, pos: int = 0) -> tuple[AxdrValue, int]:
    """One value at ``pos``: ``(value, position after it)``."""
    return _value(bytes(data), pos, 0)


def decode_all(data: bytes) -> AxdrValue:
    """Exactly one value filling ``data``; trailing bytes are an error."""
    value, end = decode(data)
    if end != len(data):
        raise ProtocolError(f"{len(data) - end} bytes after the A-XDR value", offset=end, frame=data)
    return value


def read_length(data: bytes, pos: int) -> tuple[int, int]:
    """A-XDR length at ``pos``: ``(length, position after it)``."""
    if pos >= len(data):
        raise ProtocolError("A-XDR length missing", offset=pos, frame=data)
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    size = first & 0x7F
    if not 1 <= size <= 4 or pos + 1 + size > len(data):
        raise ProtocolError("A-XDR length badly encoded", offset=pos, frame=data)
    return int.from_bytes(data[pos + 1 : pos + 1 + size], "big"), pos + 1 + size


def _take(data: bytes, pos: int, size: int, what: str) -> bytes:
    if pos + size > len(data):
        raise ProtocolError(f"{what} of {size} bytes runs past the end", offset=pos, frame=data)
    return data[pos : pos + size]


def _value(data: bytes, pos: int, depth: int) -> tuple[AxdrValue, int]:
    if depth > MAX_DEPTH:
        raise ProtocolError(f"A-XDR nesting deeper than {MAX_DEPTH}", offset=pos, frame=data)
    if pos >= len(data):
        raise ProtocolError("A-XDR value missing", offset=pos, frame=data)
    tag = data[pos]
    pos += 1
    if tag == 0x00:
        return None, pos
    if tag in (0x01, 0x02):
        count, pos = read_length(data, pos)
        if count > len(data) - pos:  # every item takes at least its tag byte
            raise ProtocolError(f"{count} items cannot fit in {len(data) - pos} bytes", offset=pos, frame=data)
        items: list[AxdrValue] = []
        for _ in range(count):
            item, pos = _value(data, pos, depth + 1)
            items.append(item)
        return items, pos
    if tag == 0x03:
        return _take(data, pos, 1, "boolean")[0] != 0, pos + 1
    if tag in _FIXED:
        size, layout = _FIXED[tag]
        number = struct.unpack(layout, _take(data, pos, size, "number"))[0]
        return number, pos + size
    if tag == 0x0D:
        digit = _take(data, pos, 1, "bcd")[0]
        return (digit >> 4) * 10 + (digit & 0x0F), pos + 1
    if tag == 0x04:
        bits, pos = read_length(data, pos)
        raw = _take(data, pos, (bits + 7) // 8, "bit-string")
        return "".join(f"{b:08b}" for b in raw)[:bits], pos + len(raw)
    if tag in (0x09, 0x0A, 0x0C):
        size, pos = read_length(data, pos)
        raw = _take(data, pos, size, "string")
        if tag == 0x09:
            return raw, pos + size
        try:
            return raw.decode("ascii" if tag == 0x0A else "utf-8"), pos + size
        except UnicodeDecodeError:
            raise ProtocolError("string is not valid text", offset=pos, frame=data) from None
    if tag in _OCTETS:
        size = _OCTETS[tag]
        return _take(data, pos, size, "date/time"), pos + size
    raise ProtocolError(f"A-XDR type {tag:#04x} is not supported", offset=pos - 1, frame=data)
