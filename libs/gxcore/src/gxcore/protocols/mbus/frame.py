"""Wired M-Bus link layer (EN 13757-2): frames, checksum, a pure framer and request encoders.

Frame layouts (all values one byte unless noted)::

    single character   E5
    short frame        10 | C | A | CS | 16                        CS = (C + A) mod 256
    control frame      68 | L=03 | L=03 | 68 | C | A | CI | CS | 16
    long frame         68 | L | L | 68 | C | A | CI | data (L-3 bytes) | CS | 16
                       CS = (C + A + CI + sum(data)) mod 256, 3 <= L <= 255

Resynchronisation rule of :func:`decode_frame`: a frame can only start with E5, 10 or
68. Bytes before the first such byte are garbage and are dropped in one step. If a
start byte opens something that is not a valid frame (wrong stop byte, L fields that
differ, a bad checksum), exactly that start byte is dropped, so a valid frame that
begins inside the rejected bytes is still found on the next call.
"""

from __future__ import annotations

from dataclasses import dataclass

from gxcore.errors import ChecksumError, FramingError

ACK = 0xE5
SHORT_START = 0x10
LONG_START = 0x68
STOP = 0x16
MAX_FRAME = 261  # 68 L L 68 + 255 bytes + CS 16: the longest possible wired frame

# Control field (C) values, master to slave. FCB (0x20) and FCV (0x10) are ORed in.
C_SND_NKE = 0x40
C_SND_UD = 0x53
C_REQ_UD1 = 0x5A
C_REQ_UD2 = 0x5B
C_RSP_UD = 0x08
FCB = 0x20
FCV = 0x10

# Addresses.
ADDRESS_UNCONFIGURED = 0
MAX_PRIMARY = 250
ADDRESS_NETWORK = 0xFD  # the slave selected by secondary address
ADDRESS_BROADCAST_REPLY = 0xFE
ADDRESS_BROADCAST = 0xFF

# Control information (CI) values used by the master.
CI_SELECT_SECONDARY = 0x52
CI_APPLICATION_RESET = 0x50


@dataclass(frozen=True, slots=True)
class Ack:
    """The single character E5: the slave confirms."""


@dataclass(frozen=True, slots=True)
class ShortFrame:
    """Short frame: a request without user data (SND_NKE, REQ_UD2)."""

    control: int
    address: int


@dataclass(frozen=True, slots=True)
class ControlFrame:
    """Control frame: a long frame with CI and no data."""

    control: int
    address: int
    ci: int


@dataclass(frozen=True, slots=True)
class LongFrame:
    """Long frame: user data in either direction (SND_UD, RSP_UD)."""

    control: int
    address: int
    ci: int
    data: bytes


Frame = Ack | ShortFrame | ControlFrame | LongFrame


def checksum(data: bytes | bytearray | memoryview) -> int:
    """Arithmetic sum of ``data`` modulo 256, as EN 13757-2 defines it."""
    return sum(data) & 0xFF


def _check_byte(name: str, value: int) -> None:
    if not 0 <= value <= 0xFF:
        raise ValueError(f"{name} must be one byte, got {value}")


def encode_frame(frame: Frame) -> bytes:
    """Serialise one frame to bytes (inverse of :func:`decode_frame`)."""
    if isinstance(frame, Ack):
        return bytes([ACK])
    _check_byte("control", frame.control)
    _check_byte("address", frame.address)
    if isinstance(frame, ShortFrame):
        body = bytes([frame.control, frame.address])
        return bytes([SHORT_START, *body, checksum(body), STOP])
    _check_byte("ci", frame.ci)
    data = frame.data if isinstance(frame, LongFrame) else b""
    if len(data) > 252:
        raise ValueError(f"long frame data is at most 252 bytes, got {len(data)}")
    body = bytes([frame.control, frame.address, frame.ci]) + data
    length = len(body)
    return bytes([LONG_START, length, length, LONG_START]) + body + bytes([checksum(body), STOP])


def _next_start(buf: bytes | bytearray, begin: int) -> int:
    for index in range(begin, len(buf)):
        if buf[index] in (ACK, SHORT_START, LONG_START):
            return index
    return len(buf)


