"""Reports: the report API over HTTP (JSON, viewer token), beside /metrics and /health (open)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from datetime import date

import asyncpg
from aiohttp import web
from prometheus_client import Counter

from gxami_reports.energy import BUCKETS, Bucket, Medium, Period, ReportInputError, medium
from gxami_reports.energy_reports import (
    Scope,
    Table,
    completeness_report,
    consumption_report,
    demand_report,
    load_curve_report,
    scope,
    top_report,
    tou_report,
)
from gxami_reports.export import ImageFormat, comparison_chart, image_size, load_curve_chart, to_csv
from gxami_reports.queries import Conn, daily_consumption, fleet_totals
from gxami_reports.settings import ReportsSettings
from gxami_runtime.auth import Authenticator, PoolTokens, Role, requires
from gxami_runtime.http import OpsServer, bad_request
from gxami_runtime.service import check_database
from gxami_store.migrations import prepare_schema
from gxcore.tariffs import TariffCalendar, load_tariff_file

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


def _period(request: web.Request) -> Period:
    first, last = _date(request, "from"), _date(request, "to")
    if first is None or last is None:
        raise bad_request("query parameters 'from' and 'to' (dates like 2026-11-26) are required")
    if (last - first).days > 366 * 3:
        raise bad_request("a report spans at most three years")
    try:
        return Period(first, last)
    except ReportInputError as exc:
        raise bad_request(str(exc)) from None


def _medium(request: web.Request) -> Medium:
    try:
        return medium(request.query.get("medium", "electricity"))
    except ReportInputError as exc:
        raise bad_request(str(exc)) from None


def _bucket(request: web.Request) -> Bucket:
    raw = request.query.get("by", "total")
    if raw not in BUCKETS:
        raise bad_request(f"query parameter 'by' must be one of {', '.join(BUCKETS)}")
    return raw  # type: ignore[return-value]  # checked against BUCKETS just above


def _hours(request: web.Request) -> tuple[int, int]:
    raw = request.query.get("night", "00-05")
    first, _, last = raw.partition("-")
    try:
        a, b = int(first), int(last)
    except ValueError:
        raise bad_request("query parameter 'night' must be hours like 00-05 (from 00:00 to 05:00)") from None
    if not (0 <= a <= 23 and 0 <= b <= 24 and a != b):
        raise bad_request("query parameter 'night' must be hours like 00-05 (from 00:00 to 05:00)")
    return a, b


def wants_csv(request: web.Request) -> bool:
    """CSV when ?format=csv, or when the Accept header asks for text/csv (and ?format is not json)."""
    fmt = request.query.get("format")
    if fmt is not None and fmt not in ("json", "csv"):
        raise bad_request("query parameter 'format' must be json or csv")
    if fmt is not None:
        return fmt == "csv"
    return "text/csv" in request.headers.get("Accept", "")


def table_response(request: web.Request, table: Table) -> web.Response:
    REQUESTS.labels(table.report, "ok").inc()
    if wants_csv(request):
        return web.Response(
            text=to_csv(table),
            content_type="text/csv",
            charset="utf-8",
            headers={"Content-Disposition": f'attachment; filename="{table.report}.csv"'},
        )
    return web.json_response(table.to_json())


_IMAGE_TYPES: dict[str, str] = {"png": "image/png", "svg": "image/svg+xml"}


def routes(pool: asyncpg.Pool, settings: ReportsSettings, tou: TariffCalendar | None = None) -> web.RouteTableDef:
    r = web.RouteTableDef()

    async def guarded(coro: Awaitable[Table]) -> Table:
        try:
            return await coro
        except ReportInputError as exc:
            raise bad_request(str(exc)) from None

    async def _scoped(request: web.Request, conn: Conn) -> Scope:
        try:
            return await scope(conn, meter=request.query.get("meter"), node=request.query.get("node"))
        except ReportInputError as exc:
            raise bad_request(str(exc)) from None

    async def consumption_table(request: web.Request) -> Table:
        node = request.query.get("node")
        if node is None:
            raise bad_request("query parameter 'node' is required")
        period, by = _period(request), _bucket(request)
        async with pool.acquire() as conn:
            return await guarded(consumption_report(conn, node, period, by))

    async def load_curve_table(request: web.Request) -> Table:
        period, med = _period(request), _medium(request)
        async with pool.acquire() as conn:
            where = await _scoped(request, conn)
            return await load_curve_report(conn, where, med, period)

    @r.get("/reports/consumption")
    @requires(Role.VIEWER)
    async def consumption(request: web.Request) -> web.Response:
        return table_response(request, await consumption_table(request))

    @r.get("/reports/load-curve")
    @requires(Role.VIEWER)
    async def curve(request: web.Request) -> web.Response:
        return table_response(request, await load_curve_table(request))

    @r.get("/reports/demand")
    @requires(Role.VIEWER)
    async def demand(request: web.Request) -> web.Response:
        period, med, night = _period(request), _medium(request), _hours(request)
        async with pool.acquire() as conn:
            where = await _scoped(request, conn)
            table = await demand_report(conn, where, med, period, night)
        return table_response(request, table)

    @r.get("/reports/tou")
    @requires(Role.VIEWER)
    async def time_of_use(request: web.Request) -> web.Response:
        if tou is None:
            raise web.HTTPNotFound(
                text='{"error": "no tariff calendar configured (GXAMI_TOU_CALENDAR)"}', content_type="application/json"
            )
        period, med = _period(request), _medium(request)
        async with pool.acquire() as conn:
            where = await _scoped(request, conn)
            table = await tou_report(conn, where, med, period, tou)
        return table_response(request, table)

    @r.get("/reports/top")
    @requires(Role.VIEWER)
    async def top(request: web.Request) -> web.Response:
        period, med = _period(request), _medium(request)
        try:
            n = int(request.query.get("n", "10"))
        except ValueError:
            raise bad_request("query parameter 'n' must be a whole number") from None
        if not 1 <= n <= 1000:
            raise bad_request("query parameter 'n' must be between 1 and 1000")
        async with pool.acquire() as conn:
            table = await guarded(top_report(conn, request.query.get("node"), med, period, n))
        return table_response(request, table)

    @r.get("/reports/completeness")
    @requires(Role.VIEWER)
    async def complete(request: web.Request) -> web.Response:
        period = _period(request)
        async with pool.acquire() as conn:
            table = await guarded(completeness_report(conn, request.query.get("node"), period))
        return table_response(request, table)

    @r.get("/reports/{chart:load-curve|consumption}.{fmt:png|svg}")
    @requires(Role.VIEWER)
    async def chart(request: web.Request) -> web.Response:
        fmt: ImageFormat = "png" if request.match_info["fmt"] == "png" else "svg"
        try:
            width, height = image_size(request.query.get("width"), request.query.get("height"))
        except ReportInputError as exc:
            raise bad_request(str(exc)) from None
        if request.match_info["chart"] == "load-curve":
            table = await load_curve_table(request)
            body = await asyncio.to_thread(load_curve_chart, table, fmt, width, height)
        else:
            med = _medium(request)
            table = await consumption_table(request)
            body = await asyncio.to_thread(comparison_chart, table, med.name, fmt, width, height)
        REQUESTS.labels(f"{table.report}_chart", "ok").inc()
        return web.Response(body=body, content_type=_IMAGE_TYPES[fmt])

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
    tou = load_tariff_file(s.tou_calendar) if s.tou_calendar is not None else None
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4, timeout=10)
    ops = OpsServer.from_settings(s, auth=Authenticator.from_settings(s, PoolTokens(pool)))
    ops.app.add_routes(routes(pool, s, tou))
    port = await ops.start()
    log.info("reports started", extra={"http_port": port})
    try:
        await stop.wait()
    finally:
        await ops.stop()
        await pool.close()
        log.info("reports stopped")
