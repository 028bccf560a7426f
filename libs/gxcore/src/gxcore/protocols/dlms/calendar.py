"""Activity calendar (class 20) and special days table (class 11) values from a tariff calendar, no I/O.

Activity calendar 0-0:13.0.0.255, passive attributes (the active ones 2-5 have the same shapes)::

    6  calendar_name_passive            octet-string
    7  season_profile_passive           array of structure {season_profile_name octet-string,
                                          season_start octet-string (date-time), week_name octet-string}
    8  week_profile_table_passive       array of structure {week_profile_name octet-string,
                                          monday .. sunday unsigned (day_id)}
    9  day_profile_table_passive        array of structure {day_id unsigned, day_schedule array of
                                          structure {start_time octet-string (time), script_logical_name
                                          octet-string (6), script_selector long-unsigned}}
    10 activate_passive_calendar_time   octet-string (date-time)
    method 1 activate_passive_calendar  integer 0

Special days table 0-0:11.0.0.255: attribute 2 ``entries`` array of structure {index long-unsigned,
specialday_date octet-string (date), day_id unsigned}; method 1 insert (one entry), method 2
delete (index long-unsigned).

A season starts every year (year 0xFFFF, day of week, hundredths and deviation unspecified);
a special day ``MM-DD`` recurs every year, ``YYYY-MM-DD`` happens once. :func:`plain` turns what
gurux decoded on a read back into the same nested lists, ints and bytes that
:func:`~gxcore.protocols.dlms.axdr.decode_all` gives for what was written, so the two compare.
"""

from __future__ import annotations

import struct
from datetime import datetime
from typing import Final

from gxcore.protocols.dlms import axdr
from gxcore.protocols.dlms.cosem_time import encode_datetime
from gxcore.protocols.dlms.image_transfer import octet_string
from gxcore.protocols.dlms.obis import obis_to_bytes
from gxcore.tariffs import TariffCalendar

ACTIVITY_CALENDAR: Final = "0.0.13.0.0.255"
CLASS_ACTIVITY_CALENDAR: Final = 20
SPECIAL_DAYS: Final = "0.0.11.0.0.255"
CLASS_SPECIAL_DAYS: Final = 11
NAME_PASSIVE, SEASONS_PASSIVE, WEEKS_PASSIVE, DAYS_PASSIVE, ACTIVATION_TIME = 6, 7, 8, 9, 10
NAME_ACTIVE, SEASONS_ACTIVE, WEEKS_ACTIVE, DAYS_ACTIVE = 2, 3, 4, 5
ACTIVATE_PASSIVE: Final = 1
SPECIAL_ENTRIES, INSERT, DELETE = 2, 1, 2
_UNSPECIFIED_DEVIATION: Final = 0x8000


def _array(items: list[bytes]) -> bytes:
    return b"\x01" + _length(len(items)) + b"".join(items)


def _structure(*items: bytes) -> bytes:
    return b"\x02" + bytes([len(items)]) + b"".join(items)


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _unsigned(value: int) -> bytes:
    return bytes([0x11, value])


def _long_unsigned(value: int) -> bytes:
    return b"\x12" + value.to_bytes(2, "big")


def _date_parts(text: str) -> tuple[int, int, int]:
    """(year or 0xFFFF, month, day) of ``MM-DD`` / ``YYYY-MM-DD``."""
    parts = [int(p) for p in text.split("-")]
    return (0xFFFF, parts[0], parts[1]) if len(parts) == 2 else (parts[0], parts[1], parts[2])


def season_start(text: str) -> bytes:
    """The 12-byte date-time of a season starting on month-day ``text`` every year, at 00:00."""
    year, month, day = _date_parts(text)
    return struct.pack(">HBBBBBBBHB", year, month, day, 0xFF, 0, 0, 0, 0xFF, _UNSPECIFIED_DEVIATION, 0xFF)


def special_date(text: str) -> bytes:
    """The 5-byte date of a special day (day of week unspecified)."""
    year, month, day = _date_parts(text)
    return struct.pack(">HBBB", year, month, day, 0xFF)


def start_time(text: str) -> bytes:
    """The 4-byte time of a day action (hundredths 0)."""
    parts = [int(p) for p in text.split(":")] + [0]
    return bytes([parts[0], parts[1], parts[2], 0])


def calendar_name(calendar: TariffCalendar) -> bytes:
    return octet_string(calendar.name.encode())


def season_profiles(calendar: TariffCalendar) -> bytes:
    seasons = sorted(calendar.seasons, key=lambda s: _date_parts(s.start)[1:])
    return _array(
        [
            _structure(
                octet_string(s.name.encode()), octet_string(season_start(s.start)), octet_string(s.week.encode())
            )
            for s in seasons
        ]
    )


def week_profiles(calendar: TariffCalendar) -> bytes:
    return _array(
        [
            _structure(octet_string(w.name.encode()), *(_unsigned(calendar.day_id(d)) for d in w.days()))
            for w in calendar.weeks
        ]
    )


def day_profiles(calendar: TariffCalendar) -> bytes:
    script = octet_string(obis_to_bytes(calendar.script))
    return _array(
        [
            _structure(
                _unsigned(d.id),
                _array(
                    [_structure(octet_string(start_time(s.at)), script, _long_unsigned(s.tariff)) for s in d.switches]
                ),
            )
            for d in calendar.days
        ]
    )


def activation_time(at: datetime) -> bytes:
    return octet_string(encode_datetime(at))


def passive_attributes(calendar: TariffCalendar) -> dict[int, bytes]:
    """Attribute -> A-XDR value for the passive calendar (attributes 6-10; 10 only with activate_at)."""
    out = {
        NAME_PASSIVE: calendar_name(calendar),
        SEASONS_PASSIVE: season_profiles(calendar),
        WEEKS_PASSIVE: week_profiles(calendar),
        DAYS_PASSIVE: day_profiles(calendar),
    }
    if calendar.activate_at is not None:
        out[ACTIVATION_TIME] = activation_time(calendar.activate_at)
    return out


def special_day_entry(index: int, date: str, day_id: int) -> bytes:
    return _structure(_long_unsigned(index), octet_string(special_date(date)), _unsigned(day_id))


def special_days(calendar: TariffCalendar) -> dict[int, bytes]:
    """Index -> the entry structure, for every special day of the calendar."""
    return {s.index: special_day_entry(s.index, s.date, calendar.day_id(s.day)) for s in calendar.special_days}


def delete_parameter(index: int) -> bytes:
    return _long_unsigned(index)


def plain(value: object) -> axdr.AxdrValue:
    """A gurux-decoded value as plain nested lists, ints, bools, bytes and str (see the module doc)."""
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return value
    if isinstance(value, bytearray):
        return bytes(value)
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return str(value)  # GXBitString and the like: their text


def decoded(encoded: bytes) -> axdr.AxdrValue:
    """What a written A-XDR value reads back as, in :func:`plain`'s terms."""
    return axdr.decode_all(encoded)
