"""`gxami dlq list|replay` against the real broker: filters, JSON, replay of the original bytes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from typer.testing import CliRunner

from gxami_contracts import DEAD_LETTER, DeadLetter
from gxami_ingest.dlq import LetterFilter, dlq_app, read_dead_letters, replay_dead_letters
from gxami_ingest.settings import IngestSettings
from gxami_meterlab.devstack import StackEndpoints
from gxami_runtime.kafka import Publisher, consumer_options, ensure_topics, make_producer

pytestmark = pytest.mark.integration


def _settings(stack: StackEndpoints, prefix: str) -> IngestSettings:
    return IngestSettings(
        kafka_bootstrap=stack.kafka_bootstrap,
        kafka_enable_idempotence=stack.kafka_enable_idempotence,
        kafka_session_timeout_ms=2000,
        kafka_heartbeat_interval_ms=500,
        topic_overrides={"ami.readings": f"{prefix}readings", "ami.dead-letter": f"{prefix}dlq"},
    )


def _letter(s: IngestSettings, key: str, reason: str, original: bytes, consumer: str = "ingest") -> DeadLetter:
    return DeadLetter(
        source_topic=s.topic("ami.readings"),
        partition=0,
        offset=7,
        key=key,
        reason=reason,
        consumer=consumer,
        failed_at=datetime.now(UTC),
        original_b64=base64.b64encode(original).decode(),
        original_size=len(original),
        original_sha256=hashlib.sha256(original).hexdigest(),
    )


async def _publish(s: IngestSettings, letters: list[DeadLetter], raw: tuple[bytes, ...] = ()) -> None:
    await ensure_topics(s, ["ami.readings", "ami.dead-letter"])
    producer = make_producer(s)
    await producer.start()
    try:
        pub = Publisher(producer, s)
        for d in letters:
            await pub.send(DEAD_LETTER, d.key or "", d)
        for value in raw:
            await producer.send_and_wait(s.topic(DEAD_LETTER), value, key=b"junk")
    finally:
        await producer.stop()


async def _read_topic(s: IngestSettings, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    consumer = AIOKafkaConsumer(**{**consumer_options(s, "unused"), "group_id": None})
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        end = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[tuple[bytes | None, bytes | None]] = []
        async with asyncio.timeout(15):
            while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
                for recs in (await consumer.getmany(timeout_ms=300)).values():
                    out.extend((r.key, r.value) for r in recs)
        return out
    finally:
        await consumer.stop()


async def test_list_filters_and_replay_resends_the_original_bytes(stack: StackEndpoints, topic_prefix: str) -> None:
    s = _settings(stack, topic_prefix)
    letters = [
        _letter(s, "M9", "unknown meter 'M9' (not in the meter registry)", b'{"meter_id":"M9"}'),
        _letter(s, "M1", "schema: readings.0.value: must be a finite number", b'{"value":"NaN"}'),
        _letter(s, "M7", "Unknown meter 'M7' (not in the meter registry)", b'{"meter_id":"M7"}'),
        _letter(s, "S1", "schema: (message): invalid JSON", b"{not json", consumer="scheduler"),
    ]
    await _publish(s, letters, raw=[b"garbage, not a dead letter"])

    everything = await read_dead_letters(s, LetterFilter(), timeout_s=20)
    assert len(everything) == 5
    assert [(x.partition, x.offset) for x in everything] == sorted((x.partition, x.offset) for x in everything)
    assert sum(x.letter is None for x in everything) == 1
    unknown = await read_dead_letters(s, LetterFilter(reason="UNKNOWN METER"))
    assert sorted(x.letter.key for x in unknown if x.letter) == ["M7", "M9"]
    assert [x.letter.key for x in await read_dead_letters(s, LetterFilter(consumer="scheduler")) if x.letter] == ["S1"]
    assert await read_dead_letters(s, LetterFilter(source_topic="elsewhere")) == []
    one = next(x for x in everything if x.letter is not None and x.letter.key == "M1")
    picked = await read_dead_letters(
        s, LetterFilter(partition=one.partition, from_offset=one.offset, to_offset=one.offset)
    )
    assert [(x.partition, x.offset) for x in picked] == [(one.partition, one.offset)]
    assert len(await read_dead_letters(s, LetterFilter(), limit=2)) == 2
    listed = one.to_json()
    assert (listed["source_topic"], listed["consumer"], listed["original_bytes"]) == (
        s.topic("ami.readings"),
        "ingest",
        len(b'{"value":"NaN"}'),
    )

    dry = await replay_dead_letters(s, unknown, dry_run=True)
    assert {r.outcome for r in dry} == {"would send"}
    assert await _read_topic(s, s.topic("ami.readings")) == []

    done = await replay_dead_letters(s, [*unknown, *(x for x in everything if x.letter is None)])
    assert sorted(r.outcome for r in done) == ["sent", "sent", "skipped: not a dead letter: 1 problem(s)"]
    assert sorted(await _read_topic(s, s.topic("ami.readings"))) == [
        (b"M7", b'{"meter_id":"M7"}'),
        (b"M9", b'{"meter_id":"M9"}'),
    ]


def test_cli_lists_as_table_and_json_and_refuses_an_unfiltered_replay(stack: StackEndpoints, topic_prefix: str) -> None:
    s = _settings(stack, topic_prefix)
    asyncio.run(_publish(s, [_letter(s, "M9", "unknown meter 'M9' (not in the meter registry)", b"{}")]))
    env = {
        **stack.env(),
        "GXAMI_TOPIC_OVERRIDES": json.dumps(s.topic_overrides),
        "GXAMI_KAFKA_SESSION_TIMEOUT_MS": "2000",
        "GXAMI_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
    }
    runner = CliRunner()

    table = runner.invoke(dlq_app, ["list"], env=env)
    assert table.exit_code == 0, table.output
    assert f"{topic_prefix}readings[0]@7" in table.output and "unknown meter 'M9'" in table.output
    assert "1 dead letter(s)" in table.output

    as_json = runner.invoke(dlq_app, ["list", "--json", "--reason", "unknown"], env=env)
    assert as_json.exit_code == 0, as_json.output
    rows = json.loads(as_json.output)
    assert [(r["key"], r["consumer"], r["source_offset"]) for r in rows] == [("M9", "ingest", 7)]
    assert {"partition", "offset", "time", "source_topic", "reason"} <= rows[0].keys()

    refused = runner.invoke(dlq_app, ["replay"], env=env)
    assert refused.exit_code == 1
    dry = runner.invoke(dlq_app, ["replay", "--reason", "unknown", "--dry-run", "--json"], env=env)
    assert dry.exit_code == 0, dry.output
    assert [r["outcome"] for r in json.loads(dry.output)] == ["would send"]
    sent = runner.invoke(dlq_app, ["replay", "--all"], env=env)
    assert sent.exit_code == 0 and "replayed 1 of 1" in sent.output


async def test_a_letter_that_kept_only_a_prefix_is_listed_but_never_replayed(
    stack: StackEndpoints, topic_prefix: str
) -> None:
    from aiokafka.structs import ConsumerRecord

    from gxami_runtime.kafka import DEAD_LETTER_ORIGINAL_BYTES, dead_letter

    s = _settings(stack, topic_prefix)
    original = b"{" + b"x" * (DEAD_LETTER_ORIGINAL_BYTES + 10)
    record: ConsumerRecord[bytes, bytes] = ConsumerRecord(
        s.topic("ami.readings"), 0, 3, 0, 0, b"M1", original, None, 2, len(original), ()
    )
    await _publish(
        s, [dead_letter(record, "schema: (message): invalid JSON", "ingest", keep=DEAD_LETTER_ORIGINAL_BYTES)]
    )
    [stored] = await read_dead_letters(s, LetterFilter(), timeout_s=20)
    listed = stored.to_json()
    assert listed["original_truncated"] is True
    assert (listed["original_size"], listed["original_bytes"]) == (len(original), DEAD_LETTER_ORIGINAL_BYTES)
    assert listed["original_sha256"] == hashlib.sha256(original).hexdigest()
    [replayed] = await replay_dead_letters(s, [stored])
    assert replayed.outcome == f"skipped: only a prefix of the {len(original)}-byte original was kept"
    assert await _read_topic(s, s.topic("ami.readings")) == []
