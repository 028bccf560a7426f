"""The readings table as it grows: merge rate at a small and a large table, and bytes per stored reading.

Merge growth: a fleet of 10,000 meters x 2 registers (20,000 readings per 15-minute
interval) is written in time order. The table is filled server-side (``INSERT ... SELECT
generate_series``, not timed, then VACUUM ANALYZE and CHECKPOINT) to the small size, then
ingest's own writer (:func:`gxami_ingest.writer.write_readings`: binary COPY into staging,
deduplicating merge, commit) stores whole fleet intervals of new readings, 3 rounds of 4,
timed, best round counts; then the table is filled on to the large size and the same is
timed again. ``value`` is the merge rate
at the large size, ``limit`` the rate at the small one: the issue wants the rate to fall
by at most 30% (ratio >= 0.7) from 1M to 50M rows. Default sizes 1M -> 5M; ``--full``
1M -> 50M (filling 50M rows takes many minutes); ``--quick`` 100k -> 200k.

Compression (TimescaleDB only): 1M readings, every chunk compressed with the schema's
settings (segment by meter, order by quantity, ts); ``value`` is bytes per reading
compressed, ``limit`` the same table's bytes per reading before compression, ratio =
the compression factor. Without TimescaleDB there is no such line (a note on stderr).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from bench.figures import Figure, RunContext
from gxami_ingest.writer import ReadingRow, write_readings
from gxami_store import PartitionKeeper, migrate, storage_kind
from gxami_store.pglite import pglite_server

METERS = 10_000
QUANTITIES = ("1-0:1.8.0", "1-0:2.8.0")
PER_INTERVAL = METERS * len(QUANTITIES)
STEP = timedelta(minutes=15)
FILL_CHUNK = 50  # intervals per INSERT statement: 1M rows
# Compression: fewer meters, so each meter's segment in a 7-day chunk holds a realistic ~1,000 rows.
COMPRESSION_METERS = 1_000
PGLITE_DIR = Path(__file__).resolve().parents[1] / "deploy" / "pglite"

_FILL = """
INSERT INTO readings (meter_id, quantity, ts, value, unit, status, job_id)
SELECT 'G' || lpad(m::text, 6, '0'), q, $1::timestamptz + i * interval '15 minutes',
       {value}, 'kWh', 0, 'fill'
  FROM generate_series($2::int, $3::int) AS i
 CROSS JOIN generate_series(0, $4::int - 1) AS m
 CROSS JOIN unnest($5::text[]) AS q
"""
LINEAR = "1000.0 + m + 0.25 * i"
# For sizes: a register as meters report it, to the Wh, growing along a daily curve with a
# per-meter, per-interval wobble; a perfectly linear series would compress unrealistically well.
METER_LIKE = (
    "round((1000.0 + m + 0.25 * i + 0.05 * sin(2 * pi() * i / 96.0 + m)"
    " + ((m * 7919 + i * 104729) % 997) / 1e5)::numeric, 3)::float8"
)


@dataclass(slots=True)
class GrowingTable:
    """A readings table filled in time order, one whole fleet interval after another."""

    conn: asyncpg.Connection
    origin: datetime
    partitions: PartitionKeeper
    meters: int = METERS
    values: str = LINEAR
    next_interval: int = 0

    @property
    def per_interval(self) -> int:
        return self.meters * len(QUANTITIES)

    @property
    def rows(self) -> int:
        return self.next_interval * self.per_interval

    async def fill_to(self, rows: int, ctx: RunContext) -> None:
        """Insert whole intervals server-side until the table holds ``rows`` readings (not timed)."""
        target = -(-rows // self.per_interval)
        chunk = max(1, FILL_CHUNK * METERS // self.meters)  # about 1M rows per statement
        while self.next_interval < target:
            last = min(self.next_interval + chunk, target) - 1
            await self.conn.execute(
                _FILL.format(value=self.values), self.origin, self.next_interval, last, self.meters, list(QUANTITIES)
            )
            self.next_interval = last + 1
            ctx.note(f"storage: table filled to {self.rows:,} readings")
        await self.conn.execute("VACUUM ANALYZE readings")  # as autovacuum would have by now
        try:  # the fill's dirty pages are flushed before timing, so a checkpoint does not land in one size only
            await self.conn.execute("CHECKPOINT")
        except asyncpg.InsufficientPrivilegeError:
            ctx.note("storage: no privilege to CHECKPOINT after the fill; figures may be noisier")

    def interval_rows(self) -> list[ReadingRow]:
        """The next interval's readings of the whole fleet, as ingest hands them to its writer."""
        i = self.next_interval
        ts = self.origin + STEP * i
        self.next_interval += 1
        return [
            (f"G{m:06d}", q, ts, 1000.0 + m + 0.25 * i, "kWh", 0, "bench")
            for m in range(self.meters)
            for q in QUANTITIES
        ]

    async def merge_rate(self, rounds: int, intervals: int) -> float:
        """Readings per second through ingest's writer: the best of ``rounds`` rounds of ``intervals`` intervals.

        Best of several, as for the CPU figures: the machine is shared, and a slow spell in one
        round at one size only would move the ratio more than the table's size does.
        """
        best = 0.0
        for _ in range(rounds):
            batches = [self.interval_rows() for _ in range(intervals)]
            elapsed = 0.0
            for rows in batches:
                start = time.perf_counter()
                stats = await write_readings(self.conn, rows, self.partitions)
                elapsed += time.perf_counter() - start
                if stats.inserted != len(rows):
                    raise RuntimeError(f"merge inserted {stats.inserted} of {len(rows)} new readings")
            best = max(best, intervals * self.per_interval / elapsed)
        return best


