"""COSEM date-time (Blue Book 4.1.6.1): the 12-byte octet string clocks and profiles carry.

::

    0     2     3     4     5     6     7     8     9          11      12
    +-----+-----+-----+-----+-----+-----+-----+-----+----------+-------+
    |year |month| day | dow |hour | min | sec |hund.|deviation |status |
    +-----+-----+-----+-----+-----+-----+-----+-----+----------+-------+
     u16   u8    u8    u8    u8    u8    u8    u8    i16 (min)  u8

0xFF (0xFFFF for the year) means "not specified"; deviation 0x8000 means "not specified".
The deviation is the standard's: minutes from local time to UTC, so ``UTC = local + deviation``
(CET is -60). gurux calls the opposite sign "UTC to normal time"; we keep the standard's.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from typing import Final

from gxcore.errors import ProtocolError

DATETIME_LENGTH: Final = 12
DEVIATION_UNSPECIFIED: Final = -0x8000
_LAYOUT: Final = struct.Struct(">HBBBBBBBhB")


def encode_datetime(at: datetime) -> bytes:
    """Encode an aware instant as a UTC COSEM date-time (deviation 0, hundredths from microseconds)."""
    if at.tzinfo is None:
        raise ValueError("COSEM date-times are encoded from aware datetimes only")
    utc = at.astimezone(UTC)
    return _LAYOUT.pack(
        utc.year,
        utc.month,
        utc.day,
        utc.isoweekday(),
        utc.hour,
        utc.minute,
        utc.second,
        utc.microsecond // 10_000,
        0,
        0,
    )


def decode_datetime(raw: bytes | bytearray, *, unspecified_deviation_is_utc: bool = True) -> datetime:
    """Decode a COSEM date-time into an aware UTC instant; a date or time left unspecified is an error.

    A meter that leaves the deviation unspecified keeps local time without saying which;
    ``unspecified_deviation_is_utc`` decides whether that is taken as UTC or refused.
    """
    if len(raw) != DATETIME_LENGTH:
        raise ProtocolError(f"date-time has {len(raw)} bytes, expected {DATETIME_LENGTH}", frame=bytes(raw))
    year, month, day, _dow, hour, minute, second, hundredths, deviation, _status = _LAYOUT.unpack(bytes(raw))
    if 0xFF in (month, day, hour, minute) or year == 0xFFFF:
        raise ProtocolError("date-time leaves the date or time unspecified", frame=bytes(raw))
    if second == 0xFF:
        second = 0
    if hundredths == 0xFF:
        hundredths = 0
    # Months 0xFD/0xFE (DST end/begin) and days 0xFD/0xFE (last days of month) are
    # schedule wildcards; the datetime constructor rejects them, which is what we want.
    try:
        local = datetime(year, month, day, hour, minute, second, hundredths * 10_000, tzinfo=UTC)
    except ValueError:
        raise ProtocolError("date-time is not a valid calendar instant", frame=bytes(raw)) from None
    if deviation == DEVIATION_UNSPECIFIED:
        if not unspecified_deviation_is_utc:
            raise ProtocolError("date-time has no deviation and local time is not known", frame=bytes(raw))
        return local
    if not -720 <= deviation <= 720:
        raise ProtocolError(f"date-time deviation {deviation} min is outside -720..720", frame=bytes(raw))
    try:
        return local + timedelta(minutes=deviation)
    except OverflowError:  # 9999-12-31 23:59 local with a positive deviation is past datetime.max
        raise ProtocolError("date-time in UTC falls outside years 1..9999", offset=9, frame=bytes(raw)) from None


def is_unspecified(raw: bytes | bytearray | None) -> bool:
    """True for a missing profile timestamp (null-data or an empty string), which compact profiles use."""
    return raw is None or len(raw) == 0
