"""The TimescaleDB path, without Docker: PGlite with TimescaleDB 2.23 behind pglite-socket.

Migrations, the hypertable with compression segmented by meter, the policies from settings,
the continuous aggregates and every BI view, created and queried through asyncpg. Rows go in
with INSERT (COPY does not pass the socket). One in-memory database for the whole session, so
each test uses its own meters.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import asyncpg
import pytest

from gxami_store import MIGRATIONS, migrate, storage_kind
from gxami_store.aggregates import AGGREGATES, refresh_aggregates
from gxami_store.timescale import StoragePolicy, apply_storage_policy

pytestmark = pytest.mark.integration

E = "1-0:1.8.0"
Q15 = timedelta(minutes=15)


def t(s: str) -> datetime:
    return datetime.fromisoformat(s).replace(tzinfo=UTC)


async def _db(dsn: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn)
    await migrate(conn)
    return conn


async def _meter(conn: asyncpg.Connection, meter_id: str) -> None:
    await conn.execute(
        "INSERT INTO meters (meter_id, protocol, url, link_id, profile, interval_s, enabled)"
        " VALUES ($1, 'dlms', 'tcp://m:1', 'tcp://m:1', 'generic', 900, false)",
        meter_id,
    )


async def _put(conn: asyncpg.Connection, rows: list[tuple[str, str, datetime, float, str]]) -> None:
    await conn.executemany(
        "INSERT INTO readings (meter_id, quantity, ts, value, unit) VALUES ($1, $2, $3, $4, $5)", rows
    )


async def test_migrations_build_a_compressed_hypertable_with_policies_and_continuous_aggregates(
    pglite_url: str,
) -> None:
    conn = await _db(pglite_url)
    try:
        assert await storage_kind(conn) == "timescaledb"
        assert await migrate(conn) == []
        assert await conn.fetchval(
            "SELECT compression_enabled FROM timescaledb_information.hypertables WHERE hypertable_name = 'readings'"
        )
        segment_by = await conn.fetchval(
            "SELECT segmentby FROM timescaledb_information.hypertable_compression_settings"
            " WHERE hypertable = 'readings'::regclass"
        )
        assert segment_by == "meter_id"
        caggs = {
            r["view_name"]: r["materialized_only"]
            for r in await conn.fetch(
                "SELECT view_name, materialized_only FROM timescaledb_information.continuous_aggregates"
            )
        }
        assert caggs == dict.fromkeys(AGGREGATES, False)  # real-time: fresh rows show before a refresh

        policy = StoragePolicy(backfill_horizon=timedelta(days=30), retention=timedelta(days=3650))
        changed = await apply_storage_policy(conn, policy)
        # the migration's 7-day chunks become the policy's width (default: one day) for new chunks
        assert set(changed) == {"chunk interval", "compression", "retention", *(f"refresh {a}" for a in AGGREGATES)}
        assert await conn.fetchval(
            "SELECT time_interval FROM timescaledb_information.dimensions WHERE hypertable_name = 'readings'"
        ) == timedelta(days=1)
        jobs = {
            (r["proc_name"], r["hypertable_name"]): r["config"]
            for r in await conn.fetch(
                "SELECT proc_name, hypertable_name, config::text AS config FROM timescaledb_information.jobs"
                " WHERE hypertable_name IS NOT NULL"
            )
        }
        assert '"compress_after": "30 days"' in jobs[("policy_compression", "readings")]
        assert '"drop_after": "3650 days"' in jobs[("policy_retention", "readings")]
        for a in AGGREGATES:
            assert '"start_offset": "30 days"' in jobs[("policy_refresh_continuous_aggregate", a)]
        # a second pod applying the same settings changes nothing
        assert await apply_storage_policy(conn, policy) == []
    finally:
        conn.terminate()


async def test_views_and_rollups_answer_the_same_on_timescaledb_also_from_compressed_chunks(pglite_url: str) -> None:
    conn = await _db(pglite_url)
    try:
        await _meter(conn, "TS1")
        values = [999998.75, 999999.0, 999999.25, 999999.5, 999999.75, 0.0, 0.25, 0.5, 0.75]
        await _put(conn, [("TS1", E, t("2026-03-01 23:00") + i * Q15, v, "kWh") for i, v in enumerate(values)])
        await _put(
            conn,
            [
                ("TS1", q, t(s), v, "kWh")
                for q, vs in {"1-0:1.8.1": [100.0, 220.0, 300.0], "1-0:1.8.2": [50.0, 90.0, 95.0]}.items()
                for s, v in zip(["2026-01-01 00:00", "2026-02-01 00:00", "2026-03-01 00:00"], vs, strict=True)
            ],
        )

        async def answers() -> dict[str, object]:
            return {
                "interval": [
                    (r["interval_start"], r["consumption"])
                    for r in await conn.fetch(
                        "SELECT interval_start, consumption FROM interval_consumption WHERE meter_id = 'TS1'"
                        " ORDER BY interval_start"
                    )
                ],
                "daily": [
                    tuple(r)
                    for r in await conn.fetch(
                        "SELECT day, kwh, readings FROM daily_consumption WHERE meter_id = 'TS1' ORDER BY day"
                    )
                ],
                "monthly": [
                    tuple(r)
                    for r in await conn.fetch(
                        "SELECT month, quantity, tariff, consumption FROM monthly_consumption"
                        " WHERE meter_id = 'TS1' AND NOT partial AND quantity <> $1 ORDER BY month, quantity",
                        E,
                    )
                ],
                "complete": [
                    tuple(r)
                    for r in await conn.fetch(
                        "SELECT day, expected, received, missing FROM read_completeness"
                        " WHERE meter_id = 'TS1' AND quantity = $1 ORDER BY day",
                        E,
                    )
                ],
                "15m": [
                    tuple(r)
                    for r in await conn.fetch(
                        "SELECT interval_start, readings, last_value FROM readings_15m WHERE meter_id = 'TS1'"
                        " AND quantity = $1 ORDER BY interval_start LIMIT 2",
                        E,
                    )
                ],
                "1d": [
                    tuple(r)
                    for r in await conn.fetch(
                        "SELECT interval_start, readings, first_value, last_value FROM readings_1d"
                        " WHERE meter_id = 'TS1' AND quantity = $1 ORDER BY interval_start",
                        E,
                    )
                ],
            }

        before = await answers()
        assert before["interval"] == [(t("2026-03-01 23:00") + i * Q15, 0.25) for i in range(8)]
        assert before["daily"] == [(date(2026, 3, 2), 1.0, 4)]
        assert before["monthly"] == [
            (date(2026, 1, 1), "1-0:1.8.1", 1, 120.0),
            (date(2026, 1, 1), "1-0:1.8.2", 2, 40.0),
            (date(2026, 2, 1), "1-0:1.8.1", 1, 80.0),
            (date(2026, 2, 1), "1-0:1.8.2", 2, 5.0),
        ]
        assert before["complete"] == [(date(2026, 3, 1), 5, 5, 0), (date(2026, 3, 2), 4, 4, 0)]
        assert before["15m"] == [(t("2026-03-01 22:45"), 1, 999998.75), (t("2026-03-01 23:00"), 1, 999999.0)]
        assert before["1d"] == [(t("2026-03-01 00:00"), 5, 999998.75, 999999.75), (t("2026-03-02 00:00"), 4, 0.0, 0.75)]

        assert await refresh_aggregates(conn) == list(AGGREGATES)
        # the refresh materialized the buckets: they are there with real-time aggregation off, too
        await conn.execute("ALTER MATERIALIZED VIEW readings_1d SET (timescaledb.materialized_only = true)")
        try:
            assert (await answers())["1d"] == before["1d"]
        finally:
            await conn.execute("ALTER MATERIALIZED VIEW readings_1d SET (timescaledb.materialized_only = false)")
        assert await answers() == before
        compressed = await conn.fetch(
            "SELECT compress_chunk(c, if_not_compressed => true) FROM show_chunks('readings') c"
        )
        assert compressed
        assert await conn.fetchval(
            "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'readings' AND is_compressed"
        ) == len(compressed)
        assert await answers() == before
    finally:
        conn.terminate()


async def test_bi_reader_on_timescaledb_reads_views_and_continuous_aggregates_but_no_table(pglite_url: str) -> None:
    conn = await _db(pglite_url)
    try:
        await conn.execute("SET ROLE bi_reader")
        for view in (
            "interval_consumption",
            "daily_consumption",
            "monthly_consumption",
            "read_completeness",
            "meter_last_seen",
            *AGGREGATES,
            "vee_flag_catalog",
        ):
            await conn.fetch(f"SELECT * FROM {view} LIMIT 5")
        for table in ("readings", "meters", "reading_revisions"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch(f"SELECT 1 FROM {table} LIMIT 1")
    finally:
        await conn.execute("RESET ROLE")
        conn.terminate()


async def test_0010_renames_status_and_job_id_on_a_compressed_hypertable_with_continuous_aggregates(
    pglite_url: str,
) -> None:
    # PGlite is one database shared by the session, so the release before 0010 is built in a schema
    # of its own (first on the search path; TimescaleDB's functions stay in public).
    schema = f"m9_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(pglite_url)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        await conn.execute(f"SET search_path TO {schema}, public")
        assert await migrate(conn, up_to=9) == [m.name for m in MIGRATIONS if m.version <= 9]
        assert await storage_kind(conn) == "timescaledb"
        at = t("2026-02-01 10:15")
        await _meter(conn, "TSR")
        await conn.executemany(
            "INSERT INTO readings (meter_id, quantity, ts, value, unit, quality, source_job)"
            " VALUES ('TSR', $1, $2, $3, 'kWh', $4, $5)",
            [(E, at + i * Q15, 100.0 + i, i % 2, "job-a") for i in range(4)],
        )
        await conn.execute(
            "INSERT INTO reading_revisions (meter_id, quantity, ts, value, unit, source_job)"
            " VALUES ('TSR', $1, $2, 99.5, 'kWh', 'job-b')",
            E,
            at,
        )
        await conn.execute(
            "INSERT INTO register_values (meter_id, quantity, ts, kind, value, quality, source_job)"
            " VALUES ('TSR', '0-0:42.0.0', $1, 'text', 'SIM1', 2, 'job-a')",
            at,
        )
        await conn.execute(
            "INSERT INTO register_value_revisions (meter_id, quantity, ts, kind, value, source_job)"
            " VALUES ('TSR', '0-0:42.0.0', $1, 'text', 'SIM2', 'job-b')",
            at,
        )
        assert await refresh_aggregates(conn) == list(AGGREGATES)
        compressed = await conn.fetch(
            "SELECT compress_chunk(c, if_not_compressed => true) FROM show_chunks('readings') c"
        )
        assert compressed

        assert await migrate(conn) == [m.name for m in MIGRATIONS if m.version > 9]
        assert await migrate(conn) == []
        for table, old, new in (
            ("readings", "quality", "status"),
            ("readings", "source_job", "job_id"),
            ("reading_revisions", "source_job", "job_id"),
            ("register_values", "quality", "status"),
            ("register_values", "source_job", "job_id"),
            ("register_value_revisions", "source_job", "job_id"),
        ):
            cols = await _columns(conn, table)
            assert new in cols and old not in cols, (table, cols)
        # every chunk, the compressed ones too, answers under the new names with the old rows
        chunks = [r["c"] for r in await conn.fetch("SELECT c::text AS c FROM show_chunks('readings') c")]
        assert chunks
        for chunk in chunks:
            assert {"status", "job_id"} <= await _columns(conn, chunk)
        rows = await conn.fetch("SELECT ts, value, status, job_id FROM readings WHERE meter_id = 'TSR' ORDER BY ts")
        assert [tuple(r) for r in rows] == [(at + i * Q15, 100.0 + i, i % 2, "job-a") for i in range(4)]
        assert await conn.fetchval(
            "SELECT count(*) FROM timescaledb_information.chunks"
            " WHERE hypertable_schema = $1 AND hypertable_name = 'readings' AND is_compressed",
            schema,
        ) == len(compressed)
        assert await conn.fetchval("SELECT job_id FROM reading_revisions WHERE meter_id = 'TSR'") == "job-b"
        assert tuple(await conn.fetchrow("SELECT status, job_id FROM register_values WHERE meter_id = 'TSR'")) == (
            2,
            "job-a",
        )
        assert await conn.fetchval("SELECT job_id FROM register_value_revisions WHERE meter_id = 'TSR'") == "job-b"
        # new rows go in under the new names; the continuous aggregates still refresh and answer
        await conn.execute(
            "INSERT INTO readings (meter_id, quantity, ts, value, unit, status, job_id)"
            " VALUES ('TSR', $1, $2, 104.0, 'kWh', 5, 'job-c')",
            E,
            at + 4 * Q15,
        )
        assert await refresh_aggregates(conn) == list(AGGREGATES)
        assert await conn.fetchval("SELECT sum(readings) FROM readings_1d WHERE meter_id = 'TSR'") == 5
        typed = await conn.fetch(
            "SELECT kind, status FROM register_values_typed WHERE meter_id = 'TSR' AND kind = 'text'"
        )
        assert [tuple(r) for r in typed] == [("text", 2)]
        assert await conn.fetchval("SELECT has_table_privilege('bi_reader', 'register_values_typed', 'SELECT')")
        # the migration's own SQL is safe to run again
        await conn.execute(next(m for m in MIGRATIONS if m.version == 10).for_storage("timescaledb"))
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.terminate()


async def _columns(conn: asyncpg.Connection, table: str) -> set[str]:
    rows = await conn.fetch(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped", table
    )
    return {r["attname"] for r in rows}


def test_only_the_community_edition_of_timescaledb_takes_the_timescaledb_path() -> None:
    from gxami_store.migrations import timescale_edition_usable

    assert timescale_edition_usable("timescale") and timescale_edition_usable(None)
    assert not timescale_edition_usable("apache") and not timescale_edition_usable(" Apache ")


async def test_pglite_reports_its_edition_and_the_schema_follows_it(pglite_url: str) -> None:
    from gxami_store.migrations import has_timescaledb, timescale_edition_usable

    conn = await _db(pglite_url)
    try:
        edition = await conn.fetchval("SELECT current_setting('timescaledb.license', true)")
        assert edition == "timescale"  # PGlite's TimescaleDB is the Community build
        assert await has_timescaledb(conn) == timescale_edition_usable(edition)
        assert await storage_kind(conn) == "timescaledb"
    finally:
        conn.terminate()
