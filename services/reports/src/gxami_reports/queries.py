"""Report queries over the SQL views that BI tools read too."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

Conn = asyncpg.Connection | PoolConnectionProxy


@dataclass(frozen=True, slots=True)
class DailyRow:
    meter_id: str
    day: date
    kwh: float
    readings: int

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["day"] = self.day.isoformat()
        return d


async def daily_consumption(
    conn: Conn,
    *,
    meter_id: str | None = None,
    start: date | None = None,
    end: date | None = None,
    limit: int = 100_000,
) -> list[DailyRow]:
    """Rows of the ``daily_consumption`` view, filtered, ordered by meter and day."""
    rows = await conn.fetch(
        """SELECT meter_id, day, kwh, readings FROM daily_consumption
            WHERE ($1::text IS NULL OR meter_id = $1)
              AND ($2::date IS NULL OR day >= $2)
              AND ($3::date IS NULL OR day <= $3)
            ORDER BY meter_id, day
            LIMIT $4""",
        meter_id,
        start,
        end,
        limit,
    )
    return [DailyRow(r["meter_id"], r["day"], float(r["kwh"]), int(r["readings"])) for r in rows]


@dataclass(frozen=True, slots=True)
class FleetTotals:
    meters: int
    meters_read: int
    readings: int


async def fleet_totals(conn: Conn) -> FleetTotals:
    """How many meters are registered, how many have readings, and how many readings are stored."""
    rec = await conn.fetchrow(
        """SELECT (SELECT count(*) FROM meters) AS meters,
                  (SELECT count(DISTINCT meter_id) FROM readings) AS meters_read,
                  (SELECT count(*) FROM readings) AS readings"""
    )
    assert rec is not None
    return FleetTotals(int(rec["meters"]), int(rec["meters_read"]), int(rec["readings"]))