def decode_frame(buf: bytes | bytearray) -> tuple[int, Frame | None]:
    """Take one frame from the start of ``buf``.

    Returns ``(0, None)`` when more bytes are needed, ``(n, frame)`` for a frame of
    ``n`` bytes, and ``(n, None)`` with ``n > 0`` when ``n`` bytes of garbage were
    dropped (see the module docstring for the resynchronisation rule).
    """
    if not buf:
        return 0, None
    first = buf[0]
    if first == ACK:
        return 1, Ack()
    if first == SHORT_START:
        if len(buf) < 5:
            return 0, None
        if buf[4] != STOP or checksum(buf[1:3]) != buf[3]:
            return 1, None
        return 5, ShortFrame(control=buf[1], address=buf[2])
    if first == LONG_START:
        if len(buf) < 4:
            return 0, None
        length = buf[1]
        if length != buf[2] or buf[3] != LONG_START or length < 3:
            return 1, None
        total = length + 6
        if len(buf) < total:
            return 0, None
        body = bytes(buf[4 : 4 + length])
        if buf[total - 1] != STOP or checksum(body) != buf[total - 2]:
            return 1, None
        if length == 3:
            return total, ControlFrame(control=body[0], address=body[1], ci=body[2])
        return total, LongFrame(control=body[0], address=body[1], ci=body[2], data=body[3:])
    return _next_start(buf, 1), None


def parse_frame(data: bytes) -> Frame:
    """Decode exactly one frame that fills ``data``; raise FramingError/ChecksumError otherwise."""
    if not data:
        raise FramingError("empty input, expected an M-Bus frame", offset=0)
    first = data[0]
    if first not in (ACK, SHORT_START, LONG_START):
        raise FramingError(f"0x{first:02X} is not an M-Bus start byte (E5, 10, 68)", offset=0, frame=data)
    if first == LONG_START and len(data) >= 4:
        if data[1] != data[2]:
            raise FramingError(f"L fields differ: {data[1]} != {data[2]}", offset=1, frame=data)
        if data[3] != LONG_START:
            raise FramingError("second start byte is not 0x68", offset=3, frame=data)
        if data[1] < 3:
            raise FramingError(f"L field {data[1]} is below the minimum 3", offset=1, frame=data)
        total = data[1] + 6
        body_sum = checksum(data[4 : total - 2])
        if len(data) >= total and data[total - 1] == STOP and body_sum != data[total - 2]:
            raise ChecksumError(
                f"checksum 0x{data[total - 2]:02X} != computed 0x{body_sum:02X}", offset=total - 2, frame=data
            )
    if first == SHORT_START and len(data) >= 5 and data[4] == STOP and checksum(data[1:3]) != data[3]:
        raise ChecksumError("short frame checksum does not match", offset=3, frame=data)
    consumed, frame = decode_frame(data)
    if frame is None:
        if consumed == 0:
            raise FramingError(f"frame truncated after {len(data)} bytes", offset=len(data), frame=data)
        raise FramingError("bytes do not form an M-Bus frame (stop byte or layout)", offset=0, frame=data)
    if consumed != len(data):
        raise FramingError(f"{len(data) - consumed} trailing bytes after the frame", offset=consumed, frame=data)
    return frame


# -- request encoders ---------------------------------------------------------------


def snd_nke(address: int) -> bytes:
    """SND_NKE: reset the link of ``address`` (the next REQ_UD2 must carry FCB=1)."""
    return encode_frame(ShortFrame(C_SND_NKE, address))


def req_ud2(address: int, fcb: bool) -> bytes:
    """REQ_UD2 with FCV set and the given frame count bit."""
    return encode_frame(ShortFrame(C_REQ_UD2 | (FCB if fcb else 0), address))


def snd_ud(address: int, ci: int, data: bytes, fcb: bool = False) -> bytes:
    """SND_UD carrying ``ci`` and ``data`` to ``address``."""
    return encode_frame(LongFrame(C_SND_UD | (FCB if fcb else 0), address, ci, data))


def select_secondary(mask: SecondaryAddress | str) -> bytes:
    """SND_UD with CI 0x52 to address 0xFD that selects the slave(s) matching ``mask``."""
    address = mask if isinstance(mask, SecondaryAddress) else SecondaryAddress.parse(mask)
    return snd_ud(ADDRESS_NETWORK, CI_SELECT_SECONDARY, address.to_bytes())


# -- secondary addresses ------------------------------------------------------------


def _manufacturer_code(value: int) -> str:
    letters = [(value >> shift) & 0x1F for shift in (10, 5, 0)]
    if all(1 <= letter <= 26 for letter in letters):
        return "".join(chr(64 + letter) for letter in letters)
    return f"{value:04X}"


def manufacturer_code(value: int) -> str:
    """The three-letter FLAG code of a 16-bit manufacturer field (hex if not letters)."""
    return _manufacturer_code(value & 0x7FFF)


