"""The one place where aiokafka's delivery settings are chosen.

aiokafka's defaults do not fit this system: its producer defaults to ``acks=1`` and
its consumer to auto-commit with ``auto_offset_reset='latest'``. Here the producer
uses ``acks='all'`` with retries, and consumers never auto-commit, start new groups
at ``earliest``, and commit only after the work for a batch is done.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar
from weakref import WeakKeyDictionary

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    ProducerClosed,
    TopicAlreadyExistsError,
)
from prometheus_client import Counter, Gauge
from pydantic import ValidationError

from gxami_contracts import CATALOG, DEAD_LETTER, DeadLetter, Message
from gxami_contracts.topics import TopicSpec
from gxami_runtime.isolation import Refusal, store_isolating
from gxami_runtime.kafka_security import CONNECT_FAILURES, client_options
from gxami_runtime.service import kafka_startup_error
from gxami_runtime.settings import ServiceSettings

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)

# The largest request a producer sends, so the largest message it can publish (the broker's
# message.max.bytes, 1 MB on Kafka by default, must be at least this).
MAX_REQUEST_BYTES = 1 << 20
# What a consumer fetches at most per partition and per request. A record bigger than these still
# comes (Kafka returns the first batch whatever its size, so a consumer always makes progress), and
# is then refused unparsed by its model's ``max_wire_bytes``.
MAX_PARTITION_FETCH_BYTES = 1 << 20
FETCH_MAX_BYTES = 16 << 20
# A dead letter keeps at most this many bytes of its original: base64 makes them 4/3 as many
# (~700 kB), and the rest of the letter (reason, key, names) is under 30 kB however it is escaped,
# so the letter stays well under MAX_REQUEST_BYTES. A longer original is cut to this prefix.
DEAD_LETTER_ORIGINAL_BYTES = 512 * 1024
DEAD_LETTER_KEY_CHARS = 1000
DEAD_LETTER_SEND_ATTEMPTS = 3

DEAD_LETTERS_TOTAL = Counter(
    "gxami_dead_letters_total",
    "Dead letters by consumer and outcome (sent, truncated, stripped: sent without the original, failed)",
    ["consumer", "outcome"],
)


def _common(settings: ServiceSettings) -> dict[str, Any]:
    """Broker address, timeouts and security (TLS context, SASL) of every producer, consumer and admin client."""
    return {
        "bootstrap_servers": settings.kafka_bootstrap,
        "request_timeout_ms": settings.kafka_request_timeout_ms,
        "client_id": f"gxami-{settings.instance or 'svc'}",
        **client_options(settings.kafka_security()),
    }


def producer_options(settings: ServiceSettings) -> dict[str, Any]:
    """Every delivery setting of our producers, explicit."""
    return {
        **_common(settings),
        "acks": "all",
        "enable_idempotence": settings.kafka_enable_idempotence,
        "linger_ms": 5,
        "max_batch_size": 1 << 20,
        "max_request_size": MAX_REQUEST_BYTES,
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
        "fetch_max_bytes": FETCH_MAX_BYTES,
        "max_partition_fetch_bytes": MAX_PARTITION_FETCH_BYTES,
    }


def make_producer(settings: ServiceSettings) -> AIOKafkaProducer:
    return AIOKafkaProducer(**producer_options(settings))


# Every consuming service's own lag (issue 13, item 5): after each commit, how far each committed
# partition is behind its end (the high-water mark of the last fetch). An operator sees it in the
# service's /metrics without a Kafka exporter; KEDA scales on the broker's view of the same number.
CONSUMER_LAG = Gauge(
    "gxami_consumer_lag",
    "Records between the last committed offset and the end of the partition",
    ["group", "topic", "partition"],
)
CONSUMER_COMMITTED_AT = Gauge(
    "gxami_consumer_last_commit_timestamp_seconds", "Unix time of the group's last successful commit", ["group"]
)
_GROUPS: WeakKeyDictionary[AIOKafkaConsumer, str] = WeakKeyDictionary()


def make_consumer(settings: ServiceSettings, group_id: str, *topics: str) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(*topics, **consumer_options(settings, group_id))
    _GROUPS[consumer] = group_id
    return consumer


def record_lag(consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
    """Set the lag gauges of the partitions just committed (``offsets``: the next offset to read)."""
    group = _GROUPS.get(consumer, "unknown")
    for tp, offset in offsets.items():
        end = consumer.highwater(tp)
        if end is not None:
            CONSUMER_LAG.labels(group, tp.topic, str(tp.partition)).set(max(0, end - offset))
    CONSUMER_COMMITTED_AT.labels(group).set_to_current_time()


@contextlib.contextmanager
def _quiet_client_errors() -> Iterator[None]:
    """At start, an unreachable broker is reported once by the caller, not also by aiokafka's logger.

    Its errors still reach CONNECT_FAILURES, which keeps the reason for the caller's message and drops them.
    """
    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(logging.ERROR)
    CONNECT_FAILURES.quiet += 1
    try:
        yield
    finally:
        CONNECT_FAILURES.quiet -= 1
        logger.setLevel(level)


async def _broker_count(admin: AIOKafkaAdminClient) -> int:
    """How many brokers the cluster has (a replication factor above it cannot be created)."""
    try:
        cluster = await admin.describe_cluster()
        return max(1, len(cluster.get("brokers", ())))
    except (KafkaError, KeyError, TypeError, ValueError):
        # A broker without DescribeCluster (v0 is Kafka 2.8+): the metadata list_topics just fetched.
        return max(1, len(admin._client.cluster.brokers()))  # aiokafka has no public accessor


def topic_configs(spec: TopicSpec) -> dict[str, str]:
    """The topic settings the catalog gives: cleanup policy and retention."""
    configs = {"cleanup.policy": "compact"} if spec.compacted else {}
    if spec.retention_ms is not None and not spec.compacted:
        configs["retention.ms"] = str(spec.retention_ms)
    return configs


async def ensure_topics(settings: ServiceSettings, names: Sequence[str] | None = None) -> None:
    """Create the catalog's topics (physical names) if they do not exist yet; nothing when
    ``kafka_create_topics`` is off (production: the platform makes them).

    Partitions, retention and cleanup policy come from the catalog, and so does the replication
    factor (``kafka_replication_factor`` overrides it), capped at the brokers the cluster has.
    """
    if not settings.kafka_create_topics:
        return
    admin = AIOKafkaAdminClient(**_common(settings))
    with _quiet_client_errors():
        await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [CATALOG[n] for n in (names or list(CATALOG))]
        missing = [t for t in wanted if settings.topic(t.name) not in existing]
        brokers = await _broker_count(admin) if missing else 1
        new = [
            NewTopic(
                settings.topic(t.name),
                t.partitions,
                min(settings.kafka_replication_factor or t.replication_factor, brokers),
                topic_configs=topic_configs(t),
            )
            for t in missing
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
    security = settings.kafka_security()
    try:
        await ensure_topics(settings)
    except (KafkaError, OSError) as exc:
        raise kafka_startup_error(settings.kafka_bootstrap, exc, security) from None
    producer = make_producer(settings)
    consumer = make_consumer(settings, group_id, *topics)
    try:
        with _quiet_client_errors():
            await producer.start()
            await consumer.start()
    except (KafkaError, OSError) as exc:
        await producer.stop()
        raise kafka_startup_error(settings.kafka_bootstrap, exc, security) from None
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


def dead_letter(record: ConsumerRecord[bytes, bytes], reason: str, consumer: str, *, keep: int) -> DeadLetter:
    """The dead letter of ``record``: at most ``keep`` bytes of the original, with its size and SHA-256."""
    original = record.value or b""
    key = record.key.decode(errors="replace")[:DEAD_LETTER_KEY_CHARS] if record.key is not None else None
    return DeadLetter(
        source_topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=key,
        reason=reason[:4000],
        consumer=consumer,
        failed_at=datetime.now(UTC),
        original_b64=base64.b64encode(original[:keep]).decode(),
        original_size=len(original),
        original_sha256=hashlib.sha256(original).hexdigest(),
        original_truncated=len(original) > keep,
    )


class DeadLetters:
    """Sends what a consumer cannot handle to ``ami.dead-letter`` with the reason.

    An original too large for the broker is cut to a prefix (size and SHA-256 of the whole kept).
    If the broker refuses the letter anyway (a non-retriable error, e.g. a smaller size limit),
    it is sent once more without the original; if that is refused too, the letter is logged at
    ERROR with where the message is and its digest, counted (``gxami_dead_letters_total{outcome=
    "failed"}``), and the consumer goes on: the message stays in its topic until retention, and
    one refused letter must not stop every message behind it. A retriable failure (broker away)
    is retried, and raised after ``DEAD_LETTER_SEND_ATTEMPTS``: then the offset is not committed
    and the message comes again.
    """

    def __init__(self, publisher: Publisher, consumer_name: str, *, retry_s: float = 1.0) -> None:
        self._publisher = publisher
        self._consumer = consumer_name
        self._retry_s = retry_s

    async def send(self, record: ConsumerRecord[bytes, bytes], reason: str) -> None:
        letter = dead_letter(record, reason, self._consumer, keep=DEAD_LETTER_ORIGINAL_BYTES)
        where = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
        try:
            await self._publish(letter)
            outcome = "truncated" if letter.original_truncated else "sent"
        except DeadLetterUnavailableError:
            raise
        except KafkaError as exc:
            log.warning(
                "dead letter refused by the broker; sending it without the original",
                extra={**where, "error": repr(exc)},
            )
            stripped = dead_letter(record, reason, self._consumer, keep=0)
            try:
                await self._publish(stripped)
                outcome = "stripped"
            except DeadLetterUnavailableError:
                raise
            except KafkaError as again:
                DEAD_LETTERS_TOTAL.labels(self._consumer, "failed").inc()
                log.error(  # noqa: TRY400 - the error is in the record; its traceback says nothing more
                    "could not publish a dead letter; the message is skipped and stays in its topic",
                    extra={
                        **where,
                        "reason": reason,
                        "size": letter.original_size,
                        "sha256": letter.original_sha256,
                        "error": repr(again),
                    },
                )
                return
        DEAD_LETTERS_TOTAL.labels(self._consumer, outcome).inc()
        log.warning(
            "dead-lettered a message",
            extra={**where, "reason": reason, "size": letter.original_size, "truncated": letter.original_truncated},
        )

    async def _publish(self, letter: DeadLetter) -> None:
        """Send; retriable errors are retried, a non-retriable one (the letter refused) is raised at once."""
        for attempt in range(1, DEAD_LETTER_SEND_ATTEMPTS + 1):
            try:
                await self._publisher.send(DEAD_LETTER, letter.key or "", letter)
                return
            except KafkaError as exc:
                if not _broker_away(exc):
                    raise
                if attempt == DEAD_LETTER_SEND_ATTEMPTS:
                    raise DeadLetterUnavailableError(f"dead-letter topic unavailable: {exc!r}") from exc
                await asyncio.sleep(self._retry_s * attempt)


def _broker_away(exc: KafkaError) -> bool:
    """True for a failure that says nothing about the letter: the broker is away, or we are stopping."""
    return bool(exc.retriable) or isinstance(exc, (KafkaTimeoutError, ProducerClosed))


class DeadLetterUnavailableError(KafkaConnectionError):  # type: ignore[misc]  # aiokafka ships no types for its errors
    """Publishing a dead letter failed with retriable errors only: the broker is away, not the letter refused."""


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem: field path and message, without echoing input values."""
    parts = []
    for err in exc.errors(include_input=False)[:10]:
        loc = ".".join(str(p) for p in err["loc"]) or "(message)"
        parts.append(f"{loc}: {err['msg']}")
    return "schema: " + "; ".join(parts)


