"""HDLC frames of IEC 62056-46 (DLMS over serial lines, or over TCP through converters).

Pure functions over a buffer: ``decode(buf)`` returns ``(consumed, frame | None)``.

::

    +----+--------------------+---------+---------+---------+-------+------+-----+----+
    | 7E | format (2 bytes)   | dest.   | source  | control | HCS   | info | FCS | 7E |
    |    | 1010 S LLL LLLLLLLL| 1/2/4   | 1/2/4   | 1       | 2 (*) | 0..n | 2   |    |
    +----+--------------------+---------+---------+---------+-------+------+-----+----+

``L`` (11 bits) counts every byte between the flags; ``S`` marks a segment with more to
come. An address ends at the first byte whose low bit is 1. HCS (*) covers format to
control and is present only when there is an info field; FCS covers format to the end
of info. Both are CRC-16/X.25, sent low byte first.

Resynchronisation: bytes before an opening flag are dropped (``consumed > 0``, no frame);
a flag not followed by a format byte (``0xA?``) is dropped; a frame whose closing flag
is missing drops its opening flag and the hunt starts again at the next byte. The closing
flag is *not* consumed, so a flag shared by two back-to-back frames opens the next one.
A whole frame with a wrong HCS/FCS raises ChecksumError: over TCP the stream is reliable,
so it means a broken peer, not line noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from gxcore.errors import ChecksumError

FLAG: Final = 0x7E
MAX_FRAME: Final = 0x7FF + 2  # 11-bit length plus two flags
_MIN_LENGTH: Final = 7  # format(2) + dest(1) + source(1) + control(1) + FCS(2)


def _table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE: Final = _table()


def fcs16(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/X.25 (reflected 0x1021, init and final XOR 0xFFFF); check value 0x906E."""
    crc = 0xFFFF
    for byte in bytes(data):
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc ^ 0xFFFF


@dataclass(frozen=True, slots=True)
class HdlcFrame:
    """One whole HDLC frame, flags included in ``raw``."""

    destination: bytes
    source: bytes
    control: int
    info: bytes
    segmented: bool
    raw: bytes

    @property
    def source_address(self) -> int:
        return address_value(self.source)

    @property
    def destination_address(self) -> int:
        return address_value(self.destination)


def address_value(raw: bytes) -> int:
    """The number an HDLC address carries: 7 bits per byte, most significant first.

    A 4-byte address holds two 14-bit halves (upper: logical, lower: physical).
    """
    if len(raw) == 4:
        upper = (raw[0] >> 1) << 7 | raw[1] >> 1
        lower = (raw[2] >> 1) << 7 | raw[3] >> 1
        return upper << 14 | lower
    value = 0
    for byte in raw:
        value = value << 7 | byte >> 1
    return value


def _address(buf: bytes, start: int, end: int) -> int:
    """Index after an HDLC address starting at ``start`` (1, 2 or 4 bytes), or -1 if malformed."""
    for pos in range(start, min(start + 4, end)):
        if buf[pos] & 1:
            return -1 if pos - start == 2 else pos + 1
    return -1


def decode(buf: bytes | bytearray | memoryview) -> tuple[int, HdlcFrame | None]:
    """Take one frame (or garbage) off the front of ``buf``; ``(0, None)`` means wait for more."""
    data = bytes(buf[:MAX_FRAME])
    start = data.find(FLAG)
    if start < 0:
        return len(data), None  # no flag at all: all garbage
    if start > 0:
        return start, None  # garbage before the flag
    if len(data) < 3:
        return 0, None
    if data[1] & 0xF0 != 0xA0:
        return 1, None  # a lone or closing flag
    length = ((data[1] & 0x07) << 8) | data[2]
    if length < _MIN_LENGTH:
        return 1, None
    if len(data) < length + 2:
        return 0, None
    if data[length + 1] != FLAG:
        return 1, None
    body = data[1 : length + 1]
    dest_end = _address(body, 2, len(body))
    src_end = _address(body, dest_end, len(body)) if dest_end > 0 else -1
    if src_end < 0 or src_end >= len(body) - 2:
        return 1, None
    control = body[src_end]
    if fcs16(body[:-2]) != int.from_bytes(body[-2:], "little"):
        raise ChecksumError("HDLC FCS does not match", offset=length - 1, frame=data[: length + 2])
    info = b""
    rest = len(body) - src_end - 3  # bytes between control and FCS: HCS + info, or nothing
    if rest == 1:
        return 1, None
    if rest >= 2:
        hcs_end = src_end + 3
        if fcs16(body[: src_end + 1]) != int.from_bytes(body[src_end + 1 : hcs_end], "little"):
            raise ChecksumError("HDLC HCS does not match", offset=src_end + 2, frame=data[: length + 2])
        info = body[hcs_end:-2]
    segmented = bool(data[1] & 0x08)
    frame = HdlcFrame(body[2:dest_end], body[dest_end:src_end], control, info, segmented, data[: length + 2])
    return length + 1, frame


def encode_address(value: int, size: int = 1) -> bytes:
    """An HDLC address of ``size`` bytes (1, 2 or 4): 7 bits per byte, low bit set on the last."""
    if size not in (1, 2, 4):
        raise ValueError("HDLC addresses are 1, 2 or 4 bytes")
    out = bytearray()
    for shift in range(size - 1, -1, -1):
        out.append(((value >> (7 * shift)) & 0x7F) << 1)
    out[-1] |= 1
    return bytes(out)
