"""Collector: consume read jobs, read meters with bounded concurrency, publish readings, events and results.

An edge collector (``GXAMI_SITE``) takes only its site's jobs and sends what it produces through
its durable spool (gxami_collector.spool); see README "Edge collectors".

Site routing: one read-jobs topic per site (``<ami.read-jobs>.<site>``), consumed by that site's
own consumer group (``<group>.<site>``). Why not one topic with site-keyed partitions: a partition
of a shared topic is shared by several sites' links (12 partitions, hundreds of sites), so a site
whose collector is offline would hold the jobs of every other site on its partitions, a rebalance
caused by one flapping cellular uplink would pause every collector of the group, and Kafka ACLs
work per topic (prefix), not per partition: with a topic per site, an edge's SCRAM user may read
``ami.read-jobs.<its site>`` only. Topics are cheap at this scale (one per site, not per meter).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import sqlite3
import traceback
from collections import defaultdict
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError
from prometheus_client import Counter, Gauge, Histogram

from gxami_collector.batches import fitting_batches
from gxami_collector.commands import KeyedLocks, serve_commands
from gxami_collector.edge_schedule import STATE_FILE, EdgeSchedule, LocalPolicy, SiteFleet
from gxami_collector.fleet_cache import FleetFollower
from gxami_collector.jobs import JobOutcome, MeterReader
from gxami_collector.secret_store import SecretStore
from gxami_collector.settings import CollectorSettings
from gxami_collector.spool import Outgoing, Spool, SpoolPublisher, drain, forward
from gxami_contracts import JobStatus, ReadJob
from gxami_contracts.messages import Message
from gxami_contracts.topics import COMMAND_RESULTS, EVENTS, JOB_RESULTS, READ_JOBS, READINGS
from gxami_runtime.http import OpsServer
from gxami_runtime.kafka import (
    DeadLetters,
    Decoded,
    Publisher,
    commit,
    decode_batch,
    ensure_topics,
    start_clients,
)
from gxami_runtime.service import KafkaStartupError, StartupError, kafka_startup_error
from gxcore.errors import ConfigurationError
from gxcore.profiles import ProfileCatalog
from gxcore.protocols.dlms.invocation import InvocationCounterStore

log = logging.getLogger("gxami.collector")

JOBS = Counter("gxami_collector_jobs_total", "Read jobs finished", ["status", "error_kind"])
READINGS_OUT = Counter("gxami_collector_readings_total", "Readings published")
EVENTS_OUT = Counter("gxami_collector_events_total", "Meter events published")
SESSION_SECONDS = Histogram(
    "gxami_collector_session_seconds",
    "Duration of one meter session",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
)
IN_FLIGHT = Gauge("gxami_collector_sessions_in_flight", "Meter sessions running now")

# How long a clean stop waits for the spool to reach the broker; what is left stays on disk.
SPOOL_DRAIN_S = 5.0
# An edge collector that cannot reach its broker at start waits for it, this long at most between tries.
CONNECT_RETRY_CAP_S = 30.0
# How often the edge's local schedule looks for due meters (and saves its fleet copy if it changed).
LOCAL_TICK_S = 1.0


def _broker_away(exc: KafkaStartupError) -> bool:
    """The broker is away (refused, timed out), not refusing us (TLS, SASL, a wrong address)."""
    return exc.cause in {"connection refused", "connection failed", "timed out"}


def _loopback(host: str) -> bool:
    """True for a host name or address that binds to loopback only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Collector:
    """Runs jobs from the read-jobs topic; one link is never used by two sessions at once."""

    def __init__(self, settings: CollectorSettings, reader: MeterReader, spool: Spool | None = None) -> None:
        self.settings = settings
        self.reader = reader
        self.spool = spool
        self._forwarder: asyncio.Task[None] | None = None
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._links: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._meters = KeyedLocks()  # one session per meter, commands and reads alike (gxami_collector.commands)
        self._commands: asyncio.Task[None] | None = None
        self.ready = False
        # A site collector with a spool keeps a local copy of its site's fleet and reads it on its
        # own while the scheduler's jobs do not come (gxami_collector.edge_schedule).
        self.local: EdgeSchedule | None = None
        if settings.site is not None and spool is not None:
            fleet = SiteFleet(settings.site, spool.directory / STATE_FILE)
            policy = LocalPolicy(settings.edge_autonomous_after, settings.session_timeout_s)
            self.local = EdgeSchedule(fleet, policy, datetime.now(UTC))

    async def _one(self, job: ReadJob, publisher: Publisher | None) -> None:
        async with self._meters.hold(job.meter_id), self._links[job.link_id], self._slots:
            IN_FLIGHT.inc()
            try:
                outcome: JobOutcome = await self.reader.run(job)
            finally:
                IN_FLIGHT.dec()
        r = outcome.result
        SESSION_SECONDS.observe((r.finished_at - r.started_at).total_seconds())
        # Readings and events before the result: a scheduler that saw "ok" knows they are on the broker.
        if self.spool is not None:
            await self._spooled(outcome)
        else:
            assert publisher is not None  # only a spooled collector runs jobs of its own
            await self._sent(outcome, publisher)
        if self.local is not None:
            self.local.finished(job, r.status is JobStatus.OK)
        JOBS.labels(r.status.value, r.error_kind or "").inc()
        if r.status is JobStatus.ERROR:
            log.info(
                "read failed", extra={"meter_id": r.meter_id, "error_kind": r.error_kind, "error": r.error_message}
            )

    async def _spooled(self, outcome: JobOutcome) -> None:
        """Everything the job produced into the spool, in one transaction (the forwarder keeps the order)."""
        assert self.spool is not None
        items: list[tuple[str, str, Message]] = []
        if outcome.batch is not None:
            items += [(READINGS.name, p.meter_id, p) for p in fitting_batches(outcome.batch)]
            READINGS_OUT.inc(outcome.batch.count)
        items += [(EVENTS.name, e.meter_id, e) for e in outcome.events]
        EVENTS_OUT.inc(len(outcome.events))
        items.append((JOB_RESULTS.name, outcome.result.meter_id, outcome.result))
        await self.spool.put([Outgoing(t, k.encode(), m.model_dump_json().encode()) for t, k, m in items])

    async def _sent(self, outcome: JobOutcome, publisher: Publisher) -> None:
        r = outcome.result
        if outcome.batch is not None:
            parts = fitting_batches(outcome.batch)  # a long back-fill goes as several messages
            await publisher.send_many(READINGS.name, [(p.meter_id, p) for p in parts])
            READINGS_OUT.inc(outcome.batch.count)
        if outcome.events:
            await publisher.send_many(EVENTS.name, [(e.meter_id, e) for e in outcome.events])
            EVENTS_OUT.inc(len(outcome.events))
        await publisher.send(JOB_RESULTS.name, r.meter_id, r)

    async def _clients(self) -> tuple[AIOKafkaProducer, AIOKafkaConsumer]:
        """Producer and consumer of this collector's jobs topic (its site's, or the central one)."""
        s = self.settings
        if s.site is None:
            return await start_clients(s, s.jobs_group(), s.topic(READ_JOBS.name))
        # The site's topic is the catalog's read-jobs topic under another physical name.
        site = s.model_copy(update={"topic_overrides": {**s.topic_overrides, READ_JOBS.name: s.jobs_topic()}})
        try:
            await ensure_topics(site, [READ_JOBS.name])
        except (KafkaConnectionError, OSError) as exc:
            raise kafka_startup_error(s.kafka_bootstrap, exc, s.kafka_security()) from None
        except KafkaError as exc:  # e.g. an edge user without the right to create topics: it must exist
            log.warning(
                "cannot create the site's jobs topic; it must exist already",
                extra={"topic": s.jobs_topic(), "error": type(exc).__name__},
            )
        return await start_clients(s, s.jobs_group(), s.jobs_topic())

    async def _connect(self, stop: asyncio.Event) -> tuple[AIOKafkaProducer, AIOKafkaConsumer] | None:
        """The clients; with a spool, an absent broker is waited for (None if stopped meanwhile).

        An edge collector restarted during an uplink outage must come up and keep its spool, not
        exit; a broker that refuses it (TLS, SASL) is still the one-line error and exit 2.
        """
        delay = 1.0
        while True:
            try:
                return await self._clients()
            except KafkaStartupError as exc:
                if self.spool is None or not _broker_away(exc):
                    raise
                log.warning(
                    "broker unreachable at start; spool kept, retrying",
                    extra={"error": str(exc), "retry_s": delay, "spooled": self.spool.records},
                )
            try:
                await asyncio.wait_for(stop.wait(), delay)
                return None
            except TimeoutError:
                delay = min(delay * 2, CONNECT_RETRY_CAP_S)

    async def run(self, stop: asyncio.Event) -> None:
        # The ops server first: an edge waiting for its broker shows its spool in /metrics meanwhile.
        ops = OpsServer.from_settings(self.settings, ready=lambda: self.ready)
        port = await ops.start()
        if self.settings.site is not None and not _loopback(self.settings.http_host):
            # An edge opens no port to the outside but its meters' listeners; the ops server
            # binds to loopback by default (GXAMI_HTTP_HOST), and this says when it was changed.
            log.warning(
                "an edge collector's ops server listens beyond loopback", extra={"http_host": self.settings.http_host}
            )
        local = None
        if self.local is not None:  # reading on its own needs no broker: it starts before connecting
            await asyncio.to_thread(self.local.fleet.load)
            local = asyncio.create_task(self._local_reads(stop), name="local-schedule")
        try:
            clients = await self._connect(stop)
            if clients is not None:
                await self._serve(*clients, port, stop, local)
            if local is not None:  # stopped: it finishes its reads and saves the fleet copy
                await local
        finally:
            if local is not None and not local.done():
                local.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await local
            await ops.stop()

    async def _local_reads(self, stop: asyncio.Event) -> None:
        """Follow the site's fleet, keep its copy on disk, and run the local schedule's jobs, until ``stop``."""
        assert self.local is not None
        fleet = self.local.fleet
        follower = asyncio.create_task(FleetFollower(self.settings, fleet).run(stop), name="site-fleet")
        running: set[asyncio.Task[None]] = set()
        failure: list[BaseException] = []

        def done(task: asyncio.Task[None]) -> None:
            running.discard(task)
            if not task.cancelled() and (exc := task.exception()) is not None:
                if isinstance(exc, sqlite3.Error) or not isinstance(exc, Exception):
                    failure.append(exc)  # the spool's disk: the collector stops, as in the job loop
                else:
                    log.error("local read job failed inside the collector", extra={"error": type(exc).__name__})

        confirmed = False
        try:
            while not stop.is_set():
                if failure:
                    raise failure[0]
                if not confirmed and fleet.caught_up.is_set():
                    confirmed = True
                    if gone := fleet.confirm():
                        log.info("meters gone from the site's fleet since the copy was saved", extra={"meters": gone})
                if fleet.dirty:
                    await asyncio.to_thread(fleet.write, fleet.snapshot())
                if self.spool is not None and not self.spool.full:  # above the high-water mark: no new reads
                    for job in self.local.due(datetime.now(UTC)):
                        task = asyncio.create_task(self._one(job, None), name=f"local-{job.meter_id}")
                        running.add(task)
                        task.add_done_callback(done)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), LOCAL_TICK_S)
        finally:
            follower.cancel()
            await asyncio.gather(follower, *running, return_exceptions=True)
            if fleet.dirty:
                await asyncio.to_thread(fleet.write, fleet.snapshot())

    async def _serve(
        self,
        producer: AIOKafkaProducer,
        consumer: AIOKafkaConsumer,
        port: int,
        stop: asyncio.Event,
        local: asyncio.Task[None] | None = None,
    ) -> None:
        s = self.settings
        publisher = Publisher(producer, s)
        # With a spool, dead letters go its way too: written down at once, sent when the uplink is up.
        dead = DeadLetters(SpoolPublisher(self.spool) if self.spool is not None else publisher, "collector")
        forwarder = None
        if self.spool is not None:
            forwarder = self._forwarder = asyncio.create_task(
                forward(self.spool, producer, s.topic, last_topics=frozenset({JOB_RESULTS.name, COMMAND_RESULTS.name})),
                name="spool-forwarder",
            )
        log.info(
            "collector started",
            extra={"http_port": port, "concurrency": s.concurrency, "site": s.site, "jobs_topic": s.jobs_topic()},
        )
        if s.commands_enabled:  # ami.commands beside the read jobs, under the same link locks
            self._commands = asyncio.create_task(
                serve_commands(
                    s,
                    self.reader,
                    publisher,
                    dead,
                    stop,
                    links=self._links,
                    meters=self._meters,
                    slots=self._slots,
                    spool=self.spool,
                ),
                name="commands",
            )
        self.ready = True
        try:
            await self._loop(consumer, publisher, dead, stop, local)
        finally:
            self.ready = False
            if self._commands is not None:
                if not stop.is_set():
                    self._commands.cancel()  # the jobs loop failed: the collector stops as a whole
                await asyncio.gather(self._commands, return_exceptions=True)
            await consumer.stop()
            if forwarder is not None:
                assert self.spool is not None
                if not await drain(self.spool, SPOOL_DRAIN_S):
                    log.info(
                        "stopping with records in the spool; sent at the next start",
                        extra={"records": self.spool.records},
                    )
                forwarder.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await forwarder
            await producer.stop()
            log.info("collector stopped")

    async def _loop(
        self,
        consumer: AIOKafkaConsumer,
        publisher: Publisher,
        dead: DeadLetters,
        stop: asyncio.Event,
        local: asyncio.Task[None] | None = None,
    ) -> None:
        while not stop.is_set():
            if self._forwarder is not None and self._forwarder.done():
                self._forwarder.result()  # it never returns: this raises what stopped it (the spool's disk)
            if local is not None and local.done():
                local.result()  # it returns only at stop: this raises what stopped it
            if self._commands is not None and self._commands.done():
                self._commands.result()  # it returns at stop only: this raises what stopped it
            if self.spool is not None and self.spool.full:
                # Above the high-water mark (alarm raised by the spool): no new jobs until the uplink
                # has drained some. Jobs stay uncommitted in their topic; nothing is dropped.
                await asyncio.sleep(0.5)
                continue
            fetched = await consumer.getmany(timeout_ms=300, max_records=self.settings.concurrency * 4)
            if not fetched:
                continue
            jobs: list[Decoded[ReadJob]] = []
            offsets: dict[TopicPartition, int] = {}
            for tp, recs in fetched.items():
                good, bad = decode_batch(ReadJob, recs)
                for rec, reason in bad:
                    await dead.send(rec, reason)
                jobs.extend(good)
                offsets[tp] = recs[-1].offset + 1
            if self.local is not None:
                now = datetime.now(UTC)
                for d in jobs:
                    self.local.scheduler_job(d.message, now)
            # Offsets are committed once every job of the fetch has published its result; a crash
            # before that re-runs the jobs, and the readings and events they produce again are
            # deduplicated (readings on their natural key, events on their stable event id).
            outcomes = await asyncio.gather(*(self._one(d.message, publisher) for d in jobs), return_exceptions=True)
            for d, outcome in zip(jobs, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    await self._job_failed(d, outcome, dead)
            await commit(consumer, offsets)

    async def _job_failed(self, job: Decoded[ReadJob], exc: BaseException, dead: DeadLetters) -> None:
        """One job's failure is that job's: dead-letter it and go on, unless the broker is away."""
        if not isinstance(exc, Exception) or (isinstance(exc, KafkaError) and exc.retriable):
            raise exc  # cancelled, or the broker away: nothing is committed and the jobs come again
        if isinstance(exc, sqlite3.Error):
            raise exc  # the spool's disk, not the job: nothing is committed and the jobs come again
        JOBS.labels("error", "internal").inc()
        # The type and where it was raised, not the message nor a traceback: an unexpected error
        # deep in a meter session must not carry key material into the logs.
        frames = traceback.extract_tb(exc.__traceback__)
        raised_at = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
        log.error(
            "read job failed inside the collector; dead-lettered",
            extra={
                "meter_id": job.message.meter_id,
                "job_id": job.message.job_id,
                "error": type(exc).__name__,
                "raised_at": raised_at,
            },
        )
        await dead.send(job.record, f"collector failed on this job: {type(exc).__name__}")


async def main(stop: asyncio.Event, settings: CollectorSettings | None = None) -> None:
    s = settings or CollectorSettings()
    extra = (s.profiles_dir,) if s.profiles_dir else ()
    try:
        profiles, secrets = ProfileCatalog(*extra), SecretStore.load(s.secrets_file)
    except ConfigurationError as exc:  # a secrets file that does not parse, a bad profile: one line, exit 2
        raise StartupError(exc.reason) from None
    counter_store = None
    if s.invocation_counters_dsn is not None:  # many pods: counters in PostgreSQL (gxami_collector.counter_store)
        from gxami_collector.counter_store import PgInvocationCounters

        try:
            counter_store = await PgInvocationCounters.open(
                s.invocation_counters_dsn.get_secret_value(), max_sessions=s.concurrency
            )
        except ConfigurationError as exc:
            raise StartupError(exc.reason) from None
    try:
        await _serve(s, stop, profiles, secrets, counter_store)
    finally:
        if counter_store is not None:
            await counter_store.close()


async def _serve(
    s: CollectorSettings,
    stop: asyncio.Event,
    profiles: ProfileCatalog,
    secrets: SecretStore,
    counter_store: InvocationCounterStore | None,
) -> None:
    reader = MeterReader(
        profiles,
        secrets,
        exchange_timeout=s.exchange_timeout_s,
        session_timeout=s.session_timeout_s,
        invocation_counters=s.invocation_counters_file,
        networks=s.meter_networks(),
        counter_store=counter_store,
    )
    where = s.spool_path()
    spool = None
    if where is not None:
        spool = await Spool.open(where, max_bytes=s.spool_max_bytes, high_water=s.spool_high_water)
    try:
        collector = Collector(s, reader, spool)
        run: Callable[[asyncio.Event], Coroutine[object, object, None]] = collector.run
        if s.wmbus_receivers:  # wM-Bus receivers heard continuously (gxami_collector.wmbus_service)
            from gxami_collector.wmbus_service import with_wmbus_receivers

            run = with_wmbus_receivers(s, run, profiles, secrets, spool)
        if s.listeners:  # meters that push to us (gxami_collector.listeners), beside the read jobs
            from gxami_collector.listeners import serve_with_listeners

            spooled = SpoolPublisher(spool) if spool is not None else None  # pushes and dead letters too
            await serve_with_listeners(s, run, profiles, secrets, stop, dial_in=reader, spooled=spooled)
        else:
            await run(stop)
    finally:
        if spool is not None:
            await spool.close()
