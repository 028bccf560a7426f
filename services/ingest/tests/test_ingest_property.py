"""Property: any reading batch message is either stored or dead-lettered, and ingest stays up (issue 14).

Messages are drawn as JSON, near the contract's edges and past them (int4 limits and one beyond,
NUL characters, extreme floats, the longest strings, odd unicode, instants at the ends of what
Python holds), and go through what the ingest loop does with a fetch: ``decode_batch``, dead
letters for what does not decode, then ``Ingest.handle`` against the real PostgreSQL, with dead
letters published to the real broker.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiokafka import ConsumerRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from gxami_contracts import ReadingBatch
from gxami_contracts.messages import INT4_MAX, INT4_MIN
from gxami_ingest.app import Ingest
from gxami_ingest.settings import IngestSettings
from gxami_meterlab.devstack import StackEndpoints
from gxami_runtime.kafka import DeadLetters, Publisher, decode_batch, ensure_topics, make_consumer, make_producer
from gxami_store import migrate

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

METERS = ("M0", "M1", "M2")
NOW = datetime.now(UTC).replace(microsecond=0)

_odd_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",))
    | st.sampled_from("\u0000\u202e\ufeff\U0001d518é\n"),
    max_size=20,
)
_edge_unit = st.one_of(
    st.sampled_from(["", "x" * 16, "\U0001d518" * 16, "k\u0000Wh", "x" * 17, "\u202e\ufeff"]), _odd_text
)
_quantity = st.one_of(
    st.sampled_from(["1-0:1.8.0", "1-0:32.7.0", "a" * 32]), st.from_regex(r"\A[0-9A-Za-z:.\-]{3,32}\Z")
)
_status = st.integers(INT4_MIN, INT4_MAX) | st.sampled_from([0, INT4_MIN, INT4_MAX])
_edge_status = st.sampled_from([INT4_MAX + 1, INT4_MIN - 1, 2**31, 2**63, -(2**40)])
_value = st.one_of(
    st.sampled_from([0.0, -0.0, 1e308, -1e308, 5e-324, 1.7976931348623157e308]),
    st.floats(allow_nan=False, allow_infinity=False),
)


def _iso(ts: datetime) -> str:
    return ts.isoformat()


# Near now (what gets stored; a narrow window keeps the partitions few); the ends are mutations.
_instant = st.integers(-2 * 86_400, 3_600).map(lambda s: _iso(NOW + timedelta(seconds=s)))
_edge_instant = st.sampled_from(
    [
        "0001-01-02T00:00:00Z",
        "0001-01-01T00:00:00Z",
        "9999-12-30T00:00:00+00:00",
        "9999-12-31T23:59:59-01:00",
        "2000-01-01T00:00:00+14:00",
        _iso(NOW + timedelta(days=2)),
    ]
)


@st.composite
def _series(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(1, 12))
    series: dict[str, Any] = {
        "quantity": draw(_quantity),
        "unit": draw(st.sampled_from(["kWh", "V", "m³"])),
        "ts": draw(st.lists(_instant, min_size=n, max_size=n)),
        "values": draw(st.lists(_value, min_size=n, max_size=n)),
    }
    if draw(st.booleans()):
        series["status"] = draw(st.lists(_status, min_size=n, max_size=n))
    return series


@st.composite
def _message(draw: st.DrawFn) -> bytes:
    """A good batch, often with one thing at or past an edge of the contract or the database."""
    msg: dict[str, Any] = {
        "batch_id": uuid.uuid4().hex,
        "meter_id": draw(st.sampled_from(METERS)),
        "job_id": draw(st.one_of(st.none(), st.just("j" * 64))),
        "collected_at": _iso(NOW),
        "series": draw(st.lists(_series(), min_size=1, max_size=3)),
    }
    series = draw(st.sampled_from(msg["series"]))
    i = draw(st.integers(0, len(series["ts"]) - 1))
    edge = draw(st.sampled_from(["none", "status", "unit", "ts", "batch_id", "meter", "job_id"]))
    if edge == "status":
        series["status"] = series.get("status") or [0] * len(series["ts"])
        series["status"][i] = draw(_edge_status)
    elif edge == "unit":
        series["unit"] = draw(_edge_unit)
    elif edge == "ts":
        series["ts"][i] = draw(_edge_instant)
    elif edge == "batch_id":
        msg["batch_id"] = draw(st.sampled_from(["b" * 64, "b" * 65, "\u0000", "\U0001d518" * 64]))
    elif edge == "meter":
        msg["meter_id"] = "M9"
    elif edge == "job_id":
        msg["job_id"] = draw(st.sampled_from(["j" * 65, "j\u0000", "\U0001d518"]))
    return json.dumps(msg).encode()


class _Recorded(DeadLetters):
    """The real dead letters (published to the broker), remembered by offset for the assertions."""

    def __init__(self, publisher: Publisher) -> None:
        super().__init__(publisher, "ingest")
        self.offsets: dict[int, str] = {}

    async def send(self, record: ConsumerRecord[bytes, bytes], reason: str) -> None:
        await super().send(record, reason)
        self.offsets[record.offset] = reason


async def _prepare(dsn: str, s: IngestSettings) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        await conn.executemany(
            "INSERT INTO meters (meter_id, protocol, url, link_id, profile, interval_s)"
            " VALUES ($1, 'dlms', 'tcp://x:1', 'l', 'p', 900)",
            [(m,) for m in METERS],
        )
    finally:
        await conn.close()
    await ensure_topics(s, ["ami.readings", "ami.dead-letter"])


async def _one_fetch(s: IngestSettings, values: list[bytes], seen: dict[str, int]) -> None:
    records: list[ConsumerRecord[bytes, bytes]] = [
        ConsumerRecord(s.topic("ami.readings"), 0, i, 0, 0, b"k", v, None, 1, len(v), ()) for i, v in enumerate(values)
    ]
    ingest = Ingest(s)
    producer = make_producer(s)
    consumer = make_consumer(s, "unused", s.topic("ami.readings"))  # handle() pauses it only while the DB is away
    await producer.start()
    try:
        dead = _Recorded(Publisher(producer, s))
        good, bad = decode_batch(ReadingBatch, records)
        for rec, reason in bad:
            await dead.send(rec, reason)
        await ingest.handle(good, consumer, dead)  # must not raise: one message never stops the consumer
        conn = await asyncpg.connect(s.database_url.get_secret_value())
        try:
            for d in good:
                if d.record.offset in dead.offsets:
                    continue
                seen["stored"] += 1
                for series in d.message.series:
                    for ts in series.ts:
                        found = await conn.fetchval(
                            "SELECT count(*) FROM readings WHERE meter_id = $1 AND quantity = $2 AND ts = $3",
                            d.message.meter_id,
                            series.quantity,
                            ts,
                        )
                        assert found == 1, (d.message, dead.offsets)
        finally:
            await conn.close()
        assert all(r.offset in dead.offsets for r, _ in bad)
        seen["dead-lettered"] += len(dead.offsets)
        seen["refused by the database"] += sum("database" in reason for reason in dead.offsets.values())
    finally:
        await producer.stop()
        await consumer.stop()
        for slot in ingest.slots:
            await slot.close()


def test_any_batch_is_stored_or_dead_lettered_and_ingest_stays_up(
    stack: StackEndpoints, database_url: str, topic_prefix: str
) -> None:
    s = IngestSettings(
        kafka_bootstrap=stack.kafka_bootstrap,
        kafka_enable_idempotence=stack.kafka_enable_idempotence,
        database_url=database_url,
        topic_overrides={"ami.readings": f"{topic_prefix}readings", "ami.dead-letter": f"{topic_prefix}dlq"},
    )
    asyncio.run(_prepare(database_url, s))
    seen = {"stored": 0, "dead-lettered": 0, "refused by the database": 0}

    @settings(max_examples=40, deadline=None)
    @given(st.lists(_message(), min_size=1, max_size=4))
    def check(values: list[bytes]) -> None:
        asyncio.run(_one_fetch(s, values, seen))

    check()
    assert seen["stored"] > 0 and seen["dead-lettered"] > 0, seen  # both outcomes were exercised
