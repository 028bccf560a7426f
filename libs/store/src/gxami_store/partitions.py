"""Monthly range partitions of ``readings`` on plain PostgreSQL, created ahead of the data."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime

import asyncpg

_PARTITION_LOCK = 0x67_78_70_61_72  # advisory lock for partition DDL across pods


def month_start(ts: datetime) -> date:
    return date(ts.year, ts.month, 1)


def next_month(d: date) -> date:
    return date(d.year + (d.month == 12), d.month % 12 + 1, 1)


def partition_name(d: date) -> str:
    return f"readings_p{d.year:04d}{d.month:02d}"


class PartitionKeeper:
    """Remembers which months exist so the hot path checks a set, not the catalog."""

    def __init__(self) -> None:
        self._known: set[date] = set()
        self.enabled = True

    async def load(self, conn: asyncpg.Connection, storage: str) -> None:
        """(Re)read the existing partitions; a rolled-back transaction may have left ``_known`` ahead."""
        self._known = set()
        self.enabled = storage == "partitioned"
        if not self.enabled:
            return
        rows = await conn.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'readings'::regclass"
        )
        for r in rows:
            name: str = r["relname"]
            if name.startswith("readings_p") and len(name) == 16:
                self._known.add(date(int(name[10:14]), int(name[14:16]), 1))

    async def ensure(self, conn: asyncpg.Connection, instants: Iterable[datetime]) -> None:
        """Create the monthly partitions covering ``instants`` (and the month after each)."""
        if not self.enabled:
            return
        stamps = list(instants)
        if not stamps:
            return
        # Every month from the earliest to the latest instant, and the one after: cheap per batch,
        # where a per-instant walk showed up in ingest profiles.
        last = next_month(month_start(max(stamps).astimezone(UTC)))
        wanted: set[date] = set()
        m = month_start(min(stamps).astimezone(UTC))
        while m <= last:
            wanted.add(m)
            m = next_month(m)
        missing = sorted(wanted - self._known)
        if not missing:
            return
        in_tx = conn.is_in_transaction()
        # Inside a transaction the lock must last until commit: a session lock released before the
        # commit would let another pod miss the uncommitted table and collide with it.
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1)" if in_tx else "SELECT pg_advisory_lock($1)", _PARTITION_LOCK
        )
        try:
            for m in missing:
                await conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {partition_name(m)} PARTITION OF readings"  # names: dates only
                    f" FOR VALUES FROM ('{m.isoformat()}') TO ('{next_month(m).isoformat()}')"
                )
                self._known.add(m)
        finally:
            if not in_tx:
                await conn.execute("SELECT pg_advisory_unlock($1)", _PARTITION_LOCK)

    async def ensure_ahead(self, conn: asyncpg.Connection, now: datetime, months: int = 3) -> None:
        """Create partitions from this month to ``months`` ahead."""
        m = month_start(now)
        instants = []
        for _ in range(months + 1):
            instants.append(datetime(m.year, m.month, 1, tzinfo=UTC))
            m = next_month(m)
        await self.ensure(conn, instants)
