"""Reading a DLMS event log over a session (the rows' meaning is in :mod:`gxcore.protocols.dlms.events`)."""

from __future__ import annotations

from datetime import datetime

from gxcore.drivers.dlms.reader import DlmsSession
from gxcore.protocols.dlms.events import STANDARD_EVENT_LOG, DlmsEvent, events_from_readings
from gxcore.protocols.dlms.parameters import ProfileEntries, ProfileRange


async def read_event_log(
    session: DlmsSession,
    log: str = STANDARD_EVENT_LOG,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    newest: int = 0,
) -> list[DlmsEvent]:
    """Events of ``log`` in ``[start, end]`` (by range), or its ``newest`` entries (by entry)."""
    if start is not None:
        stop = end if end is not None else await session.read_clock()
        readings = await session.read_profile(ProfileRange(log, start, stop))
    else:
        readings = await session.read_profile_entries(ProfileEntries(log, newest=newest or 10))
    return events_from_readings(readings, log)
