"""Ingest of meter events: ``ami.events`` into the ``events`` table, each event stored once.

Delivery is the readings': offsets are committed only after the database transaction has
committed, so a crash redelivers, and a redelivery stores nothing new. Idempotence is on the
event id (``INSERT ... ON CONFLICT (event_id) DO NOTHING``): the collector derives it from
meter, source (a DLMS event log), time and event code, so a redelivered message, a job run
twice and two reads of overlapping log entries all give the same id.

The same id with *different* content keeps the first stored version: an event is a fact the
meter recorded once, and a differing copy means a producer changed how it describes it, not
that the event changed. Such a copy is counted (``gxami_ingest_events_total{outcome="conflict"}``)
and logged with its id, never overwriting.

A message that cannot be stored goes to the dead-letter topic with the reason: not the
contract's shape, an unknown meter, stamped further from now than ingest's ``max_future_s`` /
``max_past_days``, text the database cannot hold (NUL characters) or a non-finite number in
``data`` (the contract refuses those already; the checks stay as a second line), or anything
else the database refuses for its data: a write that fails so is split by message until the
refused events are alone, and the rest is stored. The events consumer has its own group,
``<consumer_group>-events``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.errors import KafkaError
from prometheus_client import Counter

from gxami_contracts import MeterEvent
from gxami_contracts.topics import EVENTS
from gxami_ingest.database import RetryingConnection
from gxami_ingest.settings import IngestSettings
from gxami_runtime.isolation import database_refusal, store_isolating
from gxami_runtime.kafka import DeadLetters, Decoded, Publisher, consume_batches, make_consumer
from gxami_runtime.service import kafka_startup_error

log = logging.getLogger("gxami.ingest.events")

EVENTS_TOTAL = Counter(
    "gxami_ingest_events_total",
    "Meter events handled, by outcome (stored, duplicate, conflict, dead-letter)",
    ["outcome"],
)

EventRow = tuple[str, str, datetime, str, str, str]  # event_id, meter_id, ts, kind, severity, data (JSON)

_INSERT = """
INSERT INTO events (event_id, meter_id, ts, kind, severity, data)
SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::jsonb[])
ON CONFLICT (event_id) DO NOTHING
RETURNING event_id
"""

_CONFLICTS = """
SELECT b.event_id
  FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::jsonb[])
       AS b(event_id, meter_id, ts, kind, severity, data)
  JOIN events e ON e.event_id = b.event_id
 WHERE (e.meter_id, e.ts, e.kind, e.severity, e.data) IS DISTINCT FROM (b.meter_id, b.ts, b.kind, b.severity, b.data)
