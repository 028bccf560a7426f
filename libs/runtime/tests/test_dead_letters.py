"""Dead letters that always fit the broker, and finding the culprits of a refused batch (issue 14)."""

from __future__ import annotations

import base64
import hashlib
import logging
from datetime import UTC, datetime

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord

from gxami_contracts import DeadLetter, ReadJob
from gxami_meterlab.devstack import StackEndpoints
from gxami_runtime.isolation import database_refusal, store_isolating
from gxami_runtime.kafka import (
    DEAD_LETTER_ORIGINAL_BYTES,
    DEAD_LETTERS_TOTAL,
    MAX_REQUEST_BYTES,
    DeadLetters,
    Publisher,
    consumer_options,
    dead_letter,
    decode_batch,
    ensure_topics,
    make_consumer,
    producer_options,
)
from gxami_runtime.settings import ServiceSettings


def _record(value: bytes | None, key: bytes | None = b"M1", offset: int = 5) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("ami.readings", 2, offset, 0, 0, key, value, None, 0, len(value or b""), ())


def test_delivery_size_limits_are_explicit() -> None:
    s = ServiceSettings()
    assert producer_options(s)["max_request_size"] == MAX_REQUEST_BYTES
    opts = consumer_options(s, "g")
    assert opts["max_partition_fetch_bytes"] <= opts["fetch_max_bytes"]
    assert opts["fetch_max_bytes"] <= 64 << 20


