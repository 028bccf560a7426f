"""VEE and the estimate-replacing merge on TimescaleDB (PGlite + TimescaleDB 2.23, no Docker).

The hypertable takes the same UPDATEs, upserts and deletes as plain PostgreSQL. Rows go in with
INSERT: COPY does not pass pglite-socket.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from gxami_ingest import vee_sql as f
from gxami_ingest.vee import VeeSettings, run_vee
from gxami_ingest.vee_merge import MERGE_REPLACING_ESTIMATES
from gxami_ingest.writer import _CREATE_STAGING
from gxami_store import migrate, storage_kind
from gxami_store.pglite import PGliteUnavailableError, pglite_server

pytestmark = pytest.mark.integration

PGLITE_DIR = Path(__file__).resolve().parents[3] / "deploy" / "pglite"
E = "1-0:1.8.0"
Q15 = timedelta(minutes=15)
T0 = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=3)


@pytest.fixture(scope="module")
def timescale_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with contextlib.ExitStack() as stack:
        try:
            dsn = stack.enter_context(pglite_server(PGLITE_DIR, tmp_path_factory.mktemp("pglite") / "server.log"))
        except PGliteUnavailableError as exc:
            pytest.fail(f"PGlite/TimescaleDB could not start ({exc}); `make install` runs npm ci for it")
        yield dsn


async def test_vee_flags_estimates_and_yields_to_real_values_on_a_hypertable(timescale_url: str) -> None:
    conn = await asyncpg.connect(timescale_url)
    try:
        await migrate(conn)
        assert await storage_kind(conn) == "timescaledb"
        values = {0: 10.0, 1: 10.25, 2: 10.5, 3: 10.75, 4: 11.0, 5: 11.25, 8: 12.0, 9: 42.0, 10: 42.25}
        await conn.executemany(
            "INSERT INTO readings (meter_id, quantity, ts, value, unit) VALUES ('H', $1, $2, $3, 'kWh')",
            [(E, T0 + k * Q15, v) for k, v in values.items()],
        )
        stats = await run_vee(conn, settings=VeeSettings())
        assert (stats.channels, stats.estimates_written) == (1, 2)
        rows = {
            r["ts"]: (r["value"], r["vee_flags"])
            for r in await conn.fetch("SELECT ts, value, vee_flags FROM readings WHERE meter_id = 'H'")
        }
        assert rows[T0 + 6 * Q15] == (11.5, f.ESTIMATED)
        assert rows[T0 + 7 * Q15] == (11.75, f.ESTIMATED)
        assert rows[T0 + 8 * Q15] == (12.0, f.GAP_BEFORE)
        assert rows[T0 + 9 * Q15] == (42.0, f.SPIKE)

        async with conn.transaction():
            await conn.execute(_CREATE_STAGING)
            await conn.execute(
                "INSERT INTO ingest_staging VALUES ('H', $1, $2, 11.6, 'kWh', 0, 'late')", E, T0 + 6 * Q15
            )
            merged = await conn.fetchrow(MERGE_REPLACING_ESTIMATES)
        assert merged is not None and (merged["inserted"], merged["replaced_estimates"]) == (0, 1)
        await run_vee(conn, settings=VeeSettings())
        est = await conn.fetch("SELECT ts, value FROM readings WHERE meter_id = 'H' AND vee_flags & 1 <> 0")
        assert [(r["ts"], r["value"]) for r in est] == [(T0 + 7 * Q15, pytest.approx(11.8))]
        q = await conn.fetch(
            "SELECT quality, count(*) AS n FROM interval_consumption WHERE meter_id = 'H'"
            " GROUP BY quality ORDER BY quality"
        )
        assert [(r["quality"], r["n"]) for r in q] == [("estimated", 2), ("measured", 7), ("suspect", 1)]
    finally:
        conn.terminate()
