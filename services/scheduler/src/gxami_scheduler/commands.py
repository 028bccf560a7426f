"""The command API (POST/GET /commands, approve, cancel), the queue that publishes them, and their results.

Nothing is stored, let alone queued, for a request that is refused: form (400), an unknown meter
(404, or 422 in a list or group), a kind the meter's protocol or profile does not support (422),
an expiry already past (422), a replayed ``command_id`` with other content (409). The same
``command_id`` with the same content answers the command as it is (200).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

import asyncpg
from aiohttp import web
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from gxami_contracts import CommandResult, Message
from gxami_contracts.topics import COMMANDS
from gxami_runtime.auth import Role, principal_of, requires
from gxami_runtime.http import client_address, json_error, read_json_object
from gxami_runtime.isolation import database_refusal
from gxami_runtime.kafka import DeadLetters, Decoded, consume_batches
from gxami_scheduler.command_model import FIELDS, CommandError, MeterState, parse_request
from gxami_scheduler.command_store import (
    Created,
    Decision,
    apply_results,
    approve,
    cancel,
    check_support,
    claim_due_commands,
    command_json,
    command_result_refusal,
    create_command,
    existing_command,
    expire_overdue,
    list_commands,
    load_profiles,
    resolve_meters,
    unqueue,
)
from gxami_scheduler.metrics import SchedulerMetrics
from gxami_scheduler.rollout_commands import advance_rollouts
from gxami_scheduler.settings import SchedulerSettings

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
DB_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
DEFAULT_PAGE = 100
MAX_PAGE = 1000
RESULTS_RETRY_S = 2.0


def _error(exc: CommandError) -> web.Response:
    return web.json_response({"error": exc.message, **exc.detail}, status=exc.status)


class CommandApi:
    """Routes over the commands in the database; who asks comes from the request's token."""

    def __init__(self, pool: asyncpg.Pool, clock: Clock, settings: SchedulerSettings) -> None:
        self._pool = pool
        self._clock = clock
        self._default_expiry = timedelta(seconds=settings.command_default_expiry_s)
        self._four_eyes_above = settings.command_four_eyes_above

    def install(self, app: web.Application) -> None:
        viewer, operator = requires(Role.VIEWER), requires(Role.OPERATOR)
        app.router.add_post("/commands", operator(self._guard(self.create)))
        app.router.add_get("/commands", viewer(self._guard(self.list)))
        app.router.add_get("/commands/{command_id}", viewer(self._guard(self.show)))
        app.router.add_post("/commands/{command_id}/approve", operator(self._guard(self.approve)))
        app.router.add_post("/commands/{command_id}/cancel", operator(self._guard(self.cancel)))

    def _guard(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except CommandError as exc:
                return _error(exc)
            except DB_ERRORS as exc:
                log.warning("command API: database unavailable", extra={"error": type(exc).__name__})
                return json_error(503, "database unavailable")

        return guarded

    @staticmethod
    def _who(request: web.Request) -> str:
        who = principal_of(request)
        assert who is not None  # every route here requires a role
        return who.name

    async def create(self, request: web.Request) -> web.StreamResponse:
        """POST /commands: 201 new, 200 the same command again; nothing stored on any refusal."""
        parsed = parse_request(await read_json_object(request, allowed=FIELDS))
        who, where, now = self._who(request), client_address(request), self._clock()
        async with self._pool.acquire() as conn:
            if await existing_command(conn, parsed) is Created.EXISTING:
                return web.json_response(await command_json(conn, parsed.command_id), status=200)
            expires_at = parsed.lifetime_end(now, self._default_expiry)
            if expires_at <= now:
                raise CommandError(422, f"command expired on arrival (expires_at {expires_at.isoformat()})")
            meters = await resolve_meters(conn, parsed)
            check_support(parsed, meters, await load_profiles(conn, {m.profile for m in meters}))
            created = await create_command(
                conn,
                parsed,
                meters,
                requested_by=who,
                requested_from=where,
                now=now,
                expires_at=expires_at,
                needs_approval=len(meters) > self._four_eyes_above,
            )
            body = await command_json(conn, parsed.command_id)
        log.info(
            "command requested",
            extra={
                "command_id": parsed.command_id,
                "kind": parsed.kind.value,
                "meters": len(meters),
                "token_name": who,
                "new": created is Created.NEW,
            },
        )
        return web.json_response(body, status=201 if created is Created.NEW else 200)

    async def show(self, request: web.Request) -> web.StreamResponse:
        command_id = request.match_info["command_id"]
        async with self._pool.acquire() as conn:
            body = await command_json(conn, command_id)
        if body is None:
            return json_error(404, f"unknown command {command_id!r}")
        return web.json_response(body)

    async def list(self, request: web.Request) -> web.StreamResponse:
        """GET /commands?state=S&meter=M&limit=N&before=ID: newest first; ``next`` continues."""
        state = request.query.get("state") or None
        if state is not None and state not in {s.value for s in MeterState}:
            return json_error(400, f"state must be one of {', '.join(s.value for s in MeterState)}")
        try:
            limit = int(request.query.get("limit", DEFAULT_PAGE))
        except ValueError:
            return json_error(400, "limit must be a whole number")
        if not 1 <= limit <= MAX_PAGE:
            return json_error(400, f"limit must be between 1 and {MAX_PAGE}")
        async with self._pool.acquire() as conn:
            rows = await list_commands(
                conn,
                state=state,
                meter=request.query.get("meter") or None,
                limit=limit,
                before=request.query.get("before") or None,
            )
        body: dict[str, Any] = {"commands": rows, "next": rows[-1]["command_id"] if len(rows) == limit else None}
        return web.json_response(body)

    async def approve(self, request: web.Request) -> web.StreamResponse:
        """POST /commands/{id}/approve: a second operator, not the requester."""
        await read_json_object(request)
        command_id = request.match_info["command_id"]
        who, where = self._who(request), client_address(request)
        async with self._pool.acquire() as conn:
            decision = await approve(conn, command_id, who, where, self._clock())
            if decision is Decision.UNKNOWN:
                return json_error(404, f"unknown command {command_id!r}")
            if decision is Decision.OWN_COMMAND:
                return json_error(403, "four eyes: a command is approved by another operator than its requester")
            if decision is Decision.NOT_WAITING:
                return json_error(409, f"command {command_id!r} has nothing awaiting approval")
            body = await command_json(conn, command_id)
        log.info("command approved", extra={"command_id": command_id, "token_name": who})
        return web.json_response(body)

    async def cancel(self, request: web.Request) -> web.StreamResponse:
        """POST /commands/{id}/cancel: the meters not yet queued for the collector are cancelled."""
        await read_json_object(request)
        command_id = request.match_info["command_id"]
        who, where = self._who(request), client_address(request)
        async with self._pool.acquire() as conn:
            decision = await cancel(conn, command_id, who, where, self._clock())
            if decision is Decision.UNKNOWN:
                return json_error(404, f"unknown command {command_id!r}")
            if decision is Decision.NOT_WAITING:
                return json_error(409, f"command {command_id!r} is already queued or finished; it cannot be cancelled")
            body = await command_json(conn, command_id)
        log.info("command cancelled", extra={"command_id": command_id, "token_name": who})
        return web.json_response(body)


class CommandSender(Protocol):
    async def send_many(self, logical_topic: str, items: Sequence[tuple[str, Message]]) -> None: ...


class CommandQueue:
    """Each tick: expire what is overdue, queue each free meter's next command, publish it keyed by link."""

    results_retry_s = RESULTS_RETRY_S

    def __init__(
        self,
        settings: SchedulerSettings,
        pool: asyncpg.Pool,
        sender: CommandSender,
        clock: Clock,
        metrics: SchedulerMetrics | None = None,
    ) -> None:
        self._metrics = metrics or SchedulerMetrics()
        self._settings = settings
        self._pool = pool
        self._sender = sender
        self._clock = clock

    async def tick(self) -> int:
        """Expire, claim, publish once; returns the number of meter commands published."""
        now = self._clock()
        async with self._pool.acquire() as conn:
            await advance_rollouts(conn, now)  # a started firmware wave becomes a command
            expired = await expire_overdue(
                conn,
                now,
                result_grace=timedelta(seconds=self._settings.result_grace_s),
                lost_after=timedelta(seconds=self._settings.job_timeout_s),
            )
            queued = await claim_due_commands(conn, now, limit=self._settings.claim_limit)
        if expired:
            self._metrics.commands_expired.inc(expired)
        if not queued:
            return 0
        by_site: dict[str | None, list[tuple[str, Message]]] = {}
        for q in queued:
            by_site.setdefault(q.site, []).append((q.message.link_id, q.message))
        try:
            central = by_site.pop(None, [])
            if central:
                await self._sender.send_many(COMMANDS.name, central)
            for site, items in by_site.items():  # an edge site's collectors read <physical topic>.<site>
                await self._sender.send_many(f"{self._settings.topic(COMMANDS.name)}.{site}", items)
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning("publishing commands failed; back to approved", extra={"error": f"{type(exc).__name__}"})
            async with self._pool.acquire() as conn:
                await unqueue(conn, [q.message for q in queued], self._clock())
            raise
        self._metrics.commands_queued.inc(len(queued))
        log.info("queued commands", extra={"commands": len(queued)})
        return len(queued)

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            started = loop.time()
            try:
                await self.tick()
            except (*DB_ERRORS, KafkaError) as exc:
                log.warning("command tick failed", extra={"error": f"{type(exc).__name__}: {exc}"})
            wait = max(0.0, self._settings.tick_seconds - (loop.time() - started))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)

    async def handle_results(self, batch: list[Decoded[CommandResult]]) -> None:
        async with self._pool.acquire() as conn:
            await apply_results(conn, [d.message for d in batch], self._clock())
        for item in batch:
            self._metrics.command_results.labels(outcome=item.message.outcome.value).inc()

    async def run_results(self, consumer: AIOKafkaConsumer, dead_letters: DeadLetters, stop: asyncio.Event) -> None:
        """Consume ami.command-results until ``stop``; a result for no queued command is dead-lettered."""
        from gxami_scheduler.app import rewind_to_committed  # app imports this module

        starting = asyncio.create_task(consumer.start())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait([starting, stopping], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, KafkaError, OSError):
                await starting
            return
        starting.result()
        rewind = False
        while not stop.is_set():
            try:
                if rewind:
                    await rewind_to_committed(consumer)
                    rewind = False
                await consume_batches(
                    consumer,
                    CommandResult,
                    self.handle_results,
                    dead_letters,
                    stop=stop.is_set,
                    refusal=lambda exc: command_result_refusal(exc) or database_refusal(exc),
                )
            except (*DB_ERRORS, KafkaError) as exc:
                rewind = True
                log.warning(
                    "applying command results failed; will re-read from the last commit",
                    extra={"error": f"{type(exc).__name__}: {exc}"},
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.results_retry_s)
