"""What every protocol driver hands upward: readings in canonical quantities, and the events a meter reported."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from gxcore.errors import ProtocolError

EventSeverity = Literal["info", "warning", "alarm"]
EventValue = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class Reading:
    """One value of one quantity of one meter at one instant.

    ``quantity`` is the canonical, OBIS-style name (``1-0:1.8.0``); ``timestamp`` is
    timezone-aware UTC. ``status`` carries the meter's own status word where it has one.
    """

    quantity: str
    value: float
    unit: str
    timestamp: datetime
    status: int | None = None
    extra: dict[str, str | int] = field(default_factory=dict)


def stable_event_id(meter_id: str, source: str, timestamp: datetime, code: int | str) -> str:
    """An id that is the same every time the same event is read: from meter, source, time and code.

    Reading a meter's event log again (a redelivered job, overlapping ranges) yields the same
    ids, so storing events is idempotent. Two entries with the same code in the same second of
    the same log are one event.
    """
    stamp = timestamp.astimezone(UTC).isoformat()
    digest = hashlib.blake2b(f"{meter_id}\x1f{source}\x1f{stamp}\x1f{code}".encode(), digest_size=16)
    return f"ev-{digest.hexdigest()}"


@dataclass(frozen=True, slots=True)
class MeterEventRecord:
    """One event a meter reported (an event-log entry, an alarm), as a driver hands it upward.

    ``source`` names where the meter recorded it (a DLMS event log's OBIS code, say), ``code``
    is the meter's own event code, ``kind`` a short name (``power-down``); ``timestamp`` is
    timezone-aware UTC. ``event_id`` defaults to :func:`stable_event_id` over meter, source,
    timestamp and code; a driver whose meters number their events may pass its own.
    """

    meter_id: str
    timestamp: datetime
    kind: str
    source: str
    code: int | None = None
    severity: EventSeverity = "info"
    extra: Mapping[str, EventValue] = field(default_factory=dict)
    event_id: str = ""

    def __post_init__(self) -> None:
        if self.timestamp.tzinfo is None:
            raise ProtocolError(f"event {self.kind!r} from {self.source} has no time zone", meter_id=self.meter_id)
        if not 1 <= len(self.kind) <= 64:
            raise ProtocolError(f"event kind from {self.source} must be 1..64 characters", meter_id=self.meter_id)
        if not self.event_id:
            ident: int | str = self.code if self.code is not None else self.kind
            object.__setattr__(self, "event_id", stable_event_id(self.meter_id, self.source, self.timestamp, ident))
