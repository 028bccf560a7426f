"""Reports: the report API over HTTP (JSON, viewer token), beside /metrics and /health (open)."""

from __future__ import annotations

import asyncio
import logging
from datetime import date

import asyncpg
from aiohttp import web
from prometheus_client import Counter

from gxami_reports.queries import daily_consumption, fleet_totals
from gxami_reports.settings import ReportsSettings
from gxami_runtime.auth import Authenticator, PoolTokens, Role, requires
from gxami_runtime.http import OpsServer, bad_request
from gxami_runtime.service import check_database
from gxami_store.migrations import prepare_schema

log = logging.getLogger("gxami.reports")
REQUESTS = Counter("gxami_reports_requests_total", "Report requests", ["report", "status"])


def _date(request: web.Request, name: str) -> date | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise bad_request(f"query parameter {name!r} must be a date like 2026-11-26") from None


def routes(pool: asyncpg.Pool, settings: ReportsSettings) -> web.RouteTableDef:
    r = web.RouteTableDef()

    @r.get("/reports/daily")
    @requires(Role.VIEWER)
    async def daily(request: web.Request) -> web.Response:
        start, end = _date(request, "from"), _date(request, "to")
        async with pool.acquire() as conn:
            rows = await daily_consumption(
                conn, meter_id=request.query.get("meter"), start=start, end=end, limit=settings.max_rows
            )
        REQUESTS.labels("daily", "ok").inc()
        return web.json_response({"report": "daily_consumption", "unit": "kWh", "rows": [x.to_json() for x in rows]})

    @r.get("/reports/fleet")
    @requires(Role.VIEWER)
    async def fleet(_: web.Request) -> web.Response:
        async with pool.acquire() as conn:
            t = await fleet_totals(conn)
        REQUESTS.labels("fleet", "ok").inc()
        return web.json_response({"meters": t.meters, "meters_read": t.meters_read, "readings": t.readings})

    return r


async def main(stop: asyncio.Event, settings: ReportsSettings | None = None) -> None:
    s = settings or ReportsSettings()
    dsn = s.database_url.get_secret_value()
    await check_database(dsn)
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await prepare_schema(conn, migrate_now=s.migrate_on_start)
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4, timeout=10)
    ops = OpsServer.from_settings(s, auth=Authenticator.from_settings(s, PoolTokens(pool)))
    ops.app.add_routes(routes(pool, s))
    port = await ops.start()
    log.info("reports started", extra={"http_port": port})
    try:
        await stop.wait()
    finally:
        await ops.stop()
        await pool.close()
        log.info("reports stopped")
