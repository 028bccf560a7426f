"""Wiring: the tick loop that emits read jobs, the job-results consumer, the ops server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import asyncpg
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from gxami_contracts import DEAD_LETTER, JobResult, Message
from gxami_contracts.topics import (
    COMMAND_RESULTS,
    COMMANDS,
    DIAL_IN_CONTACTS,
    DIAL_IN_WORK,
    FLEET,
    JOB_RESULTS,
    READ_JOBS,
    REGISTRATIONS,
)
from gxami_runtime.auth import Authenticator, PoolTokens, principal_of
from gxami_runtime.http import OpsServer, client_address
from gxami_runtime.isolation import database_refusal
from gxami_runtime.kafka import (
    DeadLetters,
    Decoded,
    Publisher,
    consume_batches,
    ensure_topics,
    make_consumer,
    make_producer,
)
from gxami_runtime.service import StartupError, check_database, kafka_startup_error, redact_dsn
from gxami_scheduler.api import FleetApi
from gxami_scheduler.clock_sync import ClockSync
from gxami_scheduler.commands import CommandApi, CommandQueue
from gxami_scheduler.dialin import DialInPlanner
from gxami_scheduler.firmware import FirmwareApi
from gxami_scheduler.fleet_feed import FleetFeed
from gxami_scheduler.metrics import SchedulerMetrics
from gxami_scheduler.planner import PlannedRead
from gxami_scheduler.registrations import RegistrationIntake
from gxami_scheduler.schedule import claim_due, count_due, record_results, release
from gxami_scheduler.settings import SchedulerSettings
from gxami_scheduler.sites import JobSender, NoSites, SitePublishers, SiteSenders
from gxami_store.migrations import prepare_schema

log = logging.getLogger(__name__)

# What a database outage looks like from asyncpg; the loops log it and carry on.
DB_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
RESULTS_RETRY_S = 2.0


def utc_now() -> datetime:
    return datetime.now(UTC)


class Scheduler:
    """Claims due meters every tick and publishes their jobs; applies job results to the schedule."""

    results_retry_s = RESULTS_RETRY_S  # pause before re-reading job results after a failure

    def __init__(
        self,
        settings: SchedulerSettings,
        pool: asyncpg.Pool,
        sender: JobSender,
        metrics: SchedulerMetrics,
        clock: Callable[[], datetime] = utc_now,
        sites: SiteSenders | None = None,
        after_results: Callable[[Sequence[JobResult]], Awaitable[object]] | None = None,
    ) -> None:
        self._after_results = after_results  # the clock-sync check (commands)
        self._settings = settings
        self._sites = sites or NoSites()
        self._policy = settings.policy()
        self._shard = settings.shard()
        self._pool = pool
        self._sender = sender
        self._metrics = metrics
        self._clock = clock
        self.ready = False
        self.dial_in: DialInPlanner | None = None  # dial-in meters' results go there too (gxami_scheduler.dialin)

    async def tick(self) -> int:
        """Claim, commit, publish once; returns the number of jobs emitted."""
        started = time.perf_counter()
        now = self._clock()
        limit = self._settings.claim_limit
        async with self._pool.acquire() as conn:
            planned = await claim_due(conn, now, self._policy, limit=limit, shard=self._shard)
            # Fewer than the limit claimed means nothing else was due (bar rows another replica holds).
            due = len(planned) + (await count_due(conn, now, self._shard) if len(planned) >= limit else 0)
        self._metrics.meters_due.set(due)
        sent = await self._publish(planned) if planned else 0
        if sent:
            self._metrics.jobs_emitted.inc(sent)
            log.debug("emitted read jobs", extra={"jobs": sent})
        self._metrics.tick_seconds.observe(time.perf_counter() - started)
        return sent

    async def _publish(self, planned: list[PlannedRead]) -> int:
        """Send each site's jobs to its topic (the others to the central one), all at once; how many went out.

        Nothing sent at all (the broker away): every claim is released, to be claimed again at the
        next tick, and the error raised, as before sites. Some sites' jobs not sent (a site's topic
        missing or refused): the others went, and the failed ones stay in flight until their
        deadline, then come back as lost jobs, with backoff. Released instead, they would be the
        oldest due meters at every tick and could crowd the claim limit, holding other sites back.
        """
        by_site: dict[str | None, list[PlannedRead]] = {}
        for p in planned:
            by_site.setdefault(p.site, []).append(p)
        outcomes = await asyncio.gather(*(self._send_site(site, group) for site, group in by_site.items()))
        errors = [exc for exc in outcomes if exc is not None]
        if errors and len(errors) == len(by_site):
            # Claimed but not published: release them now rather than wait for the in-flight
            # timeout. A job that did go out will find its result stale; the reading it produced
            # is stored anyway (ingest is idempotent).
            async with self._pool.acquire() as conn:
                await release(conn, [p.job.job_id for p in planned])
            raise errors[0]
        return sum(len(group) for group, exc in zip(by_site.values(), outcomes, strict=True) if exc is None)

    async def _send_site(self, site: str | None, group: list[PlannedRead]) -> BaseException | None:
        """Send one site's jobs (``None``: the central topic's); the error if they could not be sent."""
        try:
            sender = self._sender if site is None else await self._sites.for_site(site)
            await sender.send_many(READ_JOBS.name, [(p.job.link_id, p.job) for p in group])
        except (KafkaError, OSError, TimeoutError, LookupError) as exc:
            self._metrics.publish_failures.inc()
            log.warning(
                "publishing read jobs failed",
                extra={"jobs": len(group), "site": site, "error": f"{type(exc).__name__}: {exc}"},
            )
            return exc
        return None

    async def run_ticks(self, stop: asyncio.Event) -> None:
        """Tick every ``tick_seconds`` until ``stop``; the current tick always finishes."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            started = loop.time()
            try:
                await self.tick()
                self.ready = True
            except (*DB_ERRORS, KafkaError) as exc:
                self.ready = False
                log.warning("tick failed", extra={"error": f"{type(exc).__name__}: {exc}"})
            wait = max(0.0, self._settings.tick_seconds - (loop.time() - started))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)

    async def handle_results(self, batch: list[Decoded[JobResult]]) -> None:
        """Apply one batch of job results (one transaction); raises if the database fails."""
        async with self._pool.acquire() as conn:
            outcome = await record_results(conn, [d.message for d in batch], self._clock(), self._policy)
        if self.dial_in is not None:  # dial-in meters have no meter_schedule row: "stale" there, applied here
            outcome = replace(
                outcome, stale=outcome.stale - await self.dial_in.apply_results([d.message for d in batch])
            )
        if self._after_results is not None:  # idempotent: a re-read batch issues nothing twice
            await self._after_results([d.message for d in batch])
        for item in batch:
            self._metrics.job_results.labels(status=item.message.status.value).inc()
        if outcome.stale:
            self._metrics.stale_results.inc(outcome.stale)

    async def run_results(self, consumer: AIOKafkaConsumer, dead_letters: DeadLetters, stop: asyncio.Event) -> None:
        """Start the consumer, consume job results until ``stop``; after a failure, re-read from the commit.

        Joining the group can take seconds; ticks run meanwhile (results wait in the topic).
        """
        if not await self._start_consumer(consumer, stop):
            return
        rewind = False
        while not stop.is_set():
            try:
                if rewind:
                    await rewind_to_committed(consumer)
                    rewind = False
                # A result the database refuses for its data is split out and dead-lettered, not
                # re-read forever: the results behind it must still move their meters' schedules.
                await consume_batches(
                    consumer,
                    JobResult,
                    self.handle_results,
                    dead_letters,
                    stop=stop.is_set,
                    refusal=database_refusal,
                )
            except (*DB_ERRORS, KafkaError) as exc:
                # getmany() has moved past the failed batch: go back to the last commit before
                # fetching again, or the next commit would skip it.
                rewind = True
                log.warning(
                    "applying job results failed; will re-read from the last commit",
                    extra={"error": f"{type(exc).__name__}: {exc}"},
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.results_retry_s)

    async def _start_consumer(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> bool:
        """Start (join the group) unless ``stop`` comes first; False if stopped."""
        starting = asyncio.create_task(consumer.start())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait([starting, stopping], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not starting.done():  # stopped while joining: nothing consumed, nothing to commit
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, KafkaError, OSError):
                await starting
            return False
        try:
            starting.result()
        except (KafkaError, OSError) as exc:
            raise kafka_startup_error(self._settings.kafka_bootstrap, exc) from None
        return True


async def rewind_to_committed(consumer: AIOKafkaConsumer) -> None:
    """Set every assigned partition back to its committed offset (the beginning if none is committed)."""
    for tp in consumer.assignment():
        committed = await consumer.committed(tp)
        if committed is None:
            await consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, committed)


