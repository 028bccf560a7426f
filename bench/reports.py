"""Reports API latency over one month of a fleet, against the same SQL run bare.

A fleet of 10,000 meters (``--quick``: 1,000) in one campus: 10 sites x 10 buildings, each
building a main meter with its submeters on four floors. One month of hourly interval data
(``--full``: 15-minute, 29.8M readings) is filled server-side (``INSERT ... SELECT
generate_series``, not timed). The real reports service (``python -m gxami_reports``) then
answers ``GET /reports/consumption?node=campus`` for the month: the whole tree with every
residual, against the previous month and the same month last year. ``value`` is its median
latency over 5 requests (after one warm-up); ``limit`` the median time of the same SQL the
service runs (the memberships, the node list and the three per-meter register differences) sent bare through
asyncpg in this process; ratio = bare / API, so 1.0 means the service adds nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import aiohttp
import asyncpg

from bench.figures import Figure, RunContext
from bench.stack import ServiceProcess
from gxami_meterlab.devstack_procs import free_port
from gxami_reports.energy import MEDIA, Period
from gxami_reports.hierarchy import PER_METER_SQL, bucket_edges
from gxami_runtime.auth import Role, create_token
from gxami_store import PartitionKeeper, migrate, storage_kind

FIRST = date(2026, 10, 1)
LAST = date(2026, 10, 31)
ROUNDS = 5
METERS_PER_BUILDING = 100

_METERS = """
INSERT INTO meters (meter_id, protocol, url, link_id, profile, interval_s)
SELECT 'R' || lpad(m::text, 6, '0'), 'dlms', 'tcp://10.0.0.1:4059', 'l' || (m / 100), 'generic-dlms', $2
  FROM generate_series(0, $1::int - 1) AS m
"""
_NODES = """
INSERT INTO hierarchy_nodes (node_path, parent_path, name, depth)
SELECT 'campus', NULL, 'campus', 1
UNION ALL SELECT 'campus/s' || s, 'campus', 's' || s, 2 FROM generate_series(0, 9) s
UNION ALL SELECT 'campus/s' || s || '/b' || b, 'campus/s' || s, 'b' || b, 3
            FROM generate_series(0, 9) s, generate_series(0, 9) b
UNION ALL SELECT 'campus/s' || s || '/b' || b || '/f' || f, 'campus/s' || s || '/b' || b, 'f' || f, 4
            FROM generate_series(0, 9) s, generate_series(0, 9) b, generate_series(1, 4) f
"""
# Meter m sits in building m / 100 (site / 10, building % 10); the first of each building is
# its main meter, the others are its submeters on floors 1-4.
_MEMBERS = """
INSERT INTO meter_nodes (meter_id, node_path, submeter_of)
SELECT 'R' || lpad(m::text, 6, '0'),
       'campus/s' || ((m / 100) / 10 % 10) || '/b' || ((m / 100) % 10)
           || CASE WHEN m % 100 = 0 THEN '' ELSE '/f' || (1 + m % 4) END,
       CASE WHEN m % 100 = 0 THEN NULL ELSE 'R' || lpad((m - m % 100)::text, 6, '0') END
  FROM generate_series(0, $1::int - 1) AS m
"""
_CHANNELS = """
INSERT INTO meter_channels (meter_id, quantity, interval_s)
SELECT meter_id, '1-0:1.8.0', $1 FROM meters
"""
_FILL = """
INSERT INTO readings (meter_id, quantity, ts, value, unit, status, job_id)
SELECT 'R' || lpad(m::text, 6, '0'), '1-0:1.8.0', $1::timestamptz + i * make_interval(secs => $4),
       round((1000.0 + m + 0.4 * i + 0.05 * sin(i / 4.0 + m))::numeric, 3)::float8, 'kWh', 0, 'fill'
  FROM generate_series($2::int, $3::int) AS i
 CROSS JOIN generate_series(0, $5::int - 1) AS m
