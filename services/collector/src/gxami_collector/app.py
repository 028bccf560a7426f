"""Collector: consume read jobs, read meters with bounded concurrency, publish readings, events and results."""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections import defaultdict
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import Counter, Gauge, Histogram

from gxami_collector.batches import fitting_batches
from gxami_collector.jobs import JobOutcome, MeterReader
from gxami_collector.secret_store import SecretStore
from gxami_collector.settings import CollectorSettings
from gxami_contracts import JobStatus, ReadJob
from gxami_contracts.topics import EVENTS, JOB_RESULTS, READ_JOBS, READINGS
from gxami_runtime.http import OpsServer
from gxami_runtime.kafka import (
    DeadLetters,
    Decoded,
    Publisher,
    commit,
    decode_batch,
    start_clients,
)
from gxcore.profiles import ProfileCatalog

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


class Collector:
    """Runs jobs from the read-jobs topic; one link is never used by two sessions at once."""

    def __init__(self, settings: CollectorSettings, reader: MeterReader) -> None:
        self.settings = settings
        self.reader = reader
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._links: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.ready = False

    async def _one(self, job: ReadJob, publisher: Publisher) -> None:
        async with self._links[job.link_id], self._slots:
            IN_FLIGHT.inc()
            try:
                outcome: JobOutcome = await self.reader.run(job)
            finally:
                IN_FLIGHT.dec()
        r = outcome.result
        SESSION_SECONDS.observe((r.finished_at - r.started_at).total_seconds())
        # Readings and events before the result: a scheduler that saw "ok" knows they are on the broker.
        if outcome.batch is not None:
            parts = fitting_batches(outcome.batch)  # a long back-fill goes as several messages
            await publisher.send_many(READINGS.name, [(p.meter_id, p) for p in parts])
            READINGS_OUT.inc(outcome.batch.count)
        if outcome.events:
            await publisher.send_many(EVENTS.name, [(e.meter_id, e) for e in outcome.events])
            EVENTS_OUT.inc(len(outcome.events))
        await publisher.send(JOB_RESULTS.name, r.meter_id, r)
        JOBS.labels(r.status.value, r.error_kind or "").inc()
        if r.status is JobStatus.ERROR:
            log.info(
                "read failed", extra={"meter_id": r.meter_id, "error_kind": r.error_kind, "error": r.error_message}
            )

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        producer, consumer = await start_clients(s, s.consumer_group, s.topic(READ_JOBS.name))
        ops = OpsServer.from_settings(s, ready=lambda: self.ready)
        port = await ops.start()
        publisher = Publisher(producer, s)
        dead = DeadLetters(publisher, "collector")
        log.info("collector started", extra={"http_port": port, "concurrency": s.concurrency})
        self.ready = True
        try:
            await self._loop(consumer, publisher, dead, stop)
        finally:
            self.ready = False
            await consumer.stop()
            await producer.stop()
            await ops.stop()
            log.info("collector stopped")

    async def _loop(
        self, consumer: AIOKafkaConsumer, publisher: Publisher, dead: DeadLetters, stop: asyncio.Event
    ) -> None:
        while not stop.is_set():
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
    profiles, secrets = ProfileCatalog(*extra), SecretStore.load(s.secrets_file)
    reader = MeterReader(
        profiles,
        secrets,
        exchange_timeout=s.exchange_timeout_s,
        session_timeout=s.session_timeout_s,
        invocation_counters=s.invocation_counters_file,
        networks=s.meter_networks(),
    )
    collector = Collector(s, reader)
    if s.listeners:  # meters that push to us (gxami_collector.listeners), beside the read jobs
        from gxami_collector.listeners import serve_with_listeners

        await serve_with_listeners(s, collector.run, profiles, secrets, stop)
    else:
        await collector.run(stop)
