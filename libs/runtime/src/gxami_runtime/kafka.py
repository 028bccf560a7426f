"""The one place where aiokafka's delivery settings are chosen.

aiokafka's defaults do not fit this system: its producer defaults to ``acks=1`` and
its consumer to auto-commit with ``auto_offset_reset='latest'``. Here the producer
uses ``acks='all'`` with retries, and consumers never auto-commit, start new groups
at ``earliest``, and commit only after the work for a batch is done.
"""

from __future__ import annotations

import base64
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from pydantic import ValidationError

from gxami_contracts import CATALOG, DEAD_LETTER, DeadLetter, Message
from gxami_runtime.service import kafka_startup_error
from gxami_runtime.settings import ServiceSettings

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)


def _common(settings: ServiceSettings) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "request_timeout_ms": settings.kafka_request_timeout_ms,
        "security_protocol": settings.kafka_security_protocol,
        "client_id": f"gxami-{settings.instance or 'svc'}",
    }
    if settings.kafka_sasl_mechanism:
        opts["sasl_mechanism"] = settings.kafka_sasl_mechanism
        opts["sasl_plain_username"] = settings.kafka_sasl_username
        if settings.kafka_sasl_password is not None:
            opts["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return opts


def producer_options(settings: ServiceSettings) -> dict[str, Any]:
    """Every delivery setting of our producers, explicit."""
    return {
        **_common(settings),
        "acks": "all",
        "enable_idempotence": settings.kafka_enable_idempotence,
        "linger_ms": 5,
        "max_batch_size": 1 << 20,
        "retry_backoff_ms": 200,
        "compression_type": None,
    }


def consumer_options(settings: ServiceSettings, group_id: str) -> dict[str, Any]:
    """Every delivery setting of our consumers, explicit."""
    return {
        **_common(settings),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "max_poll_records": 1000,
        "session_timeout_ms": settings.kafka_session_timeout_ms,
        "heartbeat_interval_ms": settings.kafka_heartbeat_interval_ms,
        "max_poll_interval_ms": 300_000,
        "fetch_max_wait_ms": 200,
    }


def make_producer(settings: ServiceSettings) -> AIOKafkaProducer:
    return AIOKafkaProducer(**producer_options(settings))


def make_consumer(settings: ServiceSettings, group_id: str, *topics: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(*topics, **consumer_options(settings, group_id))


@contextlib.contextmanager
def _quiet_client_errors() -> Iterator[None]:
    """At start, an unreachable broker is reported once by the caller, not also by aiokafka's logger."""
    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


async def ensure_topics(settings: ServiceSettings, names: Sequence[str] | None = None) -> None:
    """Create the catalog's topics (physical names) if they do not exist yet."""
    admin = AIOKafkaAdminClient(**_common(settings))
    with _quiet_client_errors():
        await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [CATALOG[n] for n in (names or list(CATALOG))]
        new = [
            NewTopic(settings.topic(t.name), t.partitions, 1) for t in wanted if settings.topic(t.name) not in existing
        ]
        if new:
            # Another pod may create them first: that is what we wanted.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(new)
    finally:
        await admin.close()


async def start_clients(
    settings: ServiceSettings, group_id: str, *topics: str
) -> tuple[AIOKafkaProducer, AIOKafkaConsumer]:
    """Ensure the catalog's topics, then start a producer and a consumer of ``topics``.

    An unreachable broker becomes a StartupError naming it, and nothing is left running.
    """
    try:
        await ensure_topics(settings)
    except (KafkaError, OSError) as exc:
        raise kafka_startup_error(settings.kafka_bootstrap, exc) from None
    producer = make_producer(settings)
    consumer = make_consumer(settings, group_id, *topics)
    try:
        await producer.start()
        await consumer.start()
    except (KafkaError, OSError) as exc:
        await producer.stop()
        raise kafka_startup_error(settings.kafka_bootstrap, exc) from None
    return producer, consumer


class Publisher:
    """Sends contract messages as JSON, keyed as the catalog says."""

    def __init__(self, producer: AIOKafkaProducer, settings: ServiceSettings) -> None:
        self._producer = producer
        self._settings = settings

    async def send(self, logical_topic: str, key: str, message: Message) -> None:
        """Send and wait for the broker's acknowledgement (acks=all)."""
        await self._producer.send_and_wait(
            self._settings.topic(logical_topic), message.model_dump_json().encode(), key=key.encode()
        )

    async def send_many(self, logical_topic: str, items: Sequence[tuple[str, Message]]) -> None:
        """Send a batch and wait until every message is acknowledged."""
        futures = [
            await self._producer.send(self._settings.topic(logical_topic), m.model_dump_json().encode(), key=k.encode())
            for k, m in items
        ]
        for fut in futures:
            await fut


@dataclass(frozen=True, slots=True)
class Decoded(Generic[M]):
    """A consumed record with its decoded message."""

    record: ConsumerRecord[bytes, bytes]
    message: M


class DeadLetters:
    """Sends what a consumer cannot handle to ``ami.dead-letter`` with the reason."""

    def __init__(self, publisher: Publisher, consumer_name: str) -> None:
        self._publisher = publisher
        self._consumer = consumer_name

    async def send(self, record: ConsumerRecord[bytes, bytes], reason: str) -> None:
        key = record.key.decode(errors="replace") if record.key is not None else None
        letter = DeadLetter(
            source_topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=key,
            reason=reason[:4000],
            consumer=self._consumer,
            failed_at=datetime.now(UTC),
            original_b64=base64.b64encode(record.value or b"").decode(),
        )
        await self._publisher.send(DEAD_LETTER, key or "", letter)
        log.warning(
            "dead-lettered a message",
            extra={"topic": record.topic, "partition": record.partition, "offset": record.offset, "reason": reason},
        )


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem: field path and message, without echoing input values."""
    parts = []
    for err in exc.errors(include_input=False)[:10]:
        loc = ".".join(str(p) for p in err["loc"]) or "(message)"
        parts.append(f"{loc}: {err['msg']}")
    return "schema: " + "; ".join(parts)


def decode_batch(
    model: type[M], records: Sequence[ConsumerRecord[bytes, bytes]]
) -> tuple[list[Decoded[M]], list[tuple[ConsumerRecord[bytes, bytes], str]]]:
    """Split records into decoded messages and poison records with their reasons."""
    good: list[Decoded[M]] = []
    bad: list[tuple[ConsumerRecord[bytes, bytes], str]] = []
    for rec in records:
        if rec.value is None:
            bad.append((rec, "empty message (tombstone) on a data topic"))
            continue
        try:
            good.append(Decoded(rec, model.model_validate_json(rec.value)))
        except ValidationError as exc:
            bad.append((rec, describe_validation_error(exc)))
    return good, bad


BatchHandler = Callable[[list[Decoded[M]]], Awaitable[None]]


async def consume_batches(
    consumer: AIOKafkaConsumer,
    model: type[M],
    handler: BatchHandler[M],
    dead_letters: DeadLetters,
    *,
    max_records: int = 1000,
    timeout_ms: int = 500,
    stop: Callable[[], bool] = lambda: False,
    on_idle: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Fetch, decode, dead-letter poison, hand the rest to ``handler``, then commit.

    Offsets are committed only after ``handler`` returned: a crash before that
    redelivers the batch, which our idempotent handlers absorb.
    """
    while not stop():
        batches = await consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        if not batches:
            if on_idle is not None:
                await on_idle()
            continue
        records = [r for recs in batches.values() for r in recs]
        good, bad = decode_batch(model, records)
        for rec, reason in bad:
            await dead_letters.send(rec, reason)
        if good:
            await handler(good)
        offsets = {tp: recs[-1].offset + 1 for tp, recs in batches.items()}
        await commit(consumer, offsets)


async def commit(consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
    """Commit; a rebalance in between is logged, the records will be redelivered and absorbed."""
    try:
        await consumer.commit(offsets)
    except KafkaError as exc:
        log.warning("offset commit failed; records will be redelivered", extra={"error": repr(exc)})