def decode_batch(
    model: type[M], records: Sequence[ConsumerRecord[bytes, bytes]], *, max_bytes: int | None = None
) -> tuple[list[Decoded[M]], list[tuple[ConsumerRecord[bytes, bytes], str]]]:
    """Split records into decoded messages and poison records with their reasons.

    A record larger than ``max_bytes`` (default: the model's ``max_wire_bytes``) is refused unparsed.
    """
    limit = model.max_wire_bytes if max_bytes is None else max_bytes
    good: list[Decoded[M]] = []
    bad: list[tuple[ConsumerRecord[bytes, bytes], str]] = []
    for rec in records:
        if rec.value is None:
            bad.append((rec, "empty message (tombstone) on a data topic"))
            continue
        if len(rec.value) > limit:
            bad.append((rec, f"too large: {len(rec.value)} bytes, over the {limit}-byte bound of {model.__name__}"))
            continue
        try:
            good.append(Decoded(rec, model.from_wire(rec.value)))
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
    refusal: Refusal | None = None,
) -> None:
    """Fetch, decode, dead-letter poison, hand the rest to ``handler``, then commit.

    Offsets are committed only after ``handler`` returned: a crash before that
    redelivers the batch, which our idempotent handlers absorb. With ``refusal``, a handler
    failure it recognises as caused by the messages (it returns a reason) is narrowed down by
    handing over halves of the batch until each culprit is alone; those are dead-lettered and
    the rest handled.
    """

    async def refuse(item: Decoded[M], reason: str) -> None:
        await dead_letters.send(item.record, reason)

    async def handle(items: list[Decoded[M]]) -> None:
        if refusal is None:
            await handler(items)
        else:
            await store_isolating(items, handler, refusal, refuse)

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
            await handle(good)
        offsets = {tp: recs[-1].offset + 1 for tp, recs in batches.items()}
        await commit(consumer, offsets)


async def commit(consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
    """Commit; a rebalance in between is logged, the records will be redelivered and absorbed."""
    try:
        await consumer.commit(offsets)
    except KafkaError as exc:
        log.warning("offset commit failed; records will be redelivered", extra={"error": repr(exc)})
        return
    record_lag(consumer, offsets)