"""


async def _fill(dsn: str, meters: int, interval_s: int, ctx: RunContext) -> None:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await migrate(conn)
        keeper = PartitionKeeper()
        await keeper.load(conn, await storage_kind(conn))
        start = datetime(FIRST.year, FIRST.month, FIRST.day, tzinfo=UTC)
        intervals = (LAST - FIRST).days * 86400 // interval_s + 86400 // interval_s
        await keeper.ensure(conn, [start, start + timedelta(seconds=interval_s * intervals)])
        await conn.execute(_METERS, meters, interval_s)
        await conn.execute(_NODES)
        await conn.execute(_MEMBERS, meters)
        await conn.execute(_CHANNELS, interval_s)
        chunk = max(1, 1_000_000 // meters)
        for i in range(0, intervals + 1, chunk):
            await conn.execute(_FILL, start, i, min(i + chunk - 1, intervals), interval_s, meters, timeout=600)
        await conn.execute("VACUUM ANALYZE readings")
        ctx.note(f"reports: {meters} meters x {intervals + 1} intervals of {interval_s} s filled")
    finally:
        await conn.close()


async def _bare(conn: asyncpg.Connection, meters: list[str], period: Period) -> float:
    """One pass of the service's SQL for the consumption report on an open connection, timed."""
    quantities = [m.quantity for m in MEDIA.values()]
    began = time.perf_counter()
    await conn.fetch(
        "SELECT m.meter_id, n.node_path, n.submeter_of FROM meters m LEFT JOIN meter_nodes n USING (meter_id)"
    )
    await conn.fetch("SELECT node_path FROM hierarchy_nodes ORDER BY node_path")
    for p in (period, period.previous("total"), period.last_year()):
        await conn.fetch(PER_METER_SQL, meters, bucket_edges(p, "total"), quantities)
    return time.perf_counter() - began


async def _run(ctx: RunContext) -> Figure:
    meters = ctx.size.pick(1_000, 10_000, 10_000)
    interval_s = ctx.size.pick(3600, 3600, 900)
    stack = ctx.stack()
    async with stack.database("reports") as dsn:
        await _fill(dsn, meters, interval_s, ctx)
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            token = await create_token(conn, "bench", Role.VIEWER, "bench")
            ids = [r["meter_id"] for r in await conn.fetch("SELECT meter_id FROM meters ORDER BY 1")]
        finally:
            await conn.close()
        port = free_port("127.0.0.1")
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("GXAMI_")},
            "GXAMI_DATABASE_URL": dsn,
            "GXAMI_HTTP_PORT": str(port),
            "GXAMI_LOG_LEVEL": "WARNING",
            "GXAMI_INSTANCE": "bench",
        }
        service = ServiceProcess("gxami_reports", env, stack.scratch("reports") / "reports.log")
        url = f"http://127.0.0.1:{port}/reports/consumption?node=campus&from={FIRST}&to={LAST}"
        try:
            async with aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {token.token}"}, timeout=aiohttp.ClientTimeout(total=600)
            ) as http:
                for _ in range(600):
                    if not service.running():
                        raise RuntimeError(f"reports exited with {service.proc.returncode}:\n{service.tail()}")
                    try:
                        async with http.get(f"http://127.0.0.1:{port}/health") as r:
                            if r.status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.1)
                api: list[float] = []
                rows = 0
                for i in range(ROUNDS + 1):
                    began = time.perf_counter()
                    async with http.get(url) as r:
                        body = await r.read()
                        if r.status != 200:
                            raise RuntimeError(f"reports answered {r.status}: {body[:300]!r}")
                    if i:  # the first request warms caches and the pool
                        api.append(time.perf_counter() - began)
                    rows = len(json.loads(body)["rows"])
        finally:
            code = await asyncio.to_thread(service.stop)
            if code not in (0, -15):
                ctx.note(f"reports exited with {code}; log tail:\n{service.tail()}")
        period = Period(FIRST, LAST)
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            await _bare(conn, ids, period)  # warm-up, as for the API (prepared statements, caches)
            bare = [await _bare(conn, ids, period) for _ in range(ROUNDS)]
        finally:
            await conn.close()
    return Figure(
        "reports_api_month",
        statistics.median(api) * 1000,
        "ms",
        statistics.median(bare) * 1000,
        better="lower",
        extra={"peer": "the same SQL via asyncpg", "meters": meters, "interval_s": interval_s, "report_rows": rows},
    )


def run(ctx: RunContext) -> Iterator[Figure]:
    yield asyncio.run(_run(ctx))
