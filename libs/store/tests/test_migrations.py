"""Migrations on plain PostgreSQL: idempotent, safe from several connections at once, per-storage files."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, date, datetime, timedelta

import asyncpg
import pytest

from gxami_meterlab.devstack import StackEndpoints
from gxami_store import MIGRATIONS, PartitionInterval, PartitionKeeper, migrate, storage_kind
from gxami_store.partitions import Partition, existing_partitions
from gxami_store.timescale import StoragePolicy, apply_storage_policy

pytestmark = pytest.mark.integration


def test_per_storage_migrations_come_in_pairs() -> None:
    versions = [m.version for m in MIGRATIONS]
    assert versions == sorted(set(versions)), "one migration per number"
    aggregates = next(m for m in MIGRATIONS if m.name == "0005_aggregates.sql")
    assert "timescaledb.continuous" in aggregates.for_storage("timescaledb")
    assert "time_bucket" not in aggregates.for_storage("partitioned")
    assert "date_bin" in aggregates.for_storage("partitioned")


async def test_migrating_twice_applies_nothing_the_second_time(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        first = await migrate(conn)
        assert first == [m.name for m in MIGRATIONS]
        assert await migrate(conn) == []
        assert await storage_kind(conn) == "partitioned"
        stored = await conn.fetch("SELECT version, storage FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in stored] == [m.version for m in MIGRATIONS]
        assert {r["storage"] for r in stored} == {"partitioned"}
    finally:
        await conn.close()


async def test_two_connections_migrating_at_once_apply_each_migration_once(database_url: str) -> None:
    a = await asyncpg.connect(database_url)
    b = await asyncpg.connect(database_url)
    try:
        applied_a, applied_b = await asyncio.gather(migrate(a), migrate(b))
        assert sorted(applied_a + applied_b) == sorted(m.name for m in MIGRATIONS)
        assert not set(applied_a) & set(applied_b)
        assert await a.fetchval("SELECT count(*) FROM schema_migrations") == len(MIGRATIONS)
        # the views exist and answer
        for view in (
            "interval_consumption",
            "daily_consumption",
            "monthly_consumption",
            "read_completeness",
            "meter_last_seen",
            "readings_15m",
            "readings_1h",
            "readings_1d",
            "vee_flag_catalog",
        ):
            await b.fetch(f"SELECT * FROM {view} LIMIT 1")
    finally:
        await a.close()
        await b.close()


async def test_two_databases_create_the_cluster_wide_role_at_once(stack: StackEndpoints, database_url: str) -> None:
    # bi_reader is a cluster-wide role: migrations of two databases racing must both succeed.
    admin = await asyncpg.connect(stack.database_url)
    other = f"{database_url.rsplit('/', 1)[1]}_b"
    await admin.execute(f'CREATE DATABASE "{other}"')
    try:
        a = await asyncpg.connect(database_url)
        b = await asyncpg.connect(database_url.rsplit("/", 1)[0] + f"/{other}")
        try:
            await asyncio.gather(migrate(a), migrate(b))
            for conn in (a, b):
                assert await conn.fetchval("SELECT has_table_privilege('bi_reader', 'daily_consumption', 'SELECT')")
        finally:
            await a.close()
            await b.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{other}" WITH (FORCE)')
        await admin.close()


async def test_retention_drops_only_partitions_entirely_past_it(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn)
        keeper = PartitionKeeper(PartitionInterval.MONTH)
        await keeper.load(conn, "partitioned")
        now = datetime(2026, 6, 15, tzinfo=UTC)
        await keeper.ensure(conn, [datetime(2025, 3, 10, tzinfo=UTC), datetime(2025, 6, 20, tzinfo=UTC), now])
        dropped = await apply_storage_policy(conn, StoragePolicy(retention=timedelta(days=365)), now=now)
        # ensure() creates every month between the instants; cutoff 2025-06-15: March, April and
        # May 2025 (ends 1 June) go; June 2025 (ends 1 July) and later stay
        assert sorted(dropped) == [
            "readings_p20250301_20250401",
            "readings_p20250401_20250501",
            "readings_p20250501_20250601",
        ]
        left = {p.name for p in await existing_partitions(conn)}
        assert {
            "readings_p20250601_20250701",
            "readings_p20250701_20250801",
            "readings_p20260601_20260701",
            "readings_p20260701_20260801",
        } <= left
        assert await apply_storage_policy(conn, StoragePolicy(retention=timedelta(days=365)), now=now) == []
    finally:
        await conn.close()


async def test_a_new_partition_width_fills_only_what_existing_partitions_leave(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn)
        monthly = PartitionKeeper(PartitionInterval.MONTH)
        await monthly.load(conn, "partitioned")
        await monthly.ensure(conn, [datetime(2025, 1, 20, tzinfo=UTC)])  # January and February
        daily = PartitionKeeper(PartitionInterval.DAY)
        await daily.load(conn, "partitioned")
        await daily.ensure(conn, [datetime(2025, 2, 27, 12, tzinfo=UTC), datetime(2025, 3, 2, 1, tzinfo=UTC)])
        names = [p.name for p in await existing_partitions(conn)]
        assert names == [
            "readings_p20250101_20250201",
            "readings_p20250201_20250301",
            "readings_p20250301_20250302",
            "readings_p20250302_20250303",
            "readings_p20250303_20250304",
        ]
        # weekly slots start on Monday and skip what the days already cover
        weekly = PartitionKeeper(PartitionInterval.WEEK)
        await weekly.load(conn, "partitioned")
        await weekly.ensure(conn, [datetime(2025, 3, 4, tzinfo=UTC)])  # a Tuesday
        names = [p.name for p in await existing_partitions(conn)]
        assert names[5:] == ["readings_p20250304_20250310", "readings_p20250310_20250317"]
        # every reading of the range lands somewhere: no gap between any two partitions
        parts = await existing_partitions(conn)
        assert all(a.hi == b.lo for a, b in itertools.pairwise(parts))
    finally:
        await conn.close()


def test_partition_names_round_trip_and_foreign_tables_are_ignored() -> None:
    p = Partition(date(2026, 11, 30), date(2026, 12, 1))
    assert Partition.from_name(p.name) == p
    for foreign in (
        "readings_default",
        "readings_p202611",
        "readings_p20261301_20261302",
        "readings_p20261201_20261130",
        "other_p20261130_20261201",
    ):
        assert Partition.from_name(foreign) is None, foreign


def test_storage_policy_refuses_settings_that_cannot_work() -> None:
    with pytest.raises(ValueError, match="at least 3 days"):
        StoragePolicy(backfill_horizon=timedelta(hours=6))
    with pytest.raises(ValueError, match="longer than the back-fill"):
        StoragePolicy(backfill_horizon=timedelta(days=60), retention=timedelta(days=30))


# The columns that 0010 renames, as an older release left them: (table, old name, new name).
RENAMED = [
    ("readings", "quality", "status"),
    ("readings", "source_job", "job_id"),
    ("reading_revisions", "source_job", "job_id"),
    ("register_values", "quality", "status"),
    ("register_values", "source_job", "job_id"),
    ("register_value_revisions", "source_job", "job_id"),
]


async def _columns(conn: asyncpg.Connection, table: str) -> set[str]:
    rows = await conn.fetch(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped", table
    )
    return {r["attname"] for r in rows}


async def test_0010_renames_status_and_job_id_keeping_every_row_partition_view_and_grant(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        before = [m.name for m in MIGRATIONS if m.version <= 9]
        assert await migrate(conn, up_to=9) == before
        keeper = PartitionKeeper(PartitionInterval.DAY)
        await keeper.load(conn, "partitioned")
        at = datetime(2026, 3, 1, 10, 15, tzinfo=UTC)
        await keeper.ensure(conn, [at, at + timedelta(days=1)])
        # data as the previous release wrote it, under the old names
        await conn.executemany(
            "INSERT INTO readings (meter_id, quantity, ts, value, unit, quality, source_job)"
            " VALUES ($1, $2, $3, $4, 'kWh', $5, $6)",
            [("OLD1", "1-0:1.8.0", at, 10.5, 7, "job-a"), ("OLD1", "1-0:1.8.0", at + timedelta(days=1), 12.0, 0, None)],
        )
        await conn.execute(
            "INSERT INTO reading_revisions (meter_id, quantity, ts, value, unit, source_job)"
            " VALUES ('OLD1', '1-0:1.8.0', $1, 10.75, 'kWh', 'job-b')",
            at,
        )
        await conn.execute(
            "INSERT INTO register_values (meter_id, quantity, ts, kind, value, quality, source_job)"
            " VALUES ('OLD1', '0-0:97.97.0', $1, 'bits', '0101', 3, 'job-a')",
            at,
        )
        await conn.execute(
            "INSERT INTO register_value_revisions (meter_id, quantity, ts, kind, value, source_job)"
            " VALUES ('OLD1', '0-0:97.97.0', $1, 'bits', '0111', 'job-b')",
            at,
        )
        await conn.execute("REFRESH MATERIALIZED VIEW readings_15m")
        partition = (await existing_partitions(conn))[0].name
        assert "quality" in await _columns(conn, partition)
        assert "quality" in await _columns(conn, "register_values_typed")

        assert await migrate(conn) == [m.name for m in MIGRATIONS if m.version > 9]
        assert await migrate(conn) == []
        for table, old, new in RENAMED:
            cols = await _columns(conn, table)
            assert new in cols and old not in cols, (table, cols)
        # the partitions follow their parent
        for p in await existing_partitions(conn):
            cols = await _columns(conn, p.name)
            assert {"status", "job_id"} <= cols and not {"quality", "source_job"} & cols, (p.name, cols)
        # every row is still there, under the new names
        readings = await conn.fetch(
            "SELECT ts, value, status, job_id FROM readings WHERE meter_id = 'OLD1' ORDER BY ts"
        )
        assert [tuple(r) for r in readings] == [(at, 10.5, 7, "job-a"), (at + timedelta(days=1), 12.0, 0, None)]
        assert tuple(await conn.fetchrow("SELECT value, job_id FROM reading_revisions WHERE meter_id = 'OLD1'")) == (
            10.75,
            "job-b",
        )
        assert tuple(
            await conn.fetchrow("SELECT value, status, job_id FROM register_values WHERE meter_id = 'OLD1'")
        ) == ("0101", 3, "job-a")
        assert await conn.fetchval("SELECT job_id FROM register_value_revisions WHERE meter_id = 'OLD1'") == "job-b"
        # the BI view shows the new name, bi_reader may still read it, and the views still answer
        typed = await conn.fetch(
            "SELECT kind, text_value, status FROM register_values_typed WHERE meter_id = 'OLD1' ORDER BY kind"
        )
        assert [tuple(r) for r in typed] == [("bits", "0101", 3), ("number", "10.5", 7), ("number", "12", 0)]
        assert "quality" not in await _columns(conn, "register_values_typed")
        for view in ("register_values_typed", "meter_register_values", "daily_consumption", "readings_15m"):
            assert await conn.fetchval("SELECT has_table_privilege('bi_reader', $1, 'SELECT')", view), view
        await conn.execute("REFRESH MATERIALIZED VIEW readings_15m")
        assert await conn.fetchval("SELECT sum(readings) FROM readings_15m WHERE meter_id = 'OLD1'") == 2
        # the migration's own SQL is safe to run again (a second pod, a lost schema_migrations row)
        rename = next(m for m in MIGRATIONS if m.version == 10)
        await conn.execute(rename.for_storage("partitioned"))
        assert {"status", "job_id"} <= await _columns(conn, "readings")
    finally:
        await conn.close()
