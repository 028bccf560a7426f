"""Writing readings: binary COPY into a staging table, then one merge on the natural key.

A redelivered reading (same meter, quantity, timestamp, value) is a no-op. One that
comes again with a different value is kept in ``reading_revisions``, never dropped
and never overwriting the stored value; only an estimate (VEE) is replaced by a
measured value when it arrives.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter

import asyncpg

from gxami_ingest.vee_merge import MERGE_REPLACING_ESTIMATES
from gxami_store import PartitionKeeper

STAGING_COLUMNS = ("meter_id", "quantity", "ts", "value", "unit", "quality", "source_job")

ReadingRow = tuple[str, str, datetime, float, str, int, str | None]

_CREATE_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS ingest_staging (
    meter_id text, quantity text, ts timestamptz, value double precision,
    unit text, quality integer, source_job text
) ON COMMIT DELETE ROWS
"""


@dataclass(frozen=True, slots=True)
class WriteStats:
    """What one write did: rows offered, newly stored, estimates replaced, duplicates absorbed, revisions kept."""

    offered: int
    inserted: int
    duplicates: int
    revisions: int
    replaced_estimates: int = 0

    def __add__(self, other: WriteStats) -> WriteStats:
        return WriteStats(
            self.offered + other.offered,
            self.inserted + other.inserted,
            self.duplicates + other.duplicates,
            self.revisions + other.revisions,
            self.replaced_estimates + other.replaced_estimates,
        )


async def write_readings(conn: asyncpg.Connection, rows: list[ReadingRow], partitions: PartitionKeeper) -> WriteStats:
    """Store ``rows`` in one transaction with ``synchronous_commit`` on; returns what happened.

    Fast path: in steady state nothing in a batch exists yet, so it is copied straight into
    ``readings`` (inside a savepoint). A unique violation means a redelivery, a revision or an
    estimate to replace: the savepoint is rolled back and the batch goes through the staging
    merge, which sorts those out. Either way the outcome is the same; only the speed differs.
    """
    if not rows:
        return WriteStats(0, 0, 0, 0)
    # Partitions first, in their own (autocommit) statements: visible to every connection at once.
    stamps = list(map(itemgetter(2), rows))
    await partitions.ensure(conn, (min(stamps), max(stamps)))
    async with conn.transaction():
        await conn.execute("SET LOCAL synchronous_commit = on")
        try:
            async with conn.transaction():  # a savepoint
                await conn.copy_records_to_table("readings", records=rows, columns=STAGING_COLUMNS)
        except asyncpg.UniqueViolationError:
            pass
        else:
            return WriteStats(len(rows), len(rows), 0, 0)
        await conn.execute(_CREATE_STAGING)
        await conn.copy_records_to_table("ingest_staging", records=rows, columns=STAGING_COLUMNS)
        rec = await conn.fetchrow(MERGE_REPLACING_ESTIMATES)
    assert rec is not None
    inserted, revisions, replaced = int(rec["inserted"]), int(rec["revisions"]), int(rec["replaced_estimates"])
    return WriteStats(len(rows), inserted, len(rows) - inserted - replaced - revisions, revisions, replaced)
