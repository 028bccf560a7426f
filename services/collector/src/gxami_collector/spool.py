"""The edge collector's spool: what it produces waits on disk until the broker has acknowledged it.

Why a spool, and why always through it. An edge collector reaches Kafka over an uplink (a cellular
modem at a substation) that goes away for minutes or hours. Everything it produces (reading
batches, meter events, job results) is written to the spool first and sent from there by one
forwarder task (:func:`forward`): there is one path, with one order, whether the link is up or not,
and no "was it sent directly or spooled?" case to get wrong. A collector with no spool (no
``GXAMI_SITE``, no ``GXAMI_SPOOL_DIR``: the central one beside the broker) sends directly, as before.

Storage. SQLite in WAL mode through aiosqlite (its own thread: no file I/O on the event loop),
``synchronous=FULL`` so that a committed put is on disk when :meth:`Spool.put` returns, through
SIGKILL and power loss. One table, ``outbox(id, topic, key, value)``; ``id`` grows, so the forwarder
reads in the order the collector produced. A spool file belongs to one process: a lock file
(``flock``) next to it refuses a second collector on the same directory (two forwarders would send
everything twice).

Delivery. A record is deleted only after the broker acknowledged it (``acks=all``). A crash between
the acknowledgement and the delete sends it again on restart: the consumers are idempotent (ingest
stores readings on their natural key, events on their stable event id, the scheduler takes a job
result per job id and attempt), so at-least-once from here is exactly-once in the database.

Order. The forwarder reads a batch in id order and sends the readings and events first, then, once
all of those are acknowledged, the job results: a job result never reaches the broker before the
readings of its job (the scheduler's "ok" means they are on the broker, as without a spool). Within
a topic the producer keeps at most one request in flight per partition, so records of one key
arrive in spool order; after a failure the unacknowledged ones are sent again, behind any that did
get through (a redelivery the consumers absorb).

Bound and policy. ``max_bytes`` bounds the records' bytes (keys and values; the SQLite file is
somewhat larger). Above ``high_water * max_bytes`` the spool raises its alarm
(``gxami_collector_spool_full`` = 1) and the collector fetches no new jobs: jobs stay in their
topic, uncommitted, for this or another collector of the site. A put that would cross ``max_bytes``
waits for the forwarder to make room instead of dropping anything: its job is not acknowledged
meanwhile, so a crash then costs a re-read, never data. Nothing is ever dropped. (A single put
bigger than the whole bound is taken when the spool is empty, else it could never be taken.)
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import aiosqlite
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import Counter, Gauge

from gxami_contracts.messages import Message
from gxami_runtime.kafka import Publisher
from gxami_runtime.service import StartupError

log = logging.getLogger("gxami.collector.spool")

SPOOL_RECORDS = Gauge("gxami_collector_spool_records", "Records waiting in the spool for the broker")
SPOOL_BYTES = Gauge("gxami_collector_spool_bytes", "Bytes (keys and values) waiting in the spool")
SPOOL_FULL = Gauge(
    "gxami_collector_spool_full", "1 while the spool is above its high-water mark: no new jobs are taken (alarm)"
)
SPOOL_FORWARDED = Counter("gxami_collector_spool_forwarded_total", "Spooled records the broker acknowledged")
SPOOL_SEND_FAILURES = Counter(
    "gxami_collector_spool_send_failures_total", "Forwarding rounds that failed (broker away); retried"
)
SPOOL_WAITS = Counter(
    "gxami_collector_spool_put_waits_total", "Puts that waited for room at the spool's byte bound (nothing dropped)"
)

SPOOL_FILE = "spool.sqlite3"
_LOCK_FILE = "spool.lock"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS outbox ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL)"
)


class SpoolError(StartupError):
    """The spool cannot be used (its directory, its lock, its file): the collector does not start (exit 2)."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One record to publish: logical topic, key and the encoded message."""

    topic: str
    key: bytes
    value: bytes

    @property
    def size(self) -> int:
        return len(self.key) + len(self.value)


@dataclass(frozen=True, slots=True)
class Spooled:
    """A record in the spool, with its position."""

    id: int
    record: Outgoing


