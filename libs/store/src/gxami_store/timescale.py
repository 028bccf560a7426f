"""Storage policies from settings: compression after the back-fill horizon, retention, roll-up refresh.

On TimescaleDB: the compression policy compresses chunks only once they are older than the
back-fill horizon, because inserts into compressed chunks are slow (TimescaleDB #6063, #8400)
and back-fill is normal in metering; the continuous aggregates refresh over the same horizon so
back-filled data reaches them; the retention policy drops chunks older than the retention.
On plain PostgreSQL: retention drops whole partitions past the retention; there is no
compression. On both, new partitions (chunks) get the configured width. Safe to call at every
start, from several pods: a policy is replaced only when its setting changed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from gxami_store.aggregates import AGGREGATES
from gxami_store.migrations import storage_kind
from gxami_store.partitions import PartitionInterval, existing_partitions

log = logging.getLogger(__name__)

_POLICY_LOCK = 0x67_78_70_6F_6C  # "gxpol"


@dataclass(frozen=True, slots=True)
class StoragePolicy:
    """How long readings stay writable cheaply, and how long they are kept (None: forever)."""

    backfill_horizon: timedelta = timedelta(days=60)
    retention: timedelta | None = None
    partition_interval: PartitionInterval = PartitionInterval.DAY

    def __post_init__(self) -> None:
        # The daily roll-up's refresh window (horizon minus one day) must hold at least two buckets.
        if self.backfill_horizon < timedelta(days=3):
            raise ValueError("backfill_horizon must be at least 3 days")
        if self.retention is not None and self.retention <= self.backfill_horizon:
            raise ValueError("retention must be longer than the back-fill horizon")


async def _job_setting(conn: asyncpg.Connection, proc: str, relation: str, key: str) -> timedelta | None:
    """The interval ``key`` of the policy job ``proc`` on ``relation``, or None without one."""
    value = await conn.fetchval(
        "SELECT (config->>$3)::interval FROM timescaledb_information.jobs"
        " WHERE proc_name = $1 AND hypertable_name = $2 LIMIT 1",
        proc,
        relation,
        key,
    )
    return value if isinstance(value, timedelta) else None


async def _apply_timescale(conn: asyncpg.Connection, policy: StoragePolicy) -> list[str]:
    changed: list[str] = []
    horizon = policy.backfill_horizon
    chunk = await conn.fetchval(
        "SELECT time_interval FROM timescaledb_information.dimensions"
        " WHERE hypertable_name = 'readings' AND dimension_number = 1"
    )
    if chunk != policy.partition_interval.nominal:
        await conn.execute(
            "SELECT set_chunk_time_interval('readings', $1::interval)", policy.partition_interval.nominal
        )
        changed.append("chunk interval")
    if await _job_setting(conn, "policy_compression", "readings", "compress_after") != horizon:
        await conn.execute("SELECT remove_compression_policy('readings', if_exists => true)")
        await conn.execute("SELECT add_compression_policy('readings', compress_after => $1::interval)", horizon)
        changed.append("compression")
    current_retention = await _job_setting(conn, "policy_retention", "readings", "drop_after")
    if current_retention != policy.retention:
        await conn.execute("SELECT remove_retention_policy('readings', if_exists => true)")
        if policy.retention is not None:
            await conn.execute("SELECT add_retention_policy('readings', drop_after => $1::interval)", policy.retention)
        changed.append("retention")
    widths = (timedelta(minutes=15), timedelta(hours=1), timedelta(days=1))
    schedules = (timedelta(minutes=15), timedelta(minutes=15), timedelta(hours=1))
    for name, width, every in zip(AGGREGATES, widths, schedules, strict=True):
        if await _job_setting(conn, "policy_refresh_continuous_aggregate", name, "start_offset") != horizon:
            await conn.execute("SELECT remove_continuous_aggregate_policy($1::text::regclass, if_exists => true)", name)
            await conn.execute(
                "SELECT add_continuous_aggregate_policy($1::text::regclass, start_offset => $2::interval,"
                " end_offset => $3::interval, schedule_interval => $4::interval)",
                name,
                horizon,
                width,
                every,
            )
            changed.append(f"refresh {name}")
    return changed


async def _drop_expired_partitions(conn: asyncpg.Connection, retention: timedelta, now: datetime) -> list[str]:
    """Drop the partitions whose whole range ended before ``now - retention``."""
    cutoff = (now - retention).astimezone(UTC).date()
    dropped: list[str] = []
    for p in await existing_partitions(conn):
        if p.hi <= cutoff:
            await conn.execute(f"DROP TABLE IF EXISTS {p.name}")  # the name is built from dates only
            dropped.append(p.name)
    return dropped


async def apply_storage_policy(
    conn: asyncpg.Connection, policy: StoragePolicy, *, now: datetime | None = None
) -> list[str]:
    """Bring the database's policies in line with ``policy``; returns what changed (or was dropped)."""
    storage = await storage_kind(conn)
    await conn.execute("SELECT pg_advisory_lock($1)", _POLICY_LOCK)
    try:
        if storage == "timescaledb":
            changed = await _apply_timescale(conn, policy)
        elif policy.retention is not None:
            changed = await _drop_expired_partitions(conn, policy.retention, now or datetime.now(UTC))
        else:
            changed = []
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _POLICY_LOCK)
    if changed:
        log.info("storage policy applied", extra={"storage": storage, "changed": changed})
    return changed
