"""Ingest as a running service against the real broker and database."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from gxami_contracts import DeadLetter, ReadingBatch, ReadingValue
from gxami_ingest.app import Ingest
from gxami_ingest.settings import IngestSettings
from gxami_meterlab.devstack import StackEndpoints
from gxami_runtime.kafka import ensure_topics, make_consumer, make_producer
from gxami_store import migrate

pytestmark = pytest.mark.integration


def _settings(stack: StackEndpoints, dsn: str, prefix: str) -> IngestSettings:
    return IngestSettings(
        kafka_bootstrap=stack.kafka_bootstrap,
        kafka_enable_idempotence=stack.kafka_enable_idempotence,
        database_url=dsn,
        consumer_group=f"{prefix}ingest",
        batch_max_age_ms=100,
        kafka_session_timeout_ms=2000,
        kafka_heartbeat_interval_ms=500,
        topic_overrides={
            "ami.readings": f"{prefix}readings",
            "ami.events": f"{prefix}events",
            "ami.dead-letter": f"{prefix}dlq",
        },
    )


async def _wait_rows(dsn: str, n: int, timeout: float = 20) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            count = int(await conn.fetchval("SELECT count(*) FROM readings"))
            if count >= n or asyncio.get_running_loop().time() > deadline:
                return count
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def test_poison_goes_to_dead_letter_and_good_batches_are_stored(
    stack: StackEndpoints, database_url: str, topic_prefix: str
) -> None:
    s = _settings(stack, database_url, topic_prefix)
    conn = await asyncpg.connect(database_url)
    await migrate(conn)
    await conn.execute(
        "INSERT INTO meters (meter_id, protocol, url, link_id, profile, interval_s)"
        " VALUES ('M1', 'dlms', 'tcp://x:1', 'tcp://x:1', 'generic-dlms', 900)"
    )
    await conn.close()
    await ensure_topics(s, ["ami.readings", "ami.events", "ami.dead-letter"])
    now = datetime.now(UTC).replace(microsecond=0)
    good = ReadingBatch.of(
        batch_id="b1",
        meter_id="M1",
        job_id="j1",
        collected_at=now,
        readings=[
            ReadingValue(quantity="1-0:1.8.0", ts=now - timedelta(minutes=15 * i), value=100.0 - i, unit="kWh")
            for i in range(10)
        ],
    )
    unknown = good.model_copy(update={"meter_id": "M9", "batch_id": "b2"})
    nan = json.loads(good.model_dump_json())
    nan["series"][0]["values"][3] = "NaN"
    producer = make_producer(s)
    await producer.start()
    try:
        topic = s.topic("ami.readings")
        await producer.send_and_wait(topic, b"{not json", key=b"M1")
        await producer.send_and_wait(topic, json.dumps(nan).encode(), key=b"M1")
        await producer.send_and_wait(topic, unknown.model_dump_json().encode(), key=b"M9")
        await producer.send_and_wait(topic, good.model_dump_json().encode(), key=b"M1")
        await producer.send_and_wait(topic, good.model_dump_json().encode(), key=b"M1")  # redelivery
    finally:
        await producer.stop()

    stop = asyncio.Event()
    ingest = Ingest(s)
    task = asyncio.create_task(ingest.run(stop))
    try:
        assert await _wait_rows(database_url, 10) == 10
        dlq = make_consumer(s, f"{topic_prefix}dlq-reader", s.topic("ami.dead-letter"))
        await dlq.start()
        letters: list[DeadLetter] = []
        try:
            deadline = asyncio.get_running_loop().time() + 15
            while len(letters) < 3 and asyncio.get_running_loop().time() < deadline:
                for recs in (await dlq.getmany(timeout_ms=500)).values():
                    letters.extend(DeadLetter.model_validate_json(r.value) for r in recs)
        finally:
            await dlq.stop()
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    reasons = sorted(letter.reason for letter in letters)
    assert len(letters) == 3, reasons
    assert any(("schema" in r and "(message)" in r) or "json" in r.lower() for r in reasons)
    assert any("series.0.values.3" in r and "finite" in r for r in reasons)
    assert any("unknown meter 'M9'" in r for r in reasons)
    assert {base64.b64decode(x.original_b64)[:9] for x in letters} >= {b"{not json"}
    # nothing was doubled
    assert await _wait_rows(database_url, 10, timeout=0.5) == 10


async def test_unreachable_database_is_a_one_line_startup_error(stack: StackEndpoints, topic_prefix: str) -> None:
    from gxami_runtime.service import StartupError

    s = _settings(stack, "postgresql://nobody@127.0.0.1:1/none", topic_prefix)
    with pytest.raises(StartupError, match=r"cannot reach the database at postgresql://nobody@127.0.0.1:1/none"):
        await Ingest(s).run(asyncio.Event())