def _lock(directory: Path) -> int:
    """Create ``directory`` and hold its lock file; runs in a thread (file I/O)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(directory / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SpoolError(f"spool {directory} is in use by another collector (its lock file is held)") from None
    return fd


class Spool:
    """A durable FIFO of outgoing records in SQLite (WAL), bounded in bytes; one process at a time."""

    def __init__(
        self, directory: Path, db: aiosqlite.Connection, lock_fd: int, *, max_bytes: int, high_water: float
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.high_water = high_water
        self._db = db
        self._lock_fd = lock_fd
        self._records = 0
        self._bytes = 0
        self._arrived = asyncio.Event()
        self._room = asyncio.Condition()
        self._write = asyncio.Lock()

    @classmethod
    async def open(cls, directory: Path, *, max_bytes: int, high_water: float = 0.8) -> Self:
        """Open (or create) the spool in ``directory``; raises SpoolError naming it if it cannot."""
        try:
            fd = await asyncio.to_thread(_lock, directory)
        except OSError as exc:
            raise SpoolError(f"cannot use the spool directory {directory}: {exc.strerror}") from None
        try:
            db = await aiosqlite.connect(directory / SPOOL_FILE)
        except (OSError, aiosqlite.Error) as exc:
            await asyncio.to_thread(os.close, fd)
            raise SpoolError(f"cannot open the spool {directory / SPOOL_FILE}: {exc}") from None
        spool = cls(directory, db, fd, max_bytes=max_bytes, high_water=high_water)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=FULL")  # a put survives power loss, not only SIGKILL
            await db.execute(_SCHEMA)
            await db.commit()
            async with db.execute("SELECT count(*), coalesce(sum(length(key) + length(value)), 0) FROM outbox") as cur:
                row = await cur.fetchone()
        except aiosqlite.Error as exc:
            await spool.close()
            raise SpoolError(f"spool {directory / SPOOL_FILE} is unusable: {exc}") from None
        assert row is not None  # an aggregate always has a row
        spool._records, spool._bytes = int(row[0]), int(row[1])
        spool._update()
        if spool._records:
            spool._arrived.set()
            log.info(
                "spool holds records from before; forwarding them first",
                extra={"records": spool._records, "bytes": spool._bytes},
            )
        return spool

    async def close(self) -> None:
        await self._db.close()
        await asyncio.to_thread(os.close, self._lock_fd)  # releases the lock

    @property
    def records(self) -> int:
        return self._records

    @property
    def bytes(self) -> int:
        return self._bytes

    @property
    def full(self) -> bool:
        """Above the high-water mark: take no new work."""
        return self._bytes >= self.high_water * self.max_bytes

    def _update(self) -> None:
        SPOOL_RECORDS.set(self._records)
        SPOOL_BYTES.set(self._bytes)
        SPOOL_FULL.set(1 if self.full else 0)

    async def put(self, items: Sequence[Outgoing]) -> None:
        """Store ``items`` in one transaction, on disk when this returns; waits for room at the bound."""
        if not items:
            return
        size = sum(i.size for i in items)
        async with self._room:
            if self._bytes and self._bytes + size > self.max_bytes:
                SPOOL_WAITS.inc()
                log.warning(
                    "spool at its bound; waiting for the uplink before taking more",
                    extra={"bytes": self._bytes, "max_bytes": self.max_bytes},
                )
                await self._room.wait_for(lambda: not self._bytes or self._bytes + size <= self.max_bytes)
            async with self._write:
                await self._db.executemany(
                    "INSERT INTO outbox (topic, key, value) VALUES (?, ?, ?)",
                    [(i.topic, i.key, i.value) for i in items],
                )
                await self._db.commit()
            self._records += len(items)
            self._bytes += size
        self._update()
        self._arrived.set()

    async def head(self, limit: int) -> list[Spooled]:
        """The oldest ``limit`` records, oldest first."""
        self._arrived.clear()  # before reading: a put from now on sets it again, none is missed
        async with self._db.execute("SELECT id, topic, key, value FROM outbox ORDER BY id LIMIT ?", (limit,)) as cur:
            rows = await cur.fetchall()
        if rows:
            self._arrived.set()
        return [Spooled(int(r[0]), Outgoing(str(r[1]), bytes(r[2]), bytes(r[3]))) for r in rows]

    async def wait_for_records(self) -> None:
        """Return once a put has happened since the spool was last found empty."""
        await self._arrived.wait()

    async def emptied(self) -> None:
        """Return once the spool holds nothing."""
        async with self._room:
            await self._room.wait_for(lambda: not self._records)

    async def delete(self, done: Collection[Spooled]) -> None:
        """Forget records the broker acknowledged."""
        if not done:
            return
        async with self._write:
            await self._db.executemany("DELETE FROM outbox WHERE id = ?", [(s.id,) for s in done])
            await self._db.commit()
        async with self._room:
            self._records -= len(done)
            self._bytes -= sum(s.record.size for s in done)
            self._room.notify_all()
        self._update()


class SpoolPublisher(Publisher):
    """A :class:`Publisher` whose sends go into the spool: on disk when they return, sent on by the forwarder.

    For everything else an edge produces besides its jobs' records (push readings and events,
    dead letters): give it where a ``Publisher`` is taken (``DeadLetters(SpoolPublisher(...))``,
    the push listeners) and it goes the spool's way, in the spool's order, through outages. The
    wait of a put at the spool's bound is the wait of the send.
    """

    def __init__(self, spool: Spool) -> None:  # no producer: the forwarder holds it
        self._spool = spool

    async def send(self, logical_topic: str, key: str, message: Message) -> None:
        await self.send_many(logical_topic, [(key, message)])

    async def send_many(self, logical_topic: str, items: Sequence[tuple[str, Message]]) -> None:
        """Into the spool in one transaction (the logical topic: the forwarder maps it to the physical one)."""
        await self._spool.put([Outgoing(logical_topic, k.encode(), m.model_dump_json().encode()) for k, m in items])


async def _send_all(
    producer: AIOKafkaProducer, physical: Callable[[str], str], items: Sequence[Spooled]
) -> tuple[list[Spooled], KafkaError | None]:
    """Send ``items`` and wait for each; the acknowledged ones, and the first error (None if none)."""
    futures: list[tuple[Spooled, asyncio.Future[object]]] = []
    error: KafkaError | None = None
    for s in items:
        try:
            fut = await producer.send(physical(s.record.topic), s.record.value, key=s.record.key)
        except KafkaError as exc:  # no metadata within the request timeout: the broker is away
            error = exc
            break
        futures.append((s, fut))
    acked: list[Spooled] = []
    for s, fut in futures:
        try:
            await fut
        except KafkaError as exc:
            error = error or exc
        else:
            acked.append(s)
    return acked, error


async def forward(
    spool: Spool,
    producer: AIOKafkaProducer,
    physical: Callable[[str], str],
    *,
    last_topics: frozenset[str],
    batch: int = 500,
    retry_s: float = 1.0,
    retry_cap_s: float = 30.0,
) -> None:
    """Send the spool to the broker in order, forever: records of ``last_topics`` (job results) of a
    batch only after every other record of it was acknowledged; acknowledged records are deleted."""
    delay = retry_s
    away = False
    while True:
        items = await spool.head(batch)
        if not items:
            await spool.wait_for_records()
            continue
        first = [s for s in items if s.record.topic not in last_topics]
        then = [s for s in items if s.record.topic in last_topics]
        acked, error = await _send_all(producer, physical, first)
        if error is None:
            more, error = await _send_all(producer, physical, then)
            acked += more
        await spool.delete(acked)
        SPOOL_FORWARDED.inc(len(acked))
        if error is None:
            if away:
                log.info("uplink back; spool forwarding", extra={"records": spool.records})
            away, delay = False, retry_s
            continue
        SPOOL_SEND_FAILURES.inc()
        if not away:
            log.warning(
                "broker unreachable; keeping records in the spool",
                extra={"records": spool.records, "bytes": spool.bytes, "error": type(error).__name__},
            )
        away = True
        await asyncio.sleep(delay)
        delay = min(delay * 2, retry_cap_s)


async def drain(spool: Spool, timeout: float) -> bool:
    """Wait up to ``timeout`` s for the forwarder to empty the spool (at a clean stop); True if empty."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await spool.emptied()
    return not spool.records
