"""Registering the meters collectors heard and the registry lacks (``ami.registrations``).

A collector whose listener runs with ``GXAMI_PUSH_AUTO_REGISTER=<default profile>`` serves a push
from an unknown meter at once (under a provisional directory entry) and asks the scheduler to
register it. Why through the scheduler: the scheduler owns the registry (the ``meters`` table);
an edge collector reaches only the broker, never the database. The scheduler inserts the row
(``connection: push``, the identity heard, the default profile) and its fleet feed then
publishes it on ``ami.fleet`` like any other meter, so every replica comes to know it, and an
operator sees and edits it like an imported one.

A registration never overwrites a meter that exists (``ON CONFLICT DO NOTHING``): what an
operator registered, or edited since, wins over what a listener heard. Offsets are committed
after the insert (at-least-once; inserting twice is a no-op). Push meters get no schedule row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Final

import asyncpg
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from gxami_contracts import MeterRegistration
from gxami_runtime.kafka import DeadLetters, Decoded, consume_batches
from gxami_scheduler.registry import DbConn, stored_options

log = logging.getLogger(__name__)

PUSH_INTERVAL_S: Final = 900  # the registry wants an interval; a push meter is never polled on it
RETRY_S: Final = 2.0
_INSERT = """
INSERT INTO meters (meter_id, protocol, url, link_id, profile, meter_group, interval_s, options, enabled)
SELECT m, p, u, 'push:' || m, pr, '', $6::int, o::jsonb, true
  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) AS r(m, p, u, pr, o)
ON CONFLICT (meter_id) DO NOTHING
RETURNING meter_id
"""


async def register_meters(conn: DbConn, registrations: Sequence[MeterRegistration]) -> list[str]:
    """Insert the meters heard that are not registered yet; returns the ids inserted."""
    latest = {r.meter_id: r for r in registrations}  # the same meter heard twice in a batch: once
    regs = list(latest.values())
    contacts = [
        {k: v for k, v in (("connection", r.connection), ("system_title", r.system_title), ("serial", r.serial)) if v}
        for r in regs
    ]
    rows = await conn.fetch(
        _INSERT,
        [r.meter_id for r in regs],
        [r.protocol for r in regs],
        [r.url for r in regs],
        [r.profile for r in regs],
        [stored_options(r.options, ["billing"], c) for r, c in zip(regs, contacts, strict=True)],
        PUSH_INTERVAL_S,
    )
    return [row["meter_id"] for row in rows]


class RegistrationIntake:
    """Consumes ``ami.registrations`` into the registry until stopped; poison is dead-lettered."""

    def __init__(self, pool: asyncpg.Pool, consumer: AIOKafkaConsumer, dead_letters: DeadLetters) -> None:
        self._pool = pool
        self._consumer = consumer
        self._dead = dead_letters
        self.registered = 0

    async def handle(self, batch: list[Decoded[MeterRegistration]]) -> None:
        async with self._pool.acquire() as conn:
            inserted = await register_meters(conn, [d.message for d in batch])
        self.registered += len(inserted)
        for meter_id in inserted:
            log.info("meter registered from a listener", extra={"meter_id": meter_id})

    async def run(self, stop: asyncio.Event) -> None:
        """Start the consumer and register until ``stop``; after a failure, re-read from the last commit."""
        await self._consumer.start()
        try:
            rewind = False
            while not stop.is_set():
                try:
                    if rewind:
                        # getmany() moved past the failed batch: back to the last commit first.
                        for tp in self._consumer.assignment():
                            committed = await self._consumer.committed(tp)
                            if committed is None:
                                await self._consumer.seek_to_beginning(tp)
                            else:
                                self._consumer.seek(tp, committed)
                        rewind = False
                    await consume_batches(self._consumer, MeterRegistration, self.handle, self._dead, stop=stop.is_set)
                except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError, KafkaError) as exc:
                    rewind = True
                    log.warning("registering meters failed; will re-read", extra={"error": type(exc).__name__})
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=RETRY_S)
        finally:
            await self._consumer.stop()