def manufacturer_value(code: str) -> int:
    """The 16-bit field for a three-letter manufacturer code ("KAM" -> 0x2C2D)."""
    if len(code) != 3 or not code.isalpha() or not code.isascii():
        raise ValueError(f"manufacturer code must be three letters, got {code!r}")
    value = 0
    for letter in code.upper():
        value = (value << 5) | (ord(letter) - 64)
    return value


@dataclass(frozen=True, slots=True)
class SecondaryAddress:
    """An 8-byte secondary address as text: 8 ID digits + manufacturer, version, medium in hex.

    ``F`` is a wildcard: any ID digit, ``FFFF`` any manufacturer, ``FF`` any version
    or medium. The text form is the 16 characters libmbus uses, e.g. ``12345678 2C2D 08 04``
    without spaces: ``123456782C2D0804``.
    """

    id_digits: str  # 8 characters, each 0-9 or F
    manufacturer: int  # 0xFFFF = wildcard
    version: int  # 0xFF = wildcard
    medium: int  # 0xFF = wildcard

    def __post_init__(self) -> None:
        if len(self.id_digits) != 8 or any(ch not in "0123456789F" for ch in self.id_digits):
            raise ValueError(f"ID must be 8 characters of 0-9 or F, got {self.id_digits!r}")
        for name, value, top in (("manufacturer", self.manufacturer, 0xFFFF), ("version", self.version, 0xFF)):
            if not 0 <= value <= top:
                raise ValueError(f"{name} out of range: {value}")
        if not 0 <= self.medium <= 0xFF:
            raise ValueError(f"medium out of range: {self.medium}")

    @classmethod
    def parse(cls, text: str) -> SecondaryAddress:
        """Parse the 16-character form; raise ConfigurationError-free ValueError on bad text."""
        clean = text.replace(" ", "").upper()
        if len(clean) != 16:
            raise ValueError(f"secondary address must be 16 hex characters, got {text!r}")
        try:
            manufacturer, version, medium = int(clean[8:12], 16), int(clean[12:14], 16), int(clean[14:16], 16)
        except ValueError:
            raise ValueError(f"secondary address {text!r} is not hex") from None
        return cls(clean[:8], manufacturer, version, medium)

    @classmethod
    def wildcard(cls) -> SecondaryAddress:
        return cls("FFFFFFFF", 0xFFFF, 0xFF, 0xFF)

    @classmethod
    def from_bytes(cls, raw: bytes) -> SecondaryAddress:
        """Decode the 8 bytes of a selection (ID LSB first, man LSB first, version, medium)."""
        if len(raw) != 8:
            raise FramingError(f"secondary address is 8 bytes, got {len(raw)}", frame=raw)
        digits = raw[3::-1].hex().upper()
        if any(ch not in "0123456789F" for ch in digits):
            raise FramingError("secondary address ID is not BCD", offset=0, frame=raw)
        return cls(digits, raw[4] | (raw[5] << 8), raw[6], raw[7])

    def to_bytes(self) -> bytes:
        raw_id = bytes.fromhex(self.id_digits)[::-1]
        return raw_id + bytes([self.manufacturer & 0xFF, self.manufacturer >> 8, self.version, self.medium])

    def __str__(self) -> str:
        return f"{self.id_digits}{self.manufacturer:04X}{self.version:02X}{self.medium:02X}"

    @property
    def manufacturer_code(self) -> str:
        return "*" if self.manufacturer == 0xFFFF else manufacturer_code(self.manufacturer)

    def matches(self, other: SecondaryAddress) -> bool:
        """True if the concrete address ``other`` matches this (possibly wildcard) mask."""
        if any(m not in ("F", o) for m, o in zip(self.id_digits, other.id_digits, strict=True)):
            return False
        return (
            self.manufacturer in (0xFFFF, other.manufacturer)
            and self.version in (0xFF, other.version)
            and self.medium in (0xFF, other.medium)
        )

    def with_digit(self, position: int, digit: int) -> SecondaryAddress:
        """A copy with ID digit ``position`` (0 = most significant) set to ``digit``."""
        digits = self.id_digits[:position] + str(digit) + self.id_digits[position + 1 :]
        return SecondaryAddress(digits, self.manufacturer, self.version, self.medium)

    def first_wildcard(self) -> int | None:
        """Position of the first wildcard ID digit, or None when the ID is complete."""
        index = self.id_digits.find("F")
        return None if index < 0 else index
