"""A database that cannot write right now (read-only after a failover) is waited for; readings are never blamed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
from aiokafka import ConsumerRecord

from gxami_contracts import ReadingBatch, ReadingValue
from gxami_ingest.app import Ingest
from gxami_ingest.database import retryable
from gxami_ingest.settings import IngestSettings
from gxami_meterlab.devstack import StackEndpoints
from gxami_runtime.kafka import DeadLetters, Decoded, Publisher, make_consumer, make_producer
from gxami_store import migrate


@pytest.mark.parametrize(
    ("exc", "wait"),
    [
        (asyncpg.exceptions.DiskFullError("could not extend file"), True),
        (asyncpg.exceptions.ReadOnlySQLTransactionError("cannot execute COPY FROM in a read-only transaction"), True),
        (asyncpg.exceptions.CheckViolationError('no partition of relation "readings" found for row'), True),
        (asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"), True),
        (asyncpg.exceptions.CheckViolationError('new row violates check constraint "c"'), False),
        (asyncpg.exceptions.CharacterNotInRepertoireError("invalid byte sequence"), False),
        (OverflowError("value out of int32 range"), False),
    ],
)
def test_what_is_waited_for_and_what_is_the_datas_fault(exc: BaseException, wait: bool) -> None:
    assert retryable(exc) is wait


class _Recorded(DeadLetters):
    def __init__(self, publisher: Publisher) -> None:
        super().__init__(publisher, "ingest")
        self.reasons: list[str] = []

    async def send(self, record: ConsumerRecord[bytes, bytes], reason: str) -> None:
        self.reasons.append(reason)
        await super().send(record, reason)


@pytest.mark.integration
async def test_a_read_only_database_is_waited_out_and_nothing_is_dead_lettered(
    stack: StackEndpoints, database_url: str, topic_prefix: str
) -> None:
    name = urlsplit(database_url).path.lstrip("/")
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn)
        await conn.execute(
            "INSERT INTO meters (meter_id, protocol, url, link_id, profile, interval_s)"
            " VALUES ('M1', 'dlms', 'tcp://x:1', 'l', 'p', 900)"
        )
        await conn.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    finally:
        await conn.close()
    s = IngestSettings(
        kafka_bootstrap=stack.kafka_bootstrap,
        kafka_enable_idempotence=stack.kafka_enable_idempotence,
        database_url=database_url,
        db_retry_initial_s=0.1,
        db_retry_max_s=0.3,
        topic_overrides={"ami.dead-letter": f"{topic_prefix}dlq"},
    )
    now = datetime.now(UTC).replace(microsecond=0)
    batch = ReadingBatch.of(
        batch_id="b1",
        meter_id="M1",
        collected_at=now,
        readings=[
            ReadingValue(quantity="1-0:1.8.0", ts=now - timedelta(minutes=15 * i), value=float(i), unit="kWh")
            for i in range(5)
        ],
    )
    raw = batch.model_dump_json().encode()
    record: ConsumerRecord[bytes, bytes] = ConsumerRecord("ami.readings", 0, 0, 0, 0, b"M1", raw, None, 2, len(raw), ())
    ingest = Ingest(s)
    producer = make_producer(s)
    consumer = make_consumer(s, "unused", "ami.readings")
    await producer.start()
    cleanup: list[asyncio.Task[Any]] = []
    try:
        dead = _Recorded(Publisher(producer, s))
        task = asyncio.create_task(ingest.handle([Decoded(record, batch)], consumer, dead))
        cleanup.append(task)
        await asyncio.sleep(1.5)
        assert not task.done(), task.exception() if task.done() else None  # waiting, not failed nor refused
        admin = await asyncpg.connect(stack.database_url)  # another database: this one refuses writes
        try:
            await admin.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
        finally:
            await admin.close()
        stats = await asyncio.wait_for(task, 20)
        assert stats.inserted == 5
        assert dead.reasons == []
    finally:
        for t in cleanup:
            t.cancel()
        await asyncio.gather(*cleanup, return_exceptions=True)
        await producer.stop()
        await consumer.stop()
        for slot in ingest.slots:
            await slot.close()
