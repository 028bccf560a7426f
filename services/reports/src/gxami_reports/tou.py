"""Which tariff a tariff calendar (gxcore.tariffs, as written to a meter's activity calendar) gives an instant."""

from __future__ import annotations

from datetime import UTC, datetime

from gxcore.tariffs import WEEKDAYS, TariffCalendar


def _seconds(at: str) -> int:
    parts = [int(p) for p in at.split(":")]
    return parts[0] * 3600 + parts[1] * 60 + (parts[2] if len(parts) > 2 else 0)


def day_profile_name(calendar: TariffCalendar, when: datetime) -> str:
    """The day type of ``when``'s date: a special day's, else the weekday's in the season in force."""
    d = when.date()
    for special in calendar.special_days:
        if special.date in (d.isoformat(), d.strftime("%m-%d")):
            return special.day
    today = d.strftime("%m-%d")
    # The season in force began on the latest start at or before today; before the year's first
    # start, the last season of the previous year still runs.
    seasons = sorted(calendar.seasons, key=lambda s: s.start[-5:])
    season = next((s for s in reversed(seasons) if s.start[-5:] <= today), seasons[-1])
    week = next(w for w in calendar.weeks if w.name == season.week)
    return str(getattr(week, WEEKDAYS[d.weekday()]))


def tariff_at(calendar: TariffCalendar, when: datetime) -> int:
    """The tariff (script selector) in force at ``when``.

    The calendar runs in the meter's local time; the reports take UTC for it (the fleet does not
    record a meter's time zone yet).
    """
    utc = when.astimezone(UTC)
    name = day_profile_name(calendar, utc)
    day = next(p for p in calendar.days if p.name == name)
    now_s = utc.hour * 3600 + utc.minute * 60 + utc.second
    current = day.switches[0].tariff
    for switch in day.switches:
        if _seconds(switch.at) <= now_s:
            current = switch.tariff
    return current
