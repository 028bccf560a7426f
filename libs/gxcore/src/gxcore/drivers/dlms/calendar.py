"""The DLMS driver's ``tariff-calendar``: passive activity calendar and special days written, then read back.

``command.body`` is a tariff calendar as :func:`gxcore.tariffs.calendar_body` makes it (see
:mod:`gxcore.tariffs`). In one association:

1. SET the passive calendar (0-0:13.0.0.255 attributes 6-9, and 10 when ``activate_at`` is given).
2. Bring the special days table (0-0:11.0.0.255) to the calendar's: delete (method 2) each entry
   whose index the calendar lacks or holds differently, insert (method 1) each one missing.
3. Read every written attribute and the table back; any difference fails the command
   (ProtocolError naming the attribute). Nothing is taken on trust.
4. With ``activate_now``, call activate_passive_calendar (method 1) and check that the active
   attributes (2-5) now equal what was written.

The result's state is ``activated`` or ``passive-written`` (the meter switches at
``activate_at``); its readings count the day profiles, seasons and special days read back.
"""

from __future__ import annotations

from datetime import UTC, datetime

from gurux_dlms.enums import DataType

from gxcore.drivers.api import CommandResult, DriverCommand
from gxcore.drivers.dlms.reader import DlmsSession
from gxcore.errors import ProtocolError
from gxcore.protocols.dlms import calendar as cal
from gxcore.readings import Reading
from gxcore.tariffs import calendar_from_body

_OCTETS = frozenset({cal.NAME_PASSIVE, cal.ACTIVATION_TIME})
_ACTIVE_OF = {
    cal.NAME_PASSIVE: cal.NAME_ACTIVE,
    cal.SEASONS_PASSIVE: cal.SEASONS_ACTIVE,
    cal.WEEKS_PASSIVE: cal.WEEKS_ACTIVE,
    cal.DAYS_PASSIVE: cal.DAYS_ACTIVE,
}


async def execute_calendar(session: DlmsSession, command: DriverCommand, *, meter_id: str) -> CommandResult:
    """Write, read back and optionally activate a tariff calendar over the unopened ``session``."""
    calendar = calendar_from_body(command.body, f"meter {meter_id}: tariff-calendar body")
    written = cal.passive_attributes(calendar)
    wanted = cal.special_days(calendar)
    async with session:
        for attribute, encoded in written.items():
            await _set(session, attribute, encoded)
        await _sync_special_days(session, wanted)
        for attribute, encoded in written.items():
            await _check(session, cal.CLASS_ACTIVITY_CALENDAR, cal.ACTIVITY_CALENDAR, attribute, encoded, meter_id)
        got = await _special_entries(session)
        if got != {i: cal.decoded(e) for i, e in wanted.items()}:
            raise ProtocolError(
                f"meter {meter_id}: special days read back {sorted(got)} differ from the calendar's {sorted(wanted)}"
            )
        state = "passive-written"
        if calendar.activate_now:
            await session.action(cal.CLASS_ACTIVITY_CALENDAR, cal.ACTIVITY_CALENDAR, cal.ACTIVATE_PASSIVE)
            for passive, active in _ACTIVE_OF.items():
                await _check(
                    session, cal.CLASS_ACTIVITY_CALENDAR, cal.ACTIVITY_CALENDAR, active, written[passive], meter_id
                )
            state = "activated"
    at = datetime.now(UTC)
    tags: dict[str, str | int] = {"source": cal.ACTIVITY_CALENDAR, "calendar": calendar.name}
    readings = [
        Reading("calendar-day-profiles", float(len(calendar.days)), "", at, extra=tags),
        Reading("calendar-seasons", float(len(calendar.seasons)), "", at, extra=tags),
        Reading("calendar-special-days", float(len(wanted)), "", at, extra=tags),
    ]
    when = calendar.activate_at.isoformat() if calendar.activate_at is not None else "now"
    detail = (
        f"calendar {calendar.name!r}: passive attributes {sorted(written)} and {len(wanted)} special days"
        f" written and read back; activation {when}"
    )
    return CommandResult(command, state=state, readings=readings, detail=detail)


async def _set(session: DlmsSession, attribute: int, encoded: bytes) -> None:
    if attribute in _OCTETS:
        # gurux adds the tag and length of an octet-string itself: hand it the content only.
        content = cal.decoded(encoded)
        await session.set(cal.CLASS_ACTIVITY_CALENDAR, cal.ACTIVITY_CALENDAR, attribute, content, DataType.OCTET_STRING)
    else:
        await session.set(cal.CLASS_ACTIVITY_CALENDAR, cal.ACTIVITY_CALENDAR, attribute, encoded, DataType.ARRAY)


async def _check(session: DlmsSession, class_id: int, obis: str, attribute: int, encoded: bytes, meter_id: str) -> None:
    got = cal.plain(await session.get(class_id, obis, attribute))
    if got != cal.decoded(encoded):
        raise ProtocolError(f"meter {meter_id}: {class_id}/{obis}/{attribute} reads back other than written")


async def _special_entries(session: DlmsSession) -> dict[int, object]:
    value = cal.plain(await session.get(cal.CLASS_SPECIAL_DAYS, cal.SPECIAL_DAYS, cal.SPECIAL_ENTRIES))
    if value is None:
        return {}
    if not isinstance(value, list):
        raise ProtocolError("special days table: entries is not an array")
    out: dict[int, object] = {}
    for pos, entry in enumerate(value):
        if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], int)):
            raise ProtocolError(f"special days table: entry {pos} is not {{index, date, day_id}}")
        out[entry[0]] = entry
    return out


async def _sync_special_days(session: DlmsSession, wanted: dict[int, bytes]) -> None:
    """Delete what differs or is not wanted, insert what is missing (see the module doc)."""
    current = await _special_entries(session)
    for index, entry in current.items():
        if index not in wanted or cal.decoded(wanted[index]) != entry:
            await session.call(cal.CLASS_SPECIAL_DAYS, cal.SPECIAL_DAYS, cal.DELETE, cal.delete_parameter(index))
    for index, encoded in wanted.items():
        if current.get(index) != cal.decoded(encoded):
            await session.call(cal.CLASS_SPECIAL_DAYS, cal.SPECIAL_DAYS, cal.INSERT, encoded)
