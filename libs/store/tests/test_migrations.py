"""Migrations on plain PostgreSQL: idempotent, safe from several connections at once, per-storage files."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from gxami_runtime.devstack import StackEndpoints
from gxami_store import MIGRATIONS, PartitionKeeper, migrate, storage_kind
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
        for view in ("interval_consumption", "daily_consumption", "monthly_consumption", "read_completeness",
                     "meter_last_seen", "readings_15m", "readings_1h", "readings_1d", "vee_flag_catalog"):
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


async def test_retention_drops_only_months_entirely_past_it(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn)
        keeper = PartitionKeeper()
        await keeper.load(conn, "partitioned")
        now = datetime(2026, 6, 15, tzinfo=UTC)
        await keeper.ensure(conn, [datetime(2025, 3, 10, tzinfo=UTC), datetime(2025, 6, 20, tzinfo=UTC), now])
        dropped = await apply_storage_policy(conn, StoragePolicy(retention=timedelta(days=365)), now=now)
        # ensure() creates every month between the instants; cutoff 2025-06-15: March, April and
        # May 2025 (ends 1 June) go; June 2025 (ends 1 July) and later stay
        assert sorted(dropped) == ["readings_p202503", "readings_p202504", "readings_p202505"]
        left = {r["relname"] for r in await conn.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'readings'::regclass")}
        assert {"readings_p202506", "readings_p202507", "readings_p202606", "readings_p202607"} <= left
        assert await apply_storage_policy(conn, StoragePolicy(retention=timedelta(days=365)), now=now) == []
    finally:
        await conn.close()


def test_storage_policy_refuses_settings_that_cannot_work() -> None:
    with pytest.raises(ValueError, match="at least 3 days"):
        StoragePolicy(backfill_horizon=timedelta(hours=6))
    with pytest.raises(ValueError, match="longer than the back-fill"):
        StoragePolicy(backfill_horizon=timedelta(days=60), retention=timedelta(days=30))
