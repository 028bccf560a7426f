"""Ingest: consume reading batches, store them, then commit offsets."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from datetime import UTC, datetime, timedelta

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import Counter, Histogram

from gxami_contracts import ReadingBatch
from gxami_contracts.topics import READINGS
from gxami_ingest.database import RetryingConnection
from gxami_ingest.events import EventIngest
from gxami_ingest.settings import IngestSettings
from gxami_ingest.validation import BatchRejectedError, CheckedRows, check_batch
from gxami_ingest.vee import run_vee_periodically
from gxami_ingest.writer import ReadingRow, ValueRow, WriteStats, write_readings
from gxami_runtime.http import OpsServer
from gxami_runtime.isolation import database_refusal, store_isolating
from gxami_runtime.kafka import (
    DeadLetters,
    Decoded,
    Publisher,
    commit,
    decode_batch,
    start_clients,
)
from gxami_runtime.service import check_database
from gxami_store import PartitionKeeper, storage_kind
from gxami_store.aggregates import refresh_aggregates_periodically
from gxami_store.migrations import prepare_schema
from gxami_store.timescale import StoragePolicy, apply_storage_policy

log = logging.getLogger("gxami.ingest")

READINGS_TOTAL = Counter("gxami_ingest_readings_total", "Readings handled by outcome", ["outcome"])
DEAD_LETTERS = Counter("gxami_ingest_dead_letters_total", "Messages sent to the dead-letter topic")
BATCH_SECONDS = Histogram("gxami_ingest_write_seconds", "Time to store one batch (COPY + merge + commit)")


class Ingest:
    """The ingest loop; ``run`` returns when ``stop`` is set, after committing what it stored."""

    def __init__(self, settings: IngestSettings) -> None:
        self.settings = settings
        self.partitions = PartitionKeeper(settings.partition_interval)
        self.known_meters: set[str] = set()
        # One connection per write in flight (settings.writes_in_flight); slot 0 also does start-up.
        self.slots = [
            RetryingConnection(
                self._connect,
                initial_s=settings.db_retry_initial_s,
                max_s=settings.db_retry_max_s,
                consumer_name="readings",
            )
            for _ in range(settings.writes_in_flight)
        ]
        self.ready = False

    async def _connect(self) -> asyncpg.Connection:
        conn = await asyncpg.connect(self.settings.database_url.get_secret_value(), timeout=10)
        await self.partitions.load(conn, await storage_kind(conn))
        return conn

    async def _refresh_meters(self, conn: asyncpg.Connection) -> None:
        self.known_meters = {r["meter_id"] for r in await conn.fetch("SELECT meter_id FROM meters")}

    async def handle(
        self, items: list[Decoded[ReadingBatch]], consumer: AIOKafkaConsumer, dead: DeadLetters, slot: int = 0
    ) -> WriteStats:
        """Validate, dead-letter what cannot be stored, store the rest; returns after the commit.

        A write the database refuses for its data (see ``database_refusal``) is split by message
        until each refused batch is alone: those are dead-lettered with the reason, the rest stored.
        """
        now = datetime.now(UTC)
        max_future = timedelta(seconds=self.settings.max_future_s)
        max_past = self.settings.max_past
        if {d.message.meter_id for d in items} - self.known_meters:
            # Never judge a meter unknown from a stale list: refresh (waiting out an outage) first.
            await self.slots[slot].run(self._refresh_meters, consumer)
        checked: list[tuple[Decoded[ReadingBatch], CheckedRows]] = []
        for d in items:
            try:
                rows = check_batch(
                    d.message, known_meters=self.known_meters, now=now, max_future=max_future, max_past=max_past
                )
            except BatchRejectedError as exc:
                await dead.send(d.record, str(exc))
                DEAD_LETTERS.inc()
            else:
                checked.append((d, rows))

        async def store(group: list[tuple[Decoded[ReadingBatch], CheckedRows]]) -> WriteStats:
            rows: list[ReadingRow] = [row for _, batch_rows in group for row in batch_rows]
            values: list[ValueRow] = [row for _, batch_rows in group for row in batch_rows.values]

            async def write(conn: asyncpg.Connection) -> WriteStats:
                with BATCH_SECONDS.time():
                    return await write_readings(conn, rows, self.partitions, values)

            return await self.slots[slot].run(write, consumer)

        async def refuse(item: tuple[Decoded[ReadingBatch], CheckedRows], reason: str) -> None:
            d = item[0]
            await dead.send(d.record, f"meter {d.message.meter_id}: batch {d.message.batch_id[:64]!r}: {reason}")
            DEAD_LETTERS.inc()
            READINGS_TOTAL.labels("refused").inc(item[1].total)

        stats = sum(await store_isolating(checked, store, database_refusal, refuse), WriteStats(0, 0, 0, 0))
        READINGS_TOTAL.labels("inserted").inc(stats.inserted)
        READINGS_TOTAL.labels("duplicate").inc(stats.duplicates)
        READINGS_TOTAL.labels("revision").inc(stats.revisions)
        READINGS_TOTAL.labels("replaced-estimate").inc(stats.replaced_estimates)
        return stats

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        await check_database(s.database_url.get_secret_value())
        conn = self.slots[0].conn = await asyncpg.connect(s.database_url.get_secret_value(), timeout=10)
        await prepare_schema(conn, migrate_now=s.migrate_on_start)
        await apply_storage_policy(
            conn,
            StoragePolicy(
                backfill_horizon=timedelta(days=s.backfill_horizon_days),
                retention=timedelta(days=s.retention_days) if s.retention_days else None,
                partition_interval=s.partition_interval,
            ),
        )
        await self.partitions.load(conn, await storage_kind(conn))
        await self.partitions.ensure_ahead(conn, datetime.now(UTC))
        await self._refresh_meters(conn)
        producer, consumer = await start_clients(s, s.consumer_group, s.topic(READINGS.name))
        ops = OpsServer.from_settings(s, ready=lambda: self.ready)
        port = await ops.start()
        log.info("ingest started", extra={"http_port": port, "topic": s.topic(READINGS.name)})
        dead = DeadLetters(Publisher(producer, s), "ingest")
        dsn = s.database_url.get_secret_value()
        upkeep = [
            asyncio.create_task(refresh_aggregates_periodically(dsn, timedelta(seconds=s.aggregates_refresh_s), stop))
        ]
        if s.vee_enabled:
            upkeep.append(asyncio.create_task(run_vee_periodically(dsn, s.vee, stop)))
        # Meter events (ami.events) beside the readings: own consumer group, the same producer for dead letters.
        upkeep.append(asyncio.create_task(EventIngest(s, Publisher(producer, s)).run(stop)))
        self.ready = True
        try:
            await self._loop(consumer, dead, stop)
        finally:
            for t in upkeep:
                t.cancel()
            await asyncio.gather(*upkeep, return_exceptions=True)
            self.ready = False
            await consumer.stop()
            await producer.stop()
            await ops.stop()
            for slot in self.slots:
                await slot.close()
            log.info("ingest stopped")

    async def _loop(self, consumer: AIOKafkaConsumer, dead: DeadLetters, stop: asyncio.Event) -> None:
        """Fetch and decode while earlier batches are written, up to ``writes_in_flight`` at once, each on
        its own connection: one batch's COPY overlaps the previous one's commit. Offsets are committed
        strictly in batch order, each only after its own transaction and every earlier one committed."""
        s = self.settings
        pending: list[Decoded[ReadingBatch]] = []
        offsets: dict[TopicPartition, int] = {}
        count = 0
        started = time.monotonic()
        writing: deque[asyncio.Task[None]] = deque()
        next_slot = 0

        async def flush(
            items: list[Decoded[ReadingBatch]],
            offs: dict[TopicPartition, int],
            slot: int,
            before: asyncio.Task[None] | None,
        ) -> None:
            await self.handle(items, consumer, dead, slot)
            if before is not None:
                await before  # its failure is this batch's failure: nothing after it may be committed
            # Offsets only after the database transaction committed: a crash before this
            # line redelivers the batch, and the merge makes that a no-op.
            await commit(consumer, offs)

        try:
            while not stop.is_set():
                fetched = await consumer.getmany(timeout_ms=min(200, s.batch_max_age_ms), max_records=1000)
                for tp, recs in fetched.items():
                    good, bad = decode_batch(ReadingBatch, recs)
                    for rec, reason in bad:
                        await dead.send(rec, reason)
                        DEAD_LETTERS.inc()
                    pending.extend(good)
                    count += sum(d.message.count for d in good)
                    offsets[tp] = recs[-1].offset + 1
                while writing and writing[0].done():
                    writing.popleft().result()  # a failed write stops the service; nothing was committed for it
                age_ms = (time.monotonic() - started) * 1000
                if offsets and (count >= s.batch_max_readings or age_ms >= s.batch_max_age_ms):
                    if len(writing) >= s.writes_in_flight:
                        await writing.popleft()
                    writing.append(
                        asyncio.create_task(flush(pending, offsets, next_slot, writing[-1] if writing else None))
                    )
                    next_slot = (next_slot + 1) % s.writes_in_flight
                    pending, offsets, count = [], {}, 0
                    started = time.monotonic()
                elif not offsets:
                    started = time.monotonic()
        finally:
            for task in writing:
                await task
        if offsets:
            await flush(pending, offsets, 0, None)


async def main(stop: asyncio.Event, settings: IngestSettings | None = None) -> None:
    await Ingest(settings or IngestSettings()).run(stop)