@pytest.mark.parametrize("size", [0, 10, DEAD_LETTER_ORIGINAL_BYTES, DEAD_LETTER_ORIGINAL_BYTES + 1, 5 << 20])
def test_a_dead_letter_keeps_a_prefix_and_the_size_and_digest_of_the_whole(size: int) -> None:
    original = bytes(range(256)) * (size // 256) + b"\xff" * (size % 256)
    # the worst envelope: the longest reason, all escaped control characters, the longest key
    letter = dead_letter(
        _record(original, key=b"\x01" * 5000), "\x01" * 5000, "ingest", keep=DEAD_LETTER_ORIGINAL_BYTES
    )
    kept = base64.b64decode(letter.original_b64)
    assert kept == original[:DEAD_LETTER_ORIGINAL_BYTES]
    assert letter.original_truncated is (size > DEAD_LETTER_ORIGINAL_BYTES)
    assert (letter.original_size, letter.original_sha256) == (size, hashlib.sha256(original).hexdigest())
    assert len(letter.model_dump_json().encode()) + len((letter.key or "").encode()) < 0.8 * MAX_REQUEST_BYTES
    assert DeadLetter.model_validate_json(letter.model_dump_json()) == letter


def test_a_record_over_its_models_bound_is_refused_unparsed() -> None:
    big = b'{"job_id": "' + b"x" * ReadJob.max_wire_bytes + b'"}'
    good, bad = decode_batch(ReadJob, [_record(big), _record(None)])
    assert good == []
    assert [reason for _, reason in bad] == [
        f"too large: {len(big)} bytes, over the {ReadJob.max_wire_bytes}-byte bound of ReadJob",
        "empty message (tombstone) on a data topic",
    ]
    _, bad = decode_batch(ReadJob, [_record(b'{"job_id": "x"}')], max_bytes=4)
    assert bad[0][1].startswith("too large: 15 bytes, over the 4-byte bound")


async def test_isolating_stores_everything_good_and_hands_over_each_bad_item_once() -> None:
    stored: list[list[int]] = []
    refused: list[tuple[int, str]] = []

    async def store(items: list[int]) -> int:
        if any(i % 7 == 3 for i in items):
            raise asyncpg.exceptions.NumericValueOutOfRangeError("integer out of range")
        stored.append(items)
        return len(items)

    async def refuse(item: int, reason: str) -> None:
        refused.append((item, reason))

    counts = await store_isolating(list(range(40)), store, database_refusal, refuse)
    assert sorted(i for batch in stored for i in batch) == [i for i in range(40) if i % 7 != 3]
    assert [i for i, _ in refused] == [3, 10, 17, 24, 31, 38]
    assert sum(counts) == 34
    assert refused[0][1] == (
        "the database refused it: NumericValueOutOfRangeError (SQLSTATE 22003): integer out of range"
    )
    assert await store_isolating([1, 2], store, database_refusal, refuse) == [2]  # a good batch: one store

    async def away(items: list[int]) -> int:
        raise asyncpg.exceptions.DiskFullError("could not extend file")

    with pytest.raises(asyncpg.exceptions.DiskFullError):  # not the messages' fault: raised, nothing refused
        await store_isolating([1, 2, 3], away, database_refusal, refuse)
    assert len(refused) == 6


@pytest.mark.parametrize(
    ("exc", "refused"),
    [
        (asyncpg.exceptions.CharacterNotInRepertoireError('invalid byte sequence for encoding "UTF8": 0x00'), True),
        (asyncpg.exceptions.StringDataRightTruncationError("value too long for type character varying(8)"), True),
        (asyncpg.exceptions.CheckViolationError('new row violates check constraint "c"\nDETAIL: Failing row'), True),
        (asyncpg.exceptions.RaiseError("refused by a trigger"), True),
        (OverflowError("value out of int32 range"), True),
        (asyncpg.exceptions.CheckViolationError('no partition of relation "readings" found for row'), False),
        (asyncpg.exceptions.DiskFullError("could not extend file"), False),
        (asyncpg.exceptions.UndefinedTableError('relation "readings" does not exist'), False),
        (asyncpg.exceptions.AdminShutdownError("terminating connection"), False),
        (OSError("connection refused"), False),
        (RuntimeError("a bug"), False),
    ],
)
def test_only_data_errors_are_blamed_on_the_messages(exc: BaseException, refused: bool) -> None:
    reason = database_refusal(exc)
    assert (reason is not None) is refused
    if reason is not None:
        assert "DETAIL" not in reason and "Failing row" not in reason and len(reason) < 300


@pytest.mark.integration
async def test_a_letter_the_broker_refuses_goes_without_its_original_or_is_logged_and_skipped(
    stack: StackEndpoints, topic_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    s = ServiceSettings(
        kafka_bootstrap=stack.kafka_bootstrap,
        kafka_session_timeout_ms=2000,
        kafka_heartbeat_interval_ms=500,
        topic_overrides={"ami.dead-letter": f"{topic_prefix}dlq"},
    )
    await ensure_topics(s, ["ami.dead-letter"])
    original = b"{" + b"y" * 20_000
    # A smaller request limit than ours stands for a broker that refuses the letter as too large.
    for limit, outcome in ((4_000, "stripped"), (200, "failed")):
        producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, max_request_size=limit, acks="all")
        await producer.start()
        before = DEAD_LETTERS_TOTAL.labels("probe", outcome)._value.get()
        try:
            with caplog.at_level(logging.WARNING, logger="gxami_runtime.kafka"):
                await DeadLetters(Publisher(producer, s), "probe").send(_record(original), "schema: (message): bad")
        finally:
            await producer.stop()
        assert DEAD_LETTERS_TOTAL.labels("probe", outcome)._value.get() == before + 1
    failed = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failed) == 1 and failed[0].sha256 == hashlib.sha256(original).hexdigest()  # type: ignore[attr-defined]
    assert (failed[0].topic, failed[0].partition, failed[0].offset) == ("ami.readings", 2, 5)  # type: ignore[attr-defined]
    reader = make_consumer(s, f"{topic_prefix}reader", s.topic("ami.dead-letter"))
    await reader.start()
    try:
        letters = [
            DeadLetter.model_validate_json(r.value)
            for recs in (await reader.getmany(timeout_ms=5000)).values()
            for r in recs
        ]
    finally:
        await reader.stop()
    [letter] = letters  # the stripped one; the failed one never reached the broker
    assert (letter.original_b64, letter.original_truncated, letter.original_size) == ("", True, len(original))
    assert letter.failed_at <= datetime.now(UTC)
