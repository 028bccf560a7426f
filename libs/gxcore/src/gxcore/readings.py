"""What every protocol driver hands upward: readings in canonical quantities."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


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
