"""Writing readings: binary COPY into a staging table, then one merge on the natural key.

Text, bytes, bit-string and boolean values go to ``register_values`` in the same transaction,
with the same rules (:data:`MERGE_VALUES`).

A redelivered reading (same meter, quantity, timestamp, value) is a no-op. One that
comes again with a different value is kept in ``reading_revisions``, never dropped
and never overwriting the stored value; only an estimate (VEE) is replaced by a
measured value when it arrives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter

import asyncpg

from gxami_ingest.vee_merge import MERGE_REPLACING_ESTIMATES
from gxami_store import PartitionKeeper

STAGING_COLUMNS = ("meter_id", "quantity", "ts", "value", "unit", "status", "job_id")

# value: an int (an integer register) or a float; the COPY converts it to double precision once.
ReadingRow = tuple[str, str, datetime, int | float, str, int, str | None]
# meter_id, quantity, ts, kind, value (canonical text), unit, status, job_id
ValueRow = tuple[str, str, datetime, str, str, str, int, str | None]

MERGE_VALUES = """
WITH src AS (
    SELECT DISTINCT ON (meter_id, quantity, ts) *
      FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::text[], $7::integer[],
                  $8::text[]) AS s(meter_id, quantity, ts, kind, value, unit, status, job_id)
     ORDER BY meter_id, quantity, ts
), ins AS (
    INSERT INTO register_values (meter_id, quantity, ts, kind, value, unit, status, job_id)
    SELECT meter_id, quantity, ts, kind, value, unit, status, job_id FROM src
    ON CONFLICT (meter_id, quantity, ts) DO NOTHING
    RETURNING 1
), rev AS (
    -- joined against what was stored before this statement: a value that came again different
    INSERT INTO register_value_revisions (meter_id, quantity, ts, kind, value, job_id)
    SELECT s.meter_id, s.quantity, s.ts, s.kind, s.value, s.job_id
      FROM src s JOIN register_values v USING (meter_id, quantity, ts)
     WHERE (v.value, v.kind) IS DISTINCT FROM (s.value, s.kind)
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM ins) AS inserted, (SELECT count(*) FROM rev) AS revisions
"""

_CREATE_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS ingest_staging (
    meter_id text, quantity text, ts timestamptz, value double precision,
    unit text, status integer, job_id text
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


async def write_readings(
    conn: asyncpg.Connection,
    rows: list[ReadingRow],
    partitions: PartitionKeeper,
    values: Sequence[ValueRow] = (),
) -> WriteStats:
    """Store ``rows`` (and the non-numeric ``values``) in one transaction with ``synchronous_commit`` on;
    returns what happened (counting both tables).

    Fast path: in steady state nothing in a batch exists yet, so it is copied straight into
    ``readings`` (inside a savepoint). A unique violation means a redelivery, a revision or an
    estimate to replace: the savepoint is rolled back and the batch goes through the staging
    merge, which sorts those out. Either way the outcome is the same; only the speed differs.
    """
    if not rows and not values:
        return WriteStats(0, 0, 0, 0)
    if rows:
        # Partitions first, in their own (autocommit) statements: visible to every connection at once.
        stamps = list(map(itemgetter(2), rows))
        await partitions.ensure(conn, (min(stamps), max(stamps)))
    async with conn.transaction():
        await conn.execute("SET LOCAL synchronous_commit = on")
        stats = await _merge_values(conn, values) if values else WriteStats(0, 0, 0, 0)
        if not rows:
            return stats
        try:
            async with conn.transaction():  # a savepoint
                await conn.copy_records_to_table("readings", records=rows, columns=STAGING_COLUMNS)
        except asyncpg.UniqueViolationError:
            pass
        else:
            return stats + WriteStats(len(rows), len(rows), 0, 0)
        await conn.execute(_CREATE_STAGING)
        await conn.copy_records_to_table("ingest_staging", records=rows, columns=STAGING_COLUMNS)
        rec = await conn.fetchrow(MERGE_REPLACING_ESTIMATES)
    assert rec is not None
    inserted, revisions, replaced = int(rec["inserted"]), int(rec["revisions"]), int(rec["replaced_estimates"])
    return stats + WriteStats(len(rows), inserted, len(rows) - inserted - replaced - revisions, revisions, replaced)


async def _merge_values(conn: asyncpg.Connection, values: Sequence[ValueRow]) -> WriteStats:
    columns = list(zip(*values, strict=True))
    rec = await conn.fetchrow(MERGE_VALUES, *(list(c) for c in columns))
    assert rec is not None
    inserted, revisions = int(rec["inserted"]), int(rec["revisions"])
    return WriteStats(len(values), inserted, len(values) - inserted - revisions, revisions)
