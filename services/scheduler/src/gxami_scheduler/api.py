"""The fleet API on the ops server: list and show meters (viewer), ask for an on-demand read (operator)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import asyncpg
from aiohttp import web

from gxami_runtime.auth import Role, principal_of, requires
from gxami_runtime.http import json_error, read_json_object
from gxami_scheduler.dialin import dial_in_state
from gxami_scheduler.registry import ReadRequestOutcome, get_meter, list_meters, request_read

log = logging.getLogger(__name__)

DEFAULT_PAGE = 100
MAX_PAGE = 1000

Clock = Callable[[], datetime]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FleetApi:
    """Routes over the meter registry; the database pool and clock are passed in."""

    def __init__(self, pool: asyncpg.Pool, clock: Clock) -> None:
        self._pool = pool
        self._clock = clock

    def install(self, app: web.Application) -> None:
        viewer, operator = requires(Role.VIEWER), requires(Role.OPERATOR)
        app.router.add_get("/meters", viewer(self._guard(self.list)))
        app.router.add_get("/meters/{meter_id}", viewer(self._guard(self.show)))
        app.router.add_post("/meters/{meter_id}/read", operator(self._guard(self.read_now)))

    def _guard(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("fleet API: database unavailable", extra={"error": type(exc).__name__})
                return json_error(503, "database unavailable")

        return guarded

    async def list(self, request: web.Request) -> web.StreamResponse:
        """GET /meters?limit=N&after=ID&group=G: one page ordered by meter id; ``next`` continues it."""
        try:
            limit = int(request.query.get("limit", DEFAULT_PAGE))
        except ValueError:
            return json_error(400, "limit must be a whole number")
        if not 1 <= limit <= MAX_PAGE:
            return json_error(400, f"limit must be between 1 and {MAX_PAGE}")
        after = request.query.get("after") or None
        group = request.query.get("group")
        async with self._pool.acquire() as conn:
            meters = await list_meters(conn, limit=limit, after=after, group=group)
        body: dict[str, Any] = {
            "meters": meters,
            "next": meters[-1]["meter_id"] if len(meters) == limit else None,
        }
        return web.json_response(body)

    async def show(self, request: web.Request) -> web.StreamResponse:
        """GET /meters/{id}: the registry entry and schedule state, or 404."""
        meter_id = request.match_info["meter_id"]
        async with self._pool.acquire() as conn:
            meter = await get_meter(conn, meter_id)
            dial_in = await dial_in_state(conn, meter_id) if meter is not None else None
        if meter is None:
            return json_error(404, f"unknown meter {meter_id!r}")
        if dial_in is not None:  # a meter that calls us: its last contact and pending job
            meter.update(dial_in)
        return web.json_response(meter)

    async def read_now(self, request: web.Request) -> web.StreamResponse:
        """POST /meters/{id}/read: due now, emitted by the next tick (202); 404 unknown, 409 disabled.

        The body is empty or ``{}``; the OpsServer has read all of it (bounded) before this runs,
        and anything else in it is refused before the registry is touched.
        """
        await read_json_object(request)
        meter_id = request.match_info["meter_id"]
        async with self._pool.acquire() as conn:
            outcome = await request_read(conn, meter_id, self._clock())
        if outcome is ReadRequestOutcome.UNKNOWN:
            return json_error(404, f"unknown meter {meter_id!r}")
        if outcome is ReadRequestOutcome.DISABLED:
            return json_error(409, f"meter {meter_id!r} is disabled")
        who = principal_of(request)
        log.info("on-demand read requested", extra={"meter_id": meter_id, "token_name": who.name if who else None})
        return web.json_response({"meter_id": meter_id, "status": outcome.value}, status=202)
