"""Data field codings of EN 13757-3 annex A: integers, BCD, real, LVAR, dates (types G, F, J, I).

Each decoder takes the raw data bytes in wire order (LSB first) and returns a Python
value or raises :class:`gxcore.errors.ProtocolError`. BCD fields with digits A-F are
the meter's "no value" marker: :func:`decode_bcd` returns None for those and the
caller records why, so nothing half-decoded passes silently.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import date, datetime, time

from gxcore.errors import ProtocolError

# DIF data field code -> (length in bytes, coding). Length -1 means "variable" (LVAR).
DATA_FIELDS: dict[int, tuple[int, str]] = {
    0x0: (0, "none"),
    0x1: (1, "int"),
    0x2: (2, "int"),
    0x3: (3, "int"),
    0x4: (4, "int"),
    0x5: (4, "real"),
    0x6: (6, "int"),
    0x7: (8, "int"),
    0x8: (0, "selection"),
    0x9: (1, "bcd"),
    0xA: (2, "bcd"),
    0xB: (3, "bcd"),
    0xC: (4, "bcd"),
    0xD: (-1, "lvar"),
    0xE: (6, "bcd"),
}


def decode_int(raw: bytes, signed: bool = True) -> int:
    """Type B (signed) or type C (unsigned) integer, LSB first."""
    return int.from_bytes(raw, "little", signed=signed)


def decode_bcd(raw: bytes) -> int | None:
    """Type A BCD, LSB first; an F in the top digit means negative. None if other digits are A-F."""
    digits = raw[::-1].hex().upper()
    negative = digits.startswith("F")
    if negative:
        digits = digits[1:] or "0"
    if not digits.isdigit():
        return None
    value = int(digits)
    return -value if negative else value


def decode_real(raw: bytes) -> float:
    """Type H: IEEE 754 single precision, LSB first."""
    return float(struct.unpack("<f", raw)[0])


@dataclass(frozen=True, slots=True)
class Lvar:
    """Meaning of an LVAR byte: how many bytes follow and how to read them."""

    length: int
    coding: str  # text | bcd | negative_bcd | binary


def decode_lvar(lvar: int, offset: int = 0) -> Lvar:
    """Interpret the LVAR byte that opens a variable-length data field."""
    if lvar <= 0xBF:
        return Lvar(lvar, "text")
    if 0xC0 <= lvar <= 0xC9:
        return Lvar(lvar - 0xC0, "bcd")
    if 0xD0 <= lvar <= 0xD9:
        return Lvar(lvar - 0xD0, "negative_bcd")
    if 0xE0 <= lvar <= 0xEF:
        return Lvar(lvar - 0xE0, "binary")
    if 0xF0 <= lvar <= 0xF4:
        return Lvar(4 * (lvar - 0xEC), "binary")
    if lvar == 0xF5:
        return Lvar(48, "binary")
    if lvar == 0xF6:
        return Lvar(64, "binary")
    raise ProtocolError(f"reserved LVAR value 0x{lvar:02X}", offset=offset)


def decode_text(raw: bytes) -> str:
    """LVAR text: ISO 8859-1 characters sent last character first."""
    return raw[::-1].decode("latin-1")


def _year(low_bits: int, high_bits: int) -> int:
    # Seven-bit year split over two bytes; 0-80 counts from 2000, 81-99 from 1900, as libmbus does.
    year = ((low_bits & 0xE0) >> 5) | ((high_bits & 0xF0) >> 1)
    return 2000 + year if year <= 80 else 1900 + year


def decode_date_g(raw: bytes) -> date | None:
    """Type G date (2 bytes); None for the all-ones "not set" pattern or an impossible date."""
    if raw == b"\xff\xff":
        return None
    day, month = raw[0] & 0x1F, raw[1] & 0x0F
    try:
        return date(_year(raw[0], raw[1]), month, day)
    except ValueError:
        return None


def decode_datetime_f(raw: bytes) -> datetime | None:
    """Type F date and time (4 bytes, minute resolution); None when the IV bit says invalid."""
    if raw[0] & 0x80:
        return None
    minute, hour = raw[0] & 0x3F, raw[1] & 0x1F
    day, month = raw[2] & 0x1F, raw[3] & 0x0F
    try:
        # EN 13757-3 type F is the meter's clock with no zone: naive by spec, the caller knows the site.
        return datetime(_year(raw[2], raw[3]), month, day, hour, minute)  # noqa: DTZ001
    except ValueError:
        return None


def decode_datetime_i(raw: bytes) -> datetime | None:
    """Type I date and time (6 bytes, second resolution); None when invalid."""
    if raw[1] & 0x80:
        return None
    second, minute, hour = raw[0] & 0x3F, raw[1] & 0x3F, raw[2] & 0x1F
    day, month = raw[3] & 0x1F, raw[4] & 0x0F
    try:
        # Type I, like type F, carries no zone: naive by spec.
        return datetime(_year(raw[3], raw[4]), month, day, hour, minute, second)  # noqa: DTZ001
    except ValueError:
        return None


def decode_time_j(raw: bytes) -> time | None:
    """Type J time of day (3 bytes)."""
    try:
        return time(raw[2] & 0x1F, raw[1] & 0x3F, raw[0] & 0x3F)
    except ValueError:
        return None


# -- encoders, used by the simulators and round-trip tests ---------------------------


def encode_bcd(value: int, length: int) -> bytes:
    """Type A BCD of ``length`` bytes, LSB first; negative values put F in the top digit."""
    digits = 2 * length
    text = f"F{-value:0{digits - 1}d}" if value < 0 else f"{value:0{digits}d}"
    if len(text) != digits:
        raise ValueError(f"{value} does not fit {digits} BCD digits")
    return bytes.fromhex(text)[::-1]


def encode_datetime_f(moment: datetime) -> bytes:
    """Type F encoding of ``moment`` (seconds dropped)."""
    year = moment.year % 100
    return bytes(
        [
            moment.minute & 0x3F,
            moment.hour & 0x1F,
            (moment.day & 0x1F) | ((year & 0x07) << 5),
            (moment.month & 0x0F) | ((year & 0x78) << 1),
        ]
    )


def encode_date_g(day: date) -> bytes:
    """Type G encoding of ``day``."""
    year = day.year % 100
    return bytes([(day.day & 0x1F) | ((year & 0x07) << 5), (day.month & 0x0F) | ((year & 0x78) << 1)])
