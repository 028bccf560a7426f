"""`gxami dlq list|replay`: look at ami.dead-letter, and re-publish originals once their cause is fixed.

Reading needs no consumer group: the dead-letter topic's partitions are assigned by hand and
read from the first offset (or ``--from-offset``) up to the end offsets taken at the start, so a
listing never joins a group, never commits and always ends. Replay sends each letter's original
bytes, with its original key, to the topic it came from (the physical name recorded when it was
dead-lettered); consumers are idempotent, so replaying twice does no harm. A letter that kept only a
prefix of an original too large for the broker (``original_truncated``) is listed but never replayed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:  # `gxami --help` imports this module: aiokafka, pydantic and contracts load in the commands
    from gxami_contracts import DeadLetter
    from gxami_runtime.settings import ServiceSettings

dlq_app = typer.Typer(
    help="Dead letters (ami.dead-letter): list them, replay them after fixing the cause.",
    no_args_is_help=True,
    add_completion=False,
)


@dataclass(frozen=True, slots=True)
class StoredLetter:
    """One record of the dead-letter topic: where it is, when it was written, and what it says."""

    partition: int
    offset: int
    written_at: datetime
    letter: DeadLetter | None
    problem: str | None = None  # why the record is not a readable DeadLetter

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"partition": self.partition, "offset": self.offset, "time": self.written_at.isoformat()}
        if self.letter is None:
            out["problem"] = self.problem
            return out
        d = self.letter
        raw = _original(d)
        out.update(
            source_topic=d.source_topic,
            source_partition=d.partition,
            source_offset=d.offset,
            key=d.key,
            consumer=d.consumer,
            failed_at=d.failed_at.isoformat(),
            reason=d.reason,
            original_bytes=len(raw) if raw is not None else None,
            original_size=d.original_size,
            original_sha256=d.original_sha256,
            original_truncated=d.original_truncated,
        )
        return out


def _original(letter: DeadLetter) -> bytes | None:
    """The original message bytes, or None when original_b64 is not valid base64."""
    try:
        return base64.b64decode(letter.original_b64, validate=True)
    except (binascii.Error, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class LetterFilter:
    """Which letters to take: every field that is set must match (offsets are the dead-letter topic's)."""

    source_topic: str | None = None
    consumer: str | None = None
    reason: str | None = None  # substring, case-insensitive
    partition: int | None = None
    from_offset: int | None = None  # inclusive
    to_offset: int | None = None  # inclusive

    def is_empty(self) -> bool:
        return all(
            v is None
            for v in (self.source_topic, self.consumer, self.reason, self.partition, self.from_offset, self.to_offset)
        )

    def matches(self, s: StoredLetter) -> bool:
        if self.partition is not None and s.partition != self.partition:
            return False
        if self.from_offset is not None and s.offset < self.from_offset:
            return False
        if self.to_offset is not None and s.offset > self.to_offset:
            return False
        if s.letter is None:
            return self.source_topic is None and self.consumer is None and self.reason is None
        if self.source_topic is not None and s.letter.source_topic != self.source_topic:
            return False
        if self.consumer is not None and s.letter.consumer != self.consumer:
            return False
        return self.reason is None or self.reason.lower() in s.letter.reason.lower()


def _decode(partition: int, offset: int, timestamp_ms: int, value: bytes | None) -> StoredLetter:
    from pydantic import ValidationError

    from gxami_contracts import DeadLetter

    written = datetime.fromtimestamp(timestamp_ms / 1000, UTC)
    if value is None:
        return StoredLetter(partition, offset, written, None, "empty record")
    try:
        return StoredLetter(partition, offset, written, DeadLetter.from_wire(value))
    except ValidationError as exc:
        return StoredLetter(partition, offset, written, None, f"not a dead letter: {exc.error_count()} problem(s)")


async def read_dead_letters(
    settings: ServiceSettings, flt: LetterFilter, *, timeout_s: float = 30.0, limit: int | None = None
) -> list[StoredLetter]:
    """The dead letters matching ``flt``, in partition and offset order; TimeoutError if reading stalls."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from gxami_contracts import DEAD_LETTER
    from gxami_runtime.kafka import consumer_options

    topic = settings.topic(DEAD_LETTER)
    # No group: partitions are assigned by hand, nothing is committed (no join, no rebalance).
    consumer = AIOKafkaConsumer(**{**consumer_options(settings, "gxami-dlq"), "group_id": None})
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts) if flt.partition in (None, p)]
        if not tps:
            return []
        consumer.assign(tps)
        first = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        stop: dict[TopicPartition, int] = {}
        pending: set[TopicPartition] = set()
        for tp in tps:
            start = max(first[tp], flt.from_offset or 0)
            stop[tp] = end[tp] if flt.to_offset is None else min(end[tp], flt.to_offset + 1)
            if start < stop[tp]:
                consumer.seek(tp, start)
                pending.add(tp)
        found: list[StoredLetter] = []
        async with asyncio.timeout(timeout_s):
            while pending:
                batches = await consumer.getmany(*pending, timeout_ms=500, max_records=500)
                for tp, records in batches.items():
                    for rec in records:
                        if rec.offset < stop[tp]:
                            letter = _decode(tp.partition, rec.offset, rec.timestamp, rec.value)
                            if flt.matches(letter):
                                found.append(letter)
                for tp in list(pending):
                    if await consumer.position(tp) >= stop[tp]:
                        pending.discard(tp)
        found.sort(key=lambda s: (s.partition, s.offset))
        return found[:limit] if limit is not None else found
    finally:
        await consumer.stop()


@dataclass(frozen=True, slots=True)
class Replayed:
    """What happened to one letter on replay: 'sent', 'would send' (dry run) or 'skipped: why'."""

    partition: int
    offset: int
    target: str | None
    outcome: str

    def to_json(self) -> dict[str, Any]:
        return {"partition": self.partition, "offset": self.offset, "target": self.target, "outcome": self.outcome}


async def replay_dead_letters(
    settings: ServiceSettings, letters: Sequence[StoredLetter], *, dry_run: bool = False
) -> list[Replayed]:
    """Send each letter's original bytes and key to its source topic, waiting for every acknowledgement."""
    from gxami_contracts import DEAD_LETTER
    from gxami_runtime.kafka import make_producer

    dead_topic = settings.topic(DEAD_LETTER)
    plan: list[tuple[StoredLetter, bytes | None, str]] = []
    for s in letters:
        if s.letter is None:
            plan.append((s, None, f"skipped: {s.problem}"))
        elif s.letter.source_topic == dead_topic:
            plan.append((s, None, "skipped: its source is the dead-letter topic itself"))
        elif s.letter.original_truncated:
            # Only a prefix was kept (the original was too large for a letter): sending it would be a new poison.
            plan.append((s, None, f"skipped: only a prefix of the {s.letter.original_size}-byte original was kept"))
        else:
            raw = _original(s.letter)
            plan.append((s, raw, "sent") if raw is not None else (s, None, "skipped: original_b64 is not valid base64"))
    out: list[Replayed] = []
    if dry_run or not any(raw is not None for _, raw, _ in plan):
        for s, raw, outcome in plan:
            target = s.letter.source_topic if s.letter is not None else None
            out.append(Replayed(s.partition, s.offset, target, "would send" if raw is not None else outcome))
        return out
    producer = make_producer(settings)
    await producer.start()
    try:
        for s, raw, outcome in plan:
            target = s.letter.source_topic if s.letter is not None else None
            if raw is not None and s.letter is not None:
                key = s.letter.key.encode() if s.letter.key is not None else None
                await producer.send_and_wait(s.letter.source_topic, raw, key=key)
            out.append(Replayed(s.partition, s.offset, target, outcome))
    finally:
        await producer.stop()
    return out


def _settings() -> ServiceSettings:
    from gxami_ingest.settings import IngestSettings  # the only place that reads GXAMI_* variables

    return IngestSettings()


def _filter(
    source: str | None,
    consumer: str | None,
    reason: str | None,
    partition: int | None,
    from_offset: int | None,
    to_offset: int | None,
) -> LetterFilter:
    return LetterFilter(source, consumer, reason, partition, from_offset, to_offset)


def _line(s: StoredLetter) -> str:
    where = f"{s.partition}:{s.offset}"
    when = s.written_at.strftime("%Y-%m-%d %H:%M:%S")
    if s.letter is None:
        return f"{where:<10} {when}  {'?':<40} {s.problem}"
    d = s.letter
    source = f"{d.source_topic}[{d.partition}]@{d.offset}"
    reason = d.reason if len(d.reason) <= 100 else d.reason[:97] + "..."
    return f"{where:<10} {when}  {source:<40} {d.consumer:<10} {reason}"


def _fail(what: str, exc: BaseException) -> typer.Exit:
    typer.echo(f"gxami dlq: {what}: {exc!r}", err=True)
    return typer.Exit(2)


SOURCE = typer.Option(None, "--source", help="only letters from this source topic (physical name)")
CONSUMER = typer.Option(None, "--consumer", help="only letters written by this consumer (e.g. ingest)")
REASON = typer.Option(None, "--reason", help="only letters whose reason contains this text (any case)")
PARTITION = typer.Option(None, "--partition", min=0, help="only this partition of the dead-letter topic")
FROM_OFFSET = typer.Option(None, "--from-offset", min=0, help="dead-letter offsets from (inclusive)")
TO_OFFSET = typer.Option(None, "--to-offset", min=0, help="dead-letter offsets up to (inclusive)")
AS_JSON = typer.Option(False, "--json", help="print JSON instead of a table")
TIMEOUT = typer.Option(30.0, "--timeout", min=1.0, help="give up reading after this many seconds")


@dlq_app.command("list")
def list_command(
    source: str | None = SOURCE,
    consumer: str | None = CONSUMER,
    reason: str | None = REASON,
    partition: int | None = PARTITION,
    from_offset: int | None = FROM_OFFSET,
    to_offset: int | None = TO_OFFSET,
    limit: int | None = typer.Option(None, "--limit", min=1, help="show at most this many"),
    as_json: bool = AS_JSON,
    timeout: float = TIMEOUT,
) -> None:
    """Show dead letters: offset, time, source, consumer, reason."""
    from aiokafka.errors import KafkaError

    from gxami_contracts import DEAD_LETTER

    settings = _settings()
    flt = _filter(source, consumer, reason, partition, from_offset, to_offset)
    try:
        letters = asyncio.run(read_dead_letters(settings, flt, timeout_s=timeout, limit=limit))
    except (KafkaError, OSError, TimeoutError) as exc:
        raise _fail(f"cannot read {settings.topic(DEAD_LETTER)} from {settings.kafka_bootstrap}", exc) from None
    if as_json:
        typer.echo(json.dumps([s.to_json() for s in letters], indent=2))
        return
    typer.echo(f"{'offset':<10} {'time (UTC)':<20} {'source':<40} {'consumer':<10} reason")
    for s in letters:
        typer.echo(_line(s))
    typer.echo(f"{len(letters)} dead letter(s) in {settings.topic(DEAD_LETTER)}")


@dlq_app.command("replay")
def replay_command(
    source: str | None = SOURCE,
    consumer: str | None = CONSUMER,
    reason: str | None = REASON,
    partition: int | None = PARTITION,
    from_offset: int | None = FROM_OFFSET,
    to_offset: int | None = TO_OFFSET,
    replay_all: bool = typer.Option(False, "--all", help="replay every letter (needed when no filter is given)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="show what would be sent, send nothing"),
    as_json: bool = AS_JSON,
    timeout: float = TIMEOUT,
) -> None:
    """Re-publish the original bytes of the matching letters to their source topics."""
    from aiokafka.errors import KafkaError

    flt = _filter(source, consumer, reason, partition, from_offset, to_offset)
    if flt.is_empty() and not replay_all:
        typer.echo("gxami dlq replay: give a filter (--source, --reason, --from-offset, ...) or --all", err=True)
        raise typer.Exit(1)
    settings = _settings()
    try:
        letters = asyncio.run(read_dead_letters(settings, flt, timeout_s=timeout))
        results = asyncio.run(replay_dead_letters(settings, letters, dry_run=dry_run))
    except (KafkaError, OSError, TimeoutError) as exc:
        raise _fail(f"replay through {settings.kafka_bootstrap} failed", exc) from None
    if as_json:
        typer.echo(json.dumps([r.to_json() for r in results], indent=2))
        return
    for r in results:
        typer.echo(f"{r.partition}:{r.offset:<8} -> {r.target or '?':<40} {r.outcome}")
    sent = sum(r.outcome in ("sent", "would send") for r in results)
    verb = "would replay" if dry_run else "replayed"
    typer.echo(f"{verb} {sent} of {len(results)} dead letter(s)")
