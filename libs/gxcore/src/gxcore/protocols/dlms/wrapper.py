"""The DLMS/COSEM wrapper (IEC 62056-47, Green Book "TCP-UDP based transport layer").

Pure functions over a buffer: ``decode(buf)`` returns ``(consumed, frame | None)``.

::

    0         2         4         6         8
    +---------+---------+---------+---------+---------------------------+
    | version | source  | dest.   | length  | APDU (length bytes)       |
    | 0x0001  | wPort   | wPort   | u16 BE  |                           |
    +---------+---------+---------+---------+---------------------------+

All header fields are unsigned 16-bit big-endian. The client's wPort is its SAP (16 for
the public client), the meter's is its logical device (1 for the management device).

Resynchronisation: none. The wrapper has no start flag or checksum to hunt for; over TCP
a header that is wrong (version not 1, length above the agreed maximum) means the byte
stream is out of step for good, so ``decode`` raises and the caller drops the connection.
An incomplete frame is simply ``(0, None)``: nothing consumed, wait for more bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from gxcore.errors import FramingError

HEADER_LENGTH: Final = 8
VERSION: Final = 0x0001
MAX_APDU: Final = 0xFFFF
_HEADER: Final = struct.Struct(">HHHH")


@dataclass(frozen=True, slots=True)
class WrapperFrame:
    """One whole wrapper frame: addresses, the APDU, and the raw bytes it came from."""

    source: int
    destination: int
    apdu: bytes
    raw: bytes


def encode(source: int, destination: int, apdu: bytes) -> bytes:
    """Wrap ``apdu`` for sending from ``source`` to ``destination``."""
    if len(apdu) > MAX_APDU:
        raise ValueError(f"APDU of {len(apdu)} bytes does not fit a wrapper frame")
    return _HEADER.pack(VERSION, source, destination, len(apdu)) + apdu


def decode(buf: bytes | bytearray | memoryview, *, max_apdu: int = MAX_APDU) -> tuple[int, WrapperFrame | None]:
    """Take one frame off the front of ``buf``: ``(consumed, frame)`` or ``(0, None)`` if incomplete."""
    if len(buf) < HEADER_LENGTH:
        return 0, None
    version, source, destination, length = _HEADER.unpack_from(buf, 0)
    if version != VERSION:
        raise FramingError(f"wrapper version is {version:#06x}, expected 0x0001", offset=0, frame=buf[:HEADER_LENGTH])
    if length > max_apdu:
        raise FramingError(
            f"wrapper length {length} exceeds the agreed maximum {max_apdu}", offset=6, frame=buf[:HEADER_LENGTH]
        )
    end = HEADER_LENGTH + length
    if len(buf) < end:
        return 0, None
    raw = bytes(buf[:end])  # no copy when ``buf`` is bytes holding exactly this frame
    return end, _frame(source, destination, raw[HEADER_LENGTH:], raw)


# Every reply frame is built here, and a frozen dataclass's __init__ goes through
# object.__setattr__ once per field; setting the slots directly costs a third of that.
_new = object.__new__
_slot = vars(WrapperFrame)  # the slots' member descriptors
_set_source = _slot["source"].__set__
_set_destination = _slot["destination"].__set__
_set_apdu = _slot["apdu"].__set__
_set_raw = _slot["raw"].__set__


def _frame(source: int, destination: int, apdu: bytes, raw: bytes) -> WrapperFrame:
    """``WrapperFrame(source, destination, apdu, raw)``, without the frozen-dataclass detour."""
    frame: WrapperFrame = _new(WrapperFrame)
    _set_source(frame, source)
    _set_destination(frame, destination)
    _set_apdu(frame, apdu)
    _set_raw(frame, raw)
    return frame