class FleetPublisher:
    """Entries through the publisher, tombstones (a key with no value) straight to the producer."""

    def __init__(self, publisher: Publisher, producer: AIOKafkaProducer, settings: SchedulerSettings) -> None:
        self._publisher = publisher
        self._producer = producer
        self._settings = settings

    async def send_many(self, logical_topic: str, items: Sequence[tuple[str, Message]]) -> None:
        await self._publisher.send_many(logical_topic, items)

    async def tombstone(self, logical_topic: str, key: str) -> None:
        await self._producer.send_and_wait(self._settings.topic(logical_topic), None, key=key.encode())


async def _start_kafka(
    settings: SchedulerSettings, stack: contextlib.AsyncExitStack
) -> tuple[Publisher, AIOKafkaConsumer, AIOKafkaProducer]:
    try:
        await ensure_topics(
            settings,
            [
                READ_JOBS.name,
                JOB_RESULTS.name,
                DEAD_LETTER,
                FLEET.name,
                DIAL_IN_WORK.name,
                DIAL_IN_CONTACTS.name,
                COMMANDS.name,
                COMMAND_RESULTS.name,
                REGISTRATIONS.name,
            ],
        )
        producer = make_producer(settings)
        await producer.start()
        stack.push_async_callback(producer.stop)
        consumer = make_consumer(settings, settings.results_group, settings.topic(JOB_RESULTS.name))
        stack.push_async_callback(consumer.stop)  # started by the results loop; stop() is safe either way
    except (KafkaError, OSError) as exc:
        raise kafka_startup_error(settings.kafka_bootstrap, exc) from None
    return Publisher(producer, settings), consumer, producer


