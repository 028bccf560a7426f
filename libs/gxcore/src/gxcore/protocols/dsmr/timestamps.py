"""DSMR timestamps: ``YYMMDDhhmmssX`` in Dutch/Belgian/Luxembourg local time, to and from aware UTC.

The meters keep CET/CEST wall-clock time; ``X`` is ``S`` (summer, UTC+2) or ``W``
(winter, UTC+1). The wall-clock time is authoritative and the EU summer-time rule
(last Sunday of March 01:00 UTC to last Sunday of October 01:00 UTC) gives its
offset; the flag decides only where the wall clock is ambiguous (the repeated hour
in October) or impossible (the skipped hour in March). Real meters write wrong
flags elsewhere (a Fluvius peak history captured on 1 March carries ``S``), and
dsmr_parser also ignores the flag there. The rule is computed here so decoding
does not depend on the host's tz database.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone

CET = timezone(timedelta(hours=1), "CET")
CEST = timezone(timedelta(hours=2), "CEST")

_TIMESTAMP_RE = re.compile(r"(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})([SW]?)")

# DLMS "not specified" date-time rendered as digits by several meters (Fluvius peak
# history for empty months, M-Bus channels without a device): it means "no time".
_UNSPECIFIED = "632525252525"


def _last_sunday(year: int, month: int) -> int:
    """Day of month of the last Sunday of ``month`` (March or October)."""
    last = date(year, month, 31)  # both months have 31 days
    return 31 - (last.weekday() + 1) % 7


def is_eu_summer_time(instant: datetime) -> bool:
    """True if the aware ``instant`` falls in EU summer time (CEST)."""
    utc = instant.astimezone(UTC)
    year = utc.year
    start = datetime(year, 3, _last_sunday(year, 3), 1, tzinfo=UTC)
    end = datetime(year, 10, _last_sunday(year, 10), 1, tzinfo=UTC)
    return start <= utc < end


def local_to_utc(naive: datetime, summer: bool | None = None) -> datetime:
    """Convert a naive CET/CEST wall-clock time to aware UTC.

    ``summer`` (the S/W flag) picks the offset only when the wall time is ambiguous or
    skipped; without it the repeated hour is read as summer time and the skipped hour
    as winter time (the ``fold=0`` choice of ``zoneinfo``).
    """
    as_summer = naive.replace(tzinfo=CEST)
    as_winter = naive.replace(tzinfo=CET)
    summer_valid = is_eu_summer_time(as_summer)
    winter_valid = not is_eu_summer_time(as_winter)
    if summer_valid and winter_valid:
        chosen = as_winter if summer is False else as_summer
    elif summer_valid:
        chosen = as_summer
    elif winter_valid:
        chosen = as_winter
    else:
        chosen = as_summer if summer else as_winter
    return chosen.astimezone(UTC)


def parse_dsmr_timestamp(text: str) -> datetime | None:
    """Parse ``YYMMDDhhmmss[S|W]`` to aware UTC; ``None`` for the not-specified marker.

    Raises ``ValueError`` when ``text`` is not a valid timestamp; callers turn it into
    a FramingError that carries the line and offset.
    """
    match = _TIMESTAMP_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"not a DSMR timestamp: {text[:20]!r}")
    if text[:12] == _UNSPECIFIED:
        return None
    yy, mo, dd, hh, mi, ss, flag = match.groups()
    # The meter's wall clock: local_to_utc gives it its zone, from the S/W flag or the EU rules.
    naive = datetime(2000 + int(yy), int(mo), int(dd), int(hh), int(mi), int(ss))  # noqa: DTZ001
    return local_to_utc(naive, {"S": True, "W": False}.get(flag))


def format_dsmr_timestamp(instant: datetime, *, with_flag: bool = True) -> str:
    """Render an aware instant as DSMR local time ``YYMMDDhhmmss`` plus the ``S``/``W`` flag."""
    if instant.tzinfo is None:
        raise ValueError("instant must be timezone-aware")
    summer = is_eu_summer_time(instant)
    local = instant.astimezone(CEST if summer else CET)
    text = local.strftime("%y%m%d%H%M%S")
    return text + ("S" if summer else "W") if with_flag else text
