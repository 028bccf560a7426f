"""A database connection that outlives database outages: the one retry loop ingest's consumers share."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
from aiokafka import AIOKafkaConsumer
from prometheus_client import Counter

log = logging.getLogger("gxami.ingest")
T = TypeVar("T")

# Failures after which the same work is simply done again: the database went away, or two
# replicas briefly held the same meters during a rebalance (deadlock, serialization failure).
RETRYABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.AdminShutdownError,
)

# SQLSTATE classes of a database that cannot work right now, whatever the data: connection (08),
# resources such as a full disk (53), operator intervention such as a shutdown (57), system (58),
# rollback (40), lock not available (55), a read-only standby after a failover (25006), internal
# (XX). Such work waits and is done again; it is never blamed on the messages (no dead letter).
_WAIT_CLASSES = frozenset({"08", "40", "53", "55", "57", "58", "XX"})
_WAIT_STATES = frozenset({"25006"})
# A reading whose partition is missing (a stale cache of partitions; reconnecting reloads it).
_NO_PARTITION = "no partition of relation"


def retryable(exc: BaseException) -> bool:
    """True when ``exc`` means "the database is away or busy", so the same work is simply done again."""
    if isinstance(exc, RETRYABLE):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        state = str(getattr(exc, "sqlstate", "") or "")
        return state[:2] in _WAIT_CLASSES or state in _WAIT_STATES or str(exc).startswith(_NO_PARTITION)
    return False


DB_RETRIES = Counter("gxami_ingest_db_retries_total", "Database work that failed and was retried", ["consumer"])


class RetryingConnection:
    """One connection, made on first use and made again after a failure.

    :meth:`run` does a piece of work until it succeeds. While the database is away it backs
    off exponentially and pauses the consumer's fetching (backpressure), so nothing piles up
    in memory, and resumes it once the work went through.
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[asyncpg.Connection]],
        *,
        initial_s: float,
        max_s: float,
        consumer_name: str,
    ) -> None:
        self._connect = connect
        self._initial_s, self._max_s = initial_s, max_s
        self._name = consumer_name
        self.conn: asyncpg.Connection | None = None

    async def run(self, work: Callable[[asyncpg.Connection], Awaitable[T]], consumer: AIOKafkaConsumer) -> T:
        delay = self._initial_s
        paused = False
        try:
            while True:
                try:
                    if self.conn is None or self.conn.is_closed():
                        self.conn = await self._connect()
                    return await work(self.conn)
                except Exception as exc:
                    if not retryable(exc):
                        raise  # e.g. the data refused: the caller isolates the messages that caused it
                    DB_RETRIES.labels(self._name).inc()
                    log.warning(
                        "database unavailable; retrying",
                        extra={"consumer": self._name, "error": repr(exc), "retry_in_s": delay},
                    )
                    if not paused:
                        consumer.pause(*consumer.assignment())
                        paused = True
                    if self.conn is not None:
                        self.conn.terminate()
                        self.conn = None
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self._max_s)
        finally:
            if paused:
                consumer.resume(*consumer.assignment())

    async def close(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            await conn.close()
