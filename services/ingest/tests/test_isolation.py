"""No message stops ingest (issue 14): each case here stopped the consumer for good on the old code.

Each test runs the ingest service against the real broker and database, puts a poison message
between good ones, and checks the poison is dead-lettered with the reason while the good
readings (and events) around it are stored.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from gxami_contracts import DeadLetter, MeterEvent, ReadingBatch, ReadingValue
from gxami_ingest.app import Ingest
from gxami_ingest.settings import IngestSettings
from gxami_meterlab.devstack import StackEndpoints
from gxami_runtime.kafka import DEAD_LETTER_ORIGINAL_BYTES, MAX_REQUEST_BYTES, ensure_topics, make_consumer
from gxami_store import migrate

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)
TOPICS = ("ami.readings", "ami.events", "ami.dead-letter")


def _settings(stack: StackEndpoints, dsn: str, prefix: str) -> IngestSettings:
    return IngestSettings(
        kafka_bootstrap=stack.kafka_bootstrap,
        kafka_enable_idempotence=stack.kafka_enable_idempotence,
        database_url=dsn,
        consumer_group=f"{prefix}ingest",
        batch_max_age_ms=100,
        kafka_session_timeout_ms=2000,
        kafka_heartbeat_interval_ms=500,
        vee_enabled=False,
        topic_overrides={t: f"{prefix}{t}" for t in TOPICS},
    )


def _batch(batch_id: str, unit: str = "kWh", n: int = 4, start: int = 0) -> ReadingBatch:
    return ReadingBatch.of(
        batch_id=batch_id,
        meter_id="M1",
        job_id=batch_id,
        collected_at=NOW,
        readings=[
            ReadingValue(quantity="1-0:1.8.0", ts=NOW - timedelta(minutes=15 * i), value=float(i), unit=unit)
            for i in range(start, start + n)
        ],
    )


async def _prepare(dsn: str, s: IngestSettings, *statements: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        await conn.execute(
            "INSERT INTO meters (meter_id, protocol, url, link_id, profile, interval_s)"
            " VALUES ('M1', 'dlms', 'tcp://x:1', 'tcp://x:1', 'generic-dlms', 900)"
        )
        for sql in statements:
            await conn.execute(sql)
    finally:
        await conn.close()
    await ensure_topics(s, list(TOPICS))


async def _produce(s: IngestSettings, topic: str, values: list[bytes]) -> None:
    # Bigger requests than ours, as a misbehaving producer (or a broker with a larger limit) sends them.
    producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, max_request_size=8 << 20, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(s.topic(topic), value, key=b"M1")
    finally:
        await producer.stop()


async def _count(dsn: str, sql: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


async def _run_until(
    s: IngestSettings, dsn: str, *, rows: int, letters: int, events: int = 0, timeout: float = 40
) -> list[DeadLetter]:
    """Run ingest until ``rows`` readings (and ``events`` events) are stored and ``letters`` dead letters seen."""
    stop = asyncio.Event()
    task = asyncio.create_task(Ingest(s).run(stop))
    dlq = make_consumer(s, f"{s.consumer_group}-dlq-reader", s.topic("ami.dead-letter"))
    await dlq.start()
    got: list[DeadLetter] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            assert not task.done(), task.exception()
            for recs in (await dlq.getmany(timeout_ms=300)).values():
                got.extend(DeadLetter.model_validate_json(r.value) for r in recs)
            stored = await _count(dsn, "SELECT count(*) FROM readings")
            stored_events = await _count(dsn, "SELECT count(*) FROM events")
            if stored >= rows and len(got) >= letters and stored_events >= events:
                break
        assert not task.done(), task.exception()  # the consumer is still up
    finally:
        await dlq.stop()
        stop.set()
        await asyncio.wait_for(task, 30)
    return got


async def test_a_900_kb_malformed_reading_is_dead_lettered_cut_with_its_size_and_digest(
    stack: StackEndpoints, database_url: str, topic_prefix: str
) -> None:
    s = _settings(stack, database_url, topic_prefix)
    await _prepare(database_url, s)
    poison = b'{"batch_id": "' + b"x" * 950_000 + b'", "junk": true}'
    await _produce(s, "ami.readings", [poison, _batch("after").model_dump_json().encode()])
    letters = await _run_until(s, database_url, rows=4, letters=1)
    assert await _count(database_url, "SELECT count(*) FROM readings") == 4  # the good batch after it
    [letter] = letters
    kept = base64.b64decode(letter.original_b64)
    assert letter.original_truncated and len(kept) == DEAD_LETTER_ORIGINAL_BYTES
    assert poison.startswith(kept)
    assert letter.original_size == len(poison)
    assert letter.original_sha256 == hashlib.sha256(poison).hexdigest()
    assert letter.reason.startswith("schema:") and "batch_id" in letter.reason
    assert len(letter.model_dump_json()) < MAX_REQUEST_BYTES * 0.8  # comfortably under the producer's limit


@pytest.mark.parametrize(
    ("poison", "reason"),
    [
        # int4 overflow in COPY on the old contract (list[int] had no bound)
        (lambda b: b | {"series": [b["series"][0] | {"status": [0, 2**31, 0, 0]}]}, "series.0.status.1"),
        # CharacterNotInRepertoireError on the old contract
        (lambda b: b | {"series": [b["series"][0] | {"unit": "k\u0000Wh"}]}, "series.0.unit"),
    ],
    ids=["status-2^31", "nul-in-unit"],
)
async def test_a_batch_the_old_contract_let_through_is_refused_and_its_fetch_stored(
    stack: StackEndpoints, database_url: str, topic_prefix: str, poison: object, reason: str
) -> None:
    s = _settings(stack, database_url, topic_prefix)
    await _prepare(database_url, s)
    bad = poison(json.loads(_batch("bad", start=100).model_dump_json()))  # type: ignore[operator]
    values = [
        _batch("before").model_dump_json().encode(),
        json.dumps(bad).encode(),
        _batch("after", start=4).model_dump_json().encode(),
    ]
    await _produce(s, "ami.readings", values)
    letters = await _run_until(s, database_url, rows=8, letters=1)
    assert await _count(database_url, "SELECT count(*) FROM readings") == 8
    [letter] = letters
    assert reason in letter.reason
    assert base64.b64decode(letter.original_b64) == values[1]


async def test_what_the_database_refuses_beyond_the_contract_is_split_out_and_the_rest_stored(
    stack: StackEndpoints, database_url: str, topic_prefix: str
) -> None:
    s = _settings(stack, database_url, topic_prefix)
    # Rules the contract knows nothing about: the split must find the one batch and the one event.
    await _prepare(
        database_url,
        s,
        "ALTER TABLE readings ADD CONSTRAINT test_no_kvarh CHECK (unit <> 'kvarh')",
        "ALTER TABLE events ADD CONSTRAINT test_no_tamper CHECK (kind <> 'tamper')",
    )
    batches = [_batch(f"b{i}", n=3, start=3 * i) for i in range(7)]
    batches[4] = _batch("b4", unit="kvarh", n=3, start=12)
    await _produce(s, "ami.readings", [b.model_dump_json().encode() for b in batches])
    events = [
        MeterEvent(event_id=f"ev-{i}", meter_id="M1", ts=NOW - timedelta(minutes=i), kind="power-down")
        for i in range(5)
    ]
    events[1] = events[1].model_copy(update={"kind": "tamper"})
    await _produce(s, "ami.events", [e.model_dump_json().encode() for e in events])
    letters = await _run_until(s, database_url, rows=18, letters=2, events=4)
    assert await _count(database_url, "SELECT count(*) FROM readings") == 18
    assert await _count(database_url, "SELECT count(*) FROM readings WHERE unit = 'kvarh'") == 0
    assert await _count(database_url, "SELECT count(*) FROM events") == 4
    by_source = {letter.source_topic: letter for letter in letters}
    assert set(by_source) == {s.topic("ami.readings"), s.topic("ami.events")}
    readings_letter = by_source[s.topic("ami.readings")]
    assert "batch 'b4'" in readings_letter.reason
    assert "CheckViolationError (SQLSTATE 23514)" in readings_letter.reason
    assert "test_no_kvarh" in readings_letter.reason
    assert "Failing row" not in readings_letter.reason  # the database's DETAIL echoes rows: never copied
    assert "event 'ev-1'" in by_source[s.topic("ami.events")].reason
