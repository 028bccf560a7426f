"""The TimescaleDB path, without Docker: PGlite with TimescaleDB 2.23 behind pglite-socket.

Migrations, the hypertable with compression segmented by meter, the policies from settings,
the continuous aggregates and every BI view, created and queried through asyncpg. Rows go in
with INSERT (COPY does not pass the socket). One in-memory database for the whole session, so
each test uses its own meters.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import asyncpg
import pytest

from gxami_store import migrate, storage_kind
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