async def _open_table(dsn: str, total_rows: int, meters: int = METERS, values: str = LINEAR) -> GrowingTable:
    conn = await asyncpg.connect(dsn, timeout=10, command_timeout=3600)
    await migrate(conn)
    keeper = PartitionKeeper()
    await keeper.load(conn, await storage_kind(conn))
    intervals = -(-total_rows // (meters * len(QUANTITIES))) + 64
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    origin = now - timedelta(minutes=now.minute % 15) - STEP * intervals
    days = int(intervals * STEP / timedelta(days=1)) + 2
    await keeper.ensure(conn, [origin + timedelta(days=d) for d in range(days)])
    return GrowingTable(conn, origin, keeper, meters, values)


def _label(rows: int) -> str:
    return f"{rows // 1_000_000}M" if rows >= 1_000_000 else f"{rows // 1_000}k"


async def _merge_growth(ctx: RunContext) -> Figure:
    small = ctx.size.pick(100_000, 1_000_000, 1_000_000)
    large = ctx.size.pick(200_000, 5_000_000, 50_000_000)
    rounds, intervals = ctx.size.pick(1, 3, 3), ctx.size.pick(2, 4, 4)
    async with ctx.stack().database("merge") as dsn:
        table = await _open_table(dsn, large + 2 * rounds * intervals * PER_INTERVAL)
        try:
            await table.fill_to(small, ctx)
            at_small = table.rows
            rate_small = await table.merge_rate(rounds, intervals)
            ctx.note(f"storage: merge at {at_small:,} rows: {rate_small:,.0f} readings/s")
            await table.fill_to(large, ctx)
            at_large = table.rows
            rate_large = await table.merge_rate(rounds, intervals)
            ctx.note(f"storage: merge at {at_large:,} rows: {rate_large:,.0f} readings/s")
            storage = await storage_kind(table.conn)
            buffers = str(await table.conn.fetchval("SHOW shared_buffers"))
        finally:
            await table.conn.close()
    return Figure(
        f"ingest_merge_{_label(large)}_vs_{_label(small)}",
        rate_large,
        "readings/s",
        rate_small,
        "higher",
        {
            "peer": f"the same merge when the table held {at_small:,} rows",
            "rows_small": at_small,
            "rows_large": at_large,
            "batch_readings": PER_INTERVAL,
            "rounds": rounds,
            "batches_per_round": intervals,
            "storage": storage,
            "shared_buffers": buffers,
            "wanted_ratio": 0.7,
        },
    )


async def _compressed_size(dsn: str, rows: int, ctx: RunContext) -> tuple[int, int, int]:
    """Fill a hypertable with ``rows`` readings, compress every chunk; (readings, bytes before, bytes after)."""
    table = await _open_table(dsn, rows, COMPRESSION_METERS, METER_LIKE)
    conn = table.conn
    try:
        await table.fill_to(rows, ctx)
        stored = int(await conn.fetchval("SELECT count(*) FROM readings"))
        before = int(await conn.fetchval("SELECT sum(total_bytes) FROM chunks_detailed_size('readings')"))
        await conn.execute("SELECT count(compress_chunk(c, if_not_compressed => true)) FROM show_chunks('readings') c")
        after = int(
            await conn.fetchval("SELECT sum(after_compression_total_bytes) FROM chunk_compression_stats('readings')")
        )
    finally:
        conn.terminate()  # PGlite's socket does not end on a protocol Terminate, so close() would wait
    return stored, before, after


async def _compression(ctx: RunContext) -> Figure:
    rows = ctx.size.pick(100_000, 1_000_000, 5_000_000)
    async with ctx.stack().database("compression") as dsn:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            await migrate(conn)
            timescale = await storage_kind(conn) == "timescaledb"
        finally:
            await conn.close()
        if timescale:
            where = "the stack's TimescaleDB"
            stored, before, after = await _compressed_size(dsn, rows, ctx)
    if not timescale:
        # The same TimescaleDB (2.23) compiled into PGlite: slower, but a chunk's bytes are the same
        # format, so the sizes are what a TimescaleDB server stores. PGlite is in memory: 1M rows at most.
        rows = min(rows, 1_000_000)
        where = "TimescaleDB 2.23 in PGlite (deploy/pglite), no Docker engine here"
        ctx.note(f"storage: no TimescaleDB in the stack; measuring compression on {where}")
        log = ctx.stack().scratch("pglite") / "server.log"
        with pglite_server(PGLITE_DIR, log, timeout=120) as dsn:
            stored, before, after = await _compressed_size(dsn, rows, ctx)
    return Figure(
        "storage_bytes_per_reading",
        after / stored,
        "bytes/reading",
        before / stored,
        "lower",
        {
            "peer": "the same hypertable's bytes per reading before compression",
            "readings": stored,
            "meters": COMPRESSION_METERS,
            "compression": "segmentby meter_id, orderby quantity, ts",
            "where": where,
        },
    )


def run_merge_growth(ctx: RunContext) -> Iterator[Figure]:
    yield asyncio.run(_merge_growth(ctx))


def run_compression(ctx: RunContext) -> Iterator[Figure]:
    yield asyncio.run(_compression(ctx))
