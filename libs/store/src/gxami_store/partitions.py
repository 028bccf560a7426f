"""Range partitions of ``readings`` on plain PostgreSQL, created ahead of the data.

The partition width is a setting (day, week or month), for the same reason TimescaleDB sizes
its chunks: ingest writes into the newest partition, and its primary-key index must stay
small enough to live in memory, or every reading costs a random index page write as the
table grows. Changing the width applies to partitions created from then on; existing ones
stay, and a new partition only fills the part of its slot that no existing one covers.

Names carry the bounds, ``readings_pYYYYMMDD_YYYYMMDD`` (upper bound exclusive), so
retention and the keeper read ranges from the catalog without parsing partition bounds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum

import asyncpg

_PARTITION_LOCK = 0x67_78_70_61_72  # advisory lock for partition DDL across pods
_PREFIX = "readings_p"


class PartitionInterval(StrEnum):
    """Width of one readings partition (or TimescaleDB chunk)."""

    DAY = "day"
    WEEK = "week"
    MONTH = "month"

    def slot_start(self, d: date) -> date:
        """The first day of the slot holding ``d`` (weeks start on Monday, as ISO weeks do)."""
        if self is PartitionInterval.DAY:
            return d
        if self is PartitionInterval.WEEK:
            return d - timedelta(days=d.weekday())
        return date(d.year, d.month, 1)

    def next_slot(self, start: date) -> date:
        if self is PartitionInterval.DAY:
            return start + timedelta(days=1)
        if self is PartitionInterval.WEEK:
            return start + timedelta(days=7)
        return date(start.year + (start.month == 12), start.month % 12 + 1, 1)

    @property
    def nominal(self) -> timedelta:
        """The width as an interval (a month counts as 30 days), for TimescaleDB's chunk interval."""
        return {PartitionInterval.DAY: timedelta(days=1), PartitionInterval.WEEK: timedelta(days=7)}.get(
            self, timedelta(days=30)
        )


@dataclass(frozen=True, slots=True, order=True)
class Partition:
    """One existing partition: ``[lo, hi)`` in UTC days."""

    lo: date
    hi: date

    @property
    def name(self) -> str:
        return f"{_PREFIX}{self.lo:%Y%m%d}_{self.hi:%Y%m%d}"

    @classmethod
    def from_name(cls, name: str) -> Partition | None:
        """The range a partition name stands for, or None for a table this module did not name."""
        rest = name.removeprefix(_PREFIX)
        if rest == name or len(rest) != 17 or rest[8] != "_" or not (rest[:8] + rest[9:]).isdigit():
            return None
        try:
            lo = date.fromisoformat(rest[:8])  # YYYYMMDD, the basic ISO form (digits checked above)
            hi = date.fromisoformat(rest[9:])
        except ValueError:
            return None
        return cls(lo, hi) if lo < hi else None


async def existing_partitions(conn: asyncpg.Connection) -> list[Partition]:
    """The partitions of ``readings`` that this module created, oldest first."""
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'readings'::regclass"
    )
    return sorted(p for r in rows if (p := Partition.from_name(r["relname"])) is not None)


def _gaps(lo: date, hi: date, existing: list[Partition]) -> list[Partition]:
    """The parts of ``[lo, hi)`` that no existing partition covers."""
    gaps: list[Partition] = []
    at = lo
    for p in existing:  # sorted by lo
        if p.hi <= at or p.lo >= hi:
            continue
        if p.lo > at:
            gaps.append(Partition(at, p.lo))
        at = max(at, p.hi)
        if at >= hi:
            break
    if at < hi:
        gaps.append(Partition(at, hi))
    return gaps


class PartitionKeeper:
    """Remembers which slots exist so the hot path checks a set, not the catalog."""

    def __init__(self, interval: PartitionInterval = PartitionInterval.DAY) -> None:
        self.interval = interval
        self._existing: list[Partition] = []
        self._covered: set[date] = set()  # slot starts (at this interval) wholly covered
        self.enabled = True

    async def load(self, conn: asyncpg.Connection, storage: str) -> None:
        """(Re)read the existing partitions."""
        self._existing, self._covered = [], set()
        self.enabled = storage == "partitioned"
        if self.enabled:
            self._existing = await existing_partitions(conn)

    def _is_covered(self, slot: date) -> bool:
        if slot in self._covered:
            return True
        if _gaps(slot, self.interval.next_slot(slot), self._existing):
            return False
        self._covered.add(slot)
        return True

    async def ensure(self, conn: asyncpg.Connection, instants: Iterable[datetime]) -> None:
        """Create the partitions covering ``instants`` (and the slot after the latest).

        Best called outside a transaction (the partitions then commit at once and are cached);
        inside one, they commit with it, and the catalog is consulted again until they do.
        """
        if not self.enabled:
            return
        stamps = list(instants)
        if not stamps:
            return
        # Every slot from the earliest to the latest instant, and the one after: cheap per batch,
        # where a per-instant walk showed up in ingest profiles.
        slot = self.interval.slot_start(min(stamps).astimezone(UTC).date())
        last = self.interval.next_slot(self.interval.slot_start(max(stamps).astimezone(UTC).date()))
        missing: list[date] = []
        while slot <= last:
            if not self._is_covered(slot):
                missing.append(slot)
            slot = self.interval.next_slot(slot)
        if not missing:
            return
        in_tx = conn.is_in_transaction()
        # Inside a transaction the lock must last until commit: a session lock released before the
        # commit would let another pod miss the uncommitted table and collide with it.
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1)" if in_tx else "SELECT pg_advisory_lock($1)", _PARTITION_LOCK
        )
        try:
            # Under the lock, from the catalog: another pod (or an earlier width) may have made some.
            catalog = await existing_partitions(conn)
            for start in missing:
                for gap in _gaps(start, self.interval.next_slot(start), catalog):
                    await conn.execute(
                        f"CREATE TABLE IF NOT EXISTS {gap.name} PARTITION OF readings"  # names: dates only
                        f" FOR VALUES FROM ('{gap.lo.isoformat()}') TO ('{gap.hi.isoformat()}')"
                    )
                    catalog.append(gap)
                catalog.sort()
            # Remember only what is committed: a partition made inside a transaction is invisible to
            # other connections (which may share this keeper) until it commits, and gone if it rolls back.
            if not in_tx:
                self._existing = catalog
        finally:
            if not in_tx:
                await conn.execute("SELECT pg_advisory_unlock($1)", _PARTITION_LOCK)

    async def ensure_ahead(self, conn: asyncpg.Connection, now: datetime, ahead: timedelta = timedelta(days=7)) -> None:
        """Create partitions from ``now`` to ``ahead`` later, so the first readings of a slot wait for nothing."""
        await self.ensure(conn, [now, now + ahead])