"""


class EventRejectedError(Exception):
    """An event that cannot be stored, with the reason for the dead-letter topic."""


@dataclass(frozen=True, slots=True)
class EventWriteStats:
    """What one write did: events offered, newly stored, already stored alike, already stored differently."""

    offered: int
    inserted: int
    duplicates: int
    conflicts: int

    def __add__(self, other: EventWriteStats) -> EventWriteStats:
        return EventWriteStats(
            self.offered + other.offered,
            self.inserted + other.inserted,
            self.duplicates + other.duplicates,
            self.conflicts + other.conflicts,
        )


def _has_nul(text: str) -> bool:
    return "\x00" in text


def check_event(
    event: MeterEvent, *, known_meters: set[str], now: datetime, max_future: timedelta, max_past: timedelta
) -> EventRow:
    """The row to store for ``event``, or EventRejectedError naming the meter, the event and the problem."""
    where = f"meter {event.meter_id}: event {event.event_id[:80]!r}"
    if event.meter_id not in known_meters:
        raise EventRejectedError(f"unknown meter {event.meter_id!r} (not in the meter registry)")
    if event.ts > now + max_future:
        raise EventRejectedError(f"{where} is stamped in the future: {event.ts.isoformat()}")
    if event.ts < now - max_past:
        raise EventRejectedError(f"{where} is stamped too far back: {event.ts.isoformat()}")
    if _has_nul(event.event_id) or _has_nul(event.kind):
        raise EventRejectedError(f"{where}: event_id and kind must not contain NUL characters")
    for key, value in event.data.items():
        if _has_nul(key) or (isinstance(value, str) and _has_nul(value)):
            raise EventRejectedError(f"{where}: data.{key[:40]!r} contains a NUL character")
    try:
        data = json.dumps(event.data, allow_nan=False, sort_keys=True)
    except ValueError:
        raise EventRejectedError(f"{where}: data holds a non-finite number (NaN or infinity)") from None
    return (event.event_id, event.meter_id, event.ts, event.kind, event.severity, data)


async def write_events(conn: asyncpg.Connection, rows: list[EventRow]) -> EventWriteStats:
    """Store ``rows`` in one transaction, each event id once; returns what happened (see the module doc)."""
    if not rows:
        return EventWriteStats(0, 0, 0, 0)
    async with conn.transaction():
        await conn.execute("SET LOCAL synchronous_commit = on")
        stored = {r["event_id"] for r in await conn.fetch(_INSERT, *_columns(rows))}
        again = [r for r in rows if r[0] not in stored]
        differing = [r["event_id"] for r in await conn.fetch(_CONFLICTS, *_columns(again))] if again else []
    if differing:
        log.warning(
            "events arrived again with different content; the stored versions are kept",
            extra={"conflicts": len(differing), "event_ids": differing[:10]},
        )
    inserted = len(stored)
    return EventWriteStats(len(rows), inserted, len(rows) - inserted - len(differing), len(differing))


def _columns(rows: list[EventRow]) -> list[list[object]]:
    return [list(column) for column in zip(*rows, strict=True)]


def events_group(settings: IngestSettings) -> str:
    """The events consumer's group: ingest's own group name with ``-events``."""
    return f"{settings.consumer_group}-events"


class _CountedDeadLetters(DeadLetters):
    async def send(self, record: ConsumerRecord[bytes, bytes], reason: str) -> None:
        await super().send(record, reason)
        EVENTS_TOTAL.labels("dead-letter").inc()


class EventIngest:
    """Consumes ``ami.events`` until ``stop`` is set; every batch stored, then its offsets committed."""

    def __init__(self, settings: IngestSettings, publisher: Publisher) -> None:
        self.settings = settings
        self.dead = _CountedDeadLetters(publisher, "ingest")
        self.known_meters: set[str] = set()
        self.db = RetryingConnection(
            self._connect, initial_s=settings.db_retry_initial_s, max_s=settings.db_retry_max_s, consumer_name="events"
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Run beside the readings loop; a failure here stops the whole service rather than events alone."""
        s = self.settings
        try:
            consumer = make_consumer(s, events_group(s), s.topic(EVENTS.name))
            try:
                await consumer.start()
            except (KafkaError, OSError) as exc:
                await consumer.stop()
                raise kafka_startup_error(s.kafka_bootstrap, exc) from None
            except asyncio.CancelledError:
                await consumer.stop()  # stopped while joining the group: leave no client tasks behind
                raise
            log.info("event ingest started", extra={"topic": s.topic(EVENTS.name), "group": events_group(s)})

            async def store(items: list[Decoded[MeterEvent]]) -> None:
                await self.handle(items, consumer)

            try:
                # consume_batches commits a fetch's offsets only after ``store`` returned.
                await consume_batches(consumer, MeterEvent, store, self.dead, timeout_ms=200, stop=stop.is_set)
            finally:
                await consumer.stop()
                await self.db.close()
        except Exception:
            log.exception("event ingest failed; stopping ingest")
            stop.set()
            raise

    async def handle(self, items: list[Decoded[MeterEvent]], consumer: AIOKafkaConsumer) -> EventWriteStats:
        """Dead-letter what cannot be stored, store the rest; returns after the database commit."""
        s = self.settings
        now = datetime.now(UTC)
        if {d.message.meter_id for d in items} - self.known_meters:
            # Never judge a meter unknown from a stale list: refresh (waiting out an outage) first.
            await self.db.run(self._refresh_meters, consumer)
        checked: list[tuple[Decoded[MeterEvent], EventRow]] = []
        for d in items:
            try:
                row = check_event(
                    d.message,
                    known_meters=self.known_meters,
                    now=now,
                    max_future=timedelta(seconds=s.max_future_s),
                    max_past=s.max_past,
                )
            except EventRejectedError as exc:
                await self.dead.send(d.record, str(exc))
            else:
                checked.append((d, row))

        async def store(group: list[tuple[Decoded[MeterEvent], EventRow]]) -> EventWriteStats:
            rows = [row for _, row in group]

            async def write(conn: asyncpg.Connection) -> EventWriteStats:
                return await write_events(conn, rows)

            return await self.db.run(write, consumer)

        async def refuse(item: tuple[Decoded[MeterEvent], EventRow], reason: str) -> None:
            d = item[0]
            await self.dead.send(d.record, f"meter {d.message.meter_id}: event {d.message.event_id[:80]!r}: {reason}")

        stats = sum(await store_isolating(checked, store, database_refusal, refuse), EventWriteStats(0, 0, 0, 0))
        EVENTS_TOTAL.labels("stored").inc(stats.inserted)
        EVENTS_TOTAL.labels("duplicate").inc(stats.duplicates)
        EVENTS_TOTAL.labels("conflict").inc(stats.conflicts)
        return stats

    async def _refresh_meters(self, conn: asyncpg.Connection) -> None:
        self.known_meters = {r["meter_id"] for r in await conn.fetch("SELECT meter_id FROM meters")}

    async def _connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.settings.database_url.get_secret_value(), timeout=10)