def principal_or_address(request: web.Request) -> str:
    """Write rate limits per token once the request is authenticated, else per peer address."""
    who = principal_of(request)
    return f"token:{who.token_id}" if who is not None else client_address(request)


async def serve(settings: SchedulerSettings, stop: asyncio.Event, *, clock: Callable[[], datetime] = utc_now) -> None:
    """Run the scheduler until ``stop`` is set; dependencies missing at start raise StartupError."""
    dsn = settings.database_url.get_secret_value()
    await check_database(dsn)
    async with contextlib.AsyncExitStack() as stack:
        try:
            conn = await asyncpg.connect(dsn, timeout=10)
            try:
                applied = await prepare_schema(conn, migrate_now=settings.migrate_on_start)
            finally:
                await conn.close()
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=settings.db_pool_size, timeout=10)
            stack.push_async_callback(pool.close)
        except DB_ERRORS as exc:
            raise StartupError(f"cannot use the database at {redact_dsn(dsn)}: {type(exc).__name__}: {exc}") from None
        publisher, consumer, producer = await _start_kafka(settings, stack)
        metrics = SchedulerMetrics(process=True)
        expiry = timedelta(seconds=settings.command_default_expiry_s)
        clock_sync = ClockSync(
            pool,
            threshold_s=settings.clock_sync_threshold_s,
            period=settings.clock_sync_period,
            expiry=expiry,
            clock=clock,
        )
        scheduler = Scheduler(
            settings, pool, publisher, metrics, clock, SitePublishers(producer, settings), clock_sync.after_results
        )
        fleet_sender = FleetPublisher(publisher, producer, settings)
        # Dial-in meters' calls (their last contact), in a group of their own beside the results'.
        contacts = make_consumer(settings, f"{settings.results_group}.dial-in", settings.topic(DIAL_IN_CONTACTS.name))
        stack.push_async_callback(contacts.stop)
        scheduler.dial_in = DialInPlanner(
            pool,
            fleet_sender,
            settings.policy(),
            settings.shard(),
            clock,
            tick_s=settings.tick_seconds,
            limit=settings.claim_limit,
        )
        auth = Authenticator.from_settings(settings, PoolTokens(pool))
        ops = OpsServer.from_settings(
            settings,
            ready=lambda: scheduler.ready,
            registry=metrics.registry,
            auth=auth,
            client_key=principal_or_address,
        )
        FleetApi(pool, clock).install(ops.app)
        FirmwareApi(pool, clock).install(ops.app)
        CommandApi(pool, clock, settings).install(ops.app)
        command_queue = CommandQueue(settings, pool, publisher, clock, metrics)
        command_results = make_consumer(settings, settings.command_results_group, settings.topic(COMMAND_RESULTS.name))
        stack.push_async_callback(command_results.stop)
        port = await ops.start()
        stack.push_async_callback(ops.stop)
        log.info(
            "scheduler started",
            extra={
                "http_port": port,
                "migrations": applied,
                "shard": f"{settings.shard_index}/{settings.shard_count}",
            },
        )
        tasks = [
            asyncio.create_task(scheduler.run_ticks(stop), name="ticks"),
            asyncio.create_task(
                scheduler.run_results(consumer, DeadLetters(publisher, "scheduler"), stop), name="results"
            ),
            # The registry for collectors that must recognise meters contacting them (ami.fleet).
            asyncio.create_task(
                FleetFeed(pool, fleet_sender, settings.shard()).run(stop),
                name="fleet",
            ),
            # Dial-in meters' due work, for whichever collector replica they call (ami.dial-in-work).
            asyncio.create_task(scheduler.dial_in.run(stop), name="dial-in"),
            asyncio.create_task(
                scheduler.dial_in.run_contacts(contacts, DeadLetters(publisher, "scheduler"), stop),
                name="dial-in-contacts",
            ),
            asyncio.create_task(command_queue.run(stop), name="commands"),
            asyncio.create_task(
                command_queue.run_results(command_results, DeadLetters(publisher, "scheduler"), stop),
                name="command-results",
            ),
            # Meters a collector's listener heard and the registry lacks (auto-registration).
            asyncio.create_task(
                RegistrationIntake(
                    pool,
                    make_consumer(
                        settings, f"{settings.results_group}.registrations", settings.topic(REGISTRATIONS.name)
                    ),
                    DeadLetters(publisher, "scheduler"),
                ).run(stop),
                name="registrations",
            ),
        ]
        stopping = asyncio.create_task(stop.wait(), name="stop")
        try:
            await asyncio.wait([*tasks, stopping], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.set()  # one loop failing stops the other: exit and let the orchestrator restart us
            await asyncio.gather(*tasks, stopping, return_exceptions=True)
        for task in tasks:
            failure = task.exception()
            if failure is not None:
                raise failure
        log.info("scheduler stopped")
