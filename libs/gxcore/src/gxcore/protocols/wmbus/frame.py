"""Wireless M-Bus data link layer (EN 13757-4): CRC blocks of frame formats A and B, DLL header.

Frame format A (L counts every byte after L, CRCs excluded)::

    block 1:  L | C | M (2) | A (6) | CRC (2)          10 data bytes
    block n:  16 data bytes | CRC (2)                   ... the last block may be shorter

Frame format B (L counts every byte after L, CRCs included)::

    block 1:  L | C | M (2) | A (6)                     no CRC of its own
    block 2:  CI + up to 115 bytes | CRC (2)            CRC covers blocks 1 and 2
    block 3:  the rest | CRC (2)                        only when L > 127

The CRC is EN 13757-4's: polynomial 0x3D65, initial value 0, final XOR 0xFFFF, sent
high byte first. Receivers and TCP feeds deliver telegrams with the CRCs still in or
already removed; :func:`strip_crcs` takes either, chosen by ``crc`` or detected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gxcore.errors import ChecksumError, FramingError
from gxcore.protocols.mbus.frame import manufacturer_code
from gxcore.protocols.mbus.quantities import medium_text
from gxcore.protocols.mbus.telegram import bcd_id

CrcMode = Literal["auto", "present", "absent"]
FrameFormat = Literal["auto", "A", "B"]

DLL_SIZE = 10  # L C M(2) A(6)
MAX_TELEGRAM = 256 + 2 * 17  # L = 255 plus the most CRCs format A can carry

_TABLE = []
for _byte in range(256):
    _crc = _byte << 8
    for _ in range(8):
        _crc = ((_crc << 1) ^ 0x3D65) if _crc & 0x8000 else (_crc << 1)
    _TABLE.append(_crc & 0xFFFF)


def crc16(data: bytes | bytearray | memoryview) -> int:
    """EN 13757-4 CRC-16 of ``data``."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _TABLE[((crc >> 8) ^ byte) & 0xFF]
    return crc ^ 0xFFFF


def _blocks_a(length: int) -> list[int]:
    """Data sizes of the format A blocks for L field ``length``."""
    sizes = [DLL_SIZE]
    remaining = length + 1 - DLL_SIZE
    while remaining > 0:
        sizes.append(min(16, remaining))
        remaining -= sizes[-1]
    return sizes


def add_crcs(telegram: bytes, frame_format: Literal["A", "B"] = "A") -> bytes:
    """Insert the CRCs of ``frame_format`` into a telegram given without them (L as for format A)."""
    if not telegram or telegram[0] + 1 != len(telegram):
        raise FramingError("L field does not match the telegram length", offset=0, frame=telegram)
    if frame_format == "A":
        out = bytearray()
        pos = 0
        for size in _blocks_a(telegram[0]):
            block = telegram[pos : pos + size]
            out += block + crc16(block).to_bytes(2, "big")
            pos += size
        return bytes(out)
    body = bytearray(telegram)
    length = len(body) - 1 + 2 + (2 if len(body) > 126 else 0)
    if length > 255:
        raise FramingError("telegram too long for format B", offset=0, frame=telegram)
    body[0] = length
    if len(body) <= 126:
        return bytes(body + crc16(body).to_bytes(2, "big"))
    first, rest = body[:126], body[126:]
    return bytes(first + crc16(first).to_bytes(2, "big") + rest + crc16(rest).to_bytes(2, "big"))


def frame_length_a(length: int) -> int:
    """The size on the air of a format A frame whose L field is ``length`` (data plus a CRC per block)."""
    sizes = _blocks_a(length)
    return sum(sizes) + 2 * len(sizes)


def _strip_a(data: bytes) -> bytes | None:
    sizes = _blocks_a(data[0])
    if len(data) != sum(sizes) + 2 * len(sizes):
        return None
    out = bytearray()
    pos = 0
    for size in sizes:
        block = data[pos : pos + size]
        crc = int.from_bytes(data[pos + size : pos + size + 2], "big")
        if crc16(block) != crc:
            raise ChecksumError(f"format A block CRC 0x{crc:04X} does not match", offset=pos + size, frame=data)
        out += block
        pos += size + 2
    return bytes(out)


def _strip_b(data: bytes, strict: bool) -> bytes | None:
    length = data[0]
    if len(data) != length + 1 or length < DLL_SIZE + 2:
        return None
    pieces: list[tuple[int, int]] = []  # (start, end) of CRC-protected spans, CRC follows end
    if len(data) <= 128:
        pieces.append((0, len(data) - 2))
    else:
        pieces.extend(((0, 126), (128, len(data) - 2)))
    out = bytearray()
    for start, end in pieces:
        crc = int.from_bytes(data[end : end + 2], "big")
        if crc16(data[start:end]) != crc:
            if strict:
                raise ChecksumError(f"format B CRC 0x{crc:04X} does not match", offset=end, frame=data)
            return None
        out += data[start:end]
    out[0] = len(out) - 1
    return bytes(out)


def strip_crcs(data: bytes, *, crc: CrcMode = "auto", frame_format: FrameFormat = "auto") -> bytes:
    """Return the telegram without CRCs, L set to the CRC-free length (as format A counts it).

    ``crc="absent"`` takes ``data`` as it is; ``"present"`` requires CRCs and checks them;
    ``"auto"`` decides from the L field: a length that only format A with CRCs explains
    is checked as such; a length of L+1 is format B with CRCs when those CRCs hold and
    otherwise a telegram whose CRCs a receiver already removed.
    """
    if len(data) < DLL_SIZE + 1:
        raise FramingError(f"telegram of {len(data)} bytes is shorter than the link header", frame=data)
    if len(data) > MAX_TELEGRAM:
        raise FramingError(f"telegram of {len(data)} bytes is longer than any wM-Bus frame", frame=data)
    if crc == "absent":
        if data[0] + 1 != len(data):
            raise FramingError(f"L field {data[0]} does not match {len(data)} bytes", offset=0, frame=data)
        return bytes(data)
    formats = ("A", "B") if frame_format == "auto" else (frame_format,)
    for fmt in formats:
        stripped = _strip_a(data) if fmt == "A" else _strip_b(data, strict=crc == "present")
        if stripped is not None:
            return stripped
    if crc == "auto" and data[0] + 1 == len(data):
        return bytes(data)
    raise FramingError(
        f"length {len(data)} fits no frame format for L field {data[0]} (crc={crc}, format={frame_format})",
        offset=0,
        frame=data,
    )


@dataclass(frozen=True, slots=True)
class LinkHeader:
    """The wM-Bus data link layer header: C field, manufacturer and address."""

    length: int
    control: int
    manufacturer: str
    manufacturer_raw: bytes
    id: str
    version: int
    device_type: int
    address_raw: bytes  # ID (4) + version + type, as sent: part of the mode 5 IV

    @property
    def medium(self) -> str:
        return medium_text(self.device_type)


def parse_link_header(telegram: bytes) -> LinkHeader:
    """Decode L, C, M and A of a CRC-free telegram."""
    if len(telegram) < DLL_SIZE + 1:
        raise FramingError("telegram too short for the link header and CI", offset=len(telegram), frame=telegram)
    man = int.from_bytes(telegram[2:4], "little")
    return LinkHeader(
        length=telegram[0],
        control=telegram[1],
        manufacturer=manufacturer_code(man),
        manufacturer_raw=bytes(telegram[2:4]),
        id=bcd_id(bytes(telegram[4:8])),
        version=telegram[8],
        device_type=telegram[9],
        address_raw=bytes(telegram[4:10]),
    )
