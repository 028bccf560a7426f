"""The collector's commands: ``ami.commands`` in, meters controlled, ``ami.command-results`` out.

An edge collector (``GXAMI_SITE``) takes its site's commands (``<ami.commands>.<site>``, the
scheme of the read jobs, see gxami_collector.app) and sends its results through its spool. The
commands have their own consumer group (``<jobs group>.commands``): a slow command never holds a
rebalance of the read jobs, nor the other way round.

Order and exclusion. A command runs under the same per-link lock as the read jobs (so a link is
never used by two sessions at once, and a link's commands and reads run in the order they were
taken) and under a per-meter lock (one command, or read, per meter at a time, even if the meter's
link changed between two messages). Locks are taken meter first, then link, then a session slot,
by reads and commands alike, so they cannot deadlock. These locks are one process's: with several
central replicas, a link's commands (6 partitions, this group) and its reads (12 partitions, the
jobs group) may be assigned to different replicas, which then may talk to one meter at once (a
ciphered DLMS session still holds the meter's lock in the shared counter store). Putting both on
one replica needs equal partition counts and one consumer of both topics with a range assignor.

One command, in order:

1. A command this collector finished before is not run again (gxami_collector.command_records).
2. Not before ``not_before``: held up to ``command_early_wait_s`` (its link waits), else failed.
3. Expired (``expires_at`` passed): ``expired`` is published and the meter is never touched.
4. ``sent`` is published, and expiry checked once more right before the driver touches the meter.
5. The driver runs it and the effect is read back (gxami_collector.command_execution); the final
   result (``succeeded`` or ``failed``, with the read-back) is recorded, then published.

Offsets are committed only after every command of a fetch has published its final result; a
poison message goes to the dead-letter topic with the reason, and the loop goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime, timedelta

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError
from prometheus_client import Counter

from gxami_collector.batches import fitting_batches
from gxami_collector.command_execution import CommandDone, CommandExecutor, utc_now
from gxami_collector.command_records import CommandRecords
from gxami_collector.firmware_images import FirmwareFetchError, FirmwareImages
from gxami_collector.jobs import MeterReader
from gxami_collector.settings import CollectorSettings
from gxami_collector.spool import Outgoing, Spool
from gxami_contracts import CommandKind, CommandOutcome, CommandResult, MeterCommand
from gxami_contracts.messages import Message
from gxami_contracts.topics import COMMAND_RESULTS, COMMANDS, EVENTS, READINGS
from gxami_runtime.kafka import DeadLetters, Decoded, Publisher, commit, decode_batch, ensure_topics, make_consumer
from gxami_runtime.service import StartupError, kafka_startup_error

log = logging.getLogger("gxami.collector.commands")

COMMANDS_DONE = Counter("gxami_collector_commands_total", "Commands finished", ["kind", "outcome", "error_kind"])
COMMAND_DUPLICATES = Counter(
    "gxami_collector_command_duplicates_total", "Commands delivered again after they finished; not run again"
)
PRUNE_EVERY_S = 3600.0


class KeyedLocks:
    """One asyncio lock per key (a meter), kept only while someone holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._locks[key]

    def __len__(self) -> int:
        return len(self._locks)


class CommandService:
    """Takes commands from a consumer and runs each under its meter's and link's locks (see the module doc)."""

    def __init__(
        self,
        settings: CollectorSettings,
        executor: CommandExecutor,
        records: CommandRecords,
        *,
        links: Mapping[str, asyncio.Lock],
        meters: KeyedLocks,
        slots: asyncio.Semaphore,
        spool: Spool | None = None,
    ) -> None:
        self.settings = settings
        self.executor = executor
        self.records = records
        self.spool = spool
        self._links = links
        self._meters = meters
        self._slots = slots
        self._early_wait = timedelta(seconds=settings.command_early_wait_s)

    @property
    def clock(self) -> Callable[[], datetime]:
        return self.executor.clock

    async def run(
        self, consumer: AIOKafkaConsumer, publisher: Publisher, dead: DeadLetters, stop: asyncio.Event
    ) -> None:
        """Fetch, dead-letter poison, run the commands, commit; until ``stop``."""
        pruned_at = 0.0
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            if loop.time() - pruned_at >= PRUNE_EVERY_S:
                pruned_at = loop.time()
                await self.records.prune(self.clock())
            if self.spool is not None and self.spool.full:
                await asyncio.sleep(0.5)  # as the jobs loop: nothing new until the uplink drained some
                continue
            fetched = await consumer.getmany(timeout_ms=300, max_records=self.settings.concurrency)
            if not fetched:
                continue
            commands: list[Decoded[MeterCommand]] = []
            offsets: dict[TopicPartition, int] = {}
            for tp, recs in fetched.items():
                good, bad = decode_batch(MeterCommand, recs)
                for rec, reason in bad:
                    await dead.send(rec, reason)
                commands.extend(good)
                offsets[tp] = recs[-1].offset + 1
            # Tasks start in fetch order, so each link's lock is queued for in that order (FIFO).
            done = await asyncio.gather(*(self.one(d.message, publisher) for d in commands), return_exceptions=True)
            for d, outcome in zip(commands, done, strict=True):
                if isinstance(outcome, BaseException):
                    await self._failed(d, outcome, dead)
            await commit(consumer, offsets)

    async def one(self, command: MeterCommand, publisher: Publisher) -> None:
        """Run one command under its meter's and link's locks, publishing its results."""
        async with self._meters.hold(command.meter_id), self._links[command.link_id], self._slots:
            await self._locked(command, publisher)

    async def _locked(self, command: MeterCommand, publisher: Publisher) -> None:
        run = await self.records.get((command.command_id, command.meter_id, command.attempt))
        if run is not None and run.result is not None:
            COMMAND_DUPLICATES.inc()
            log.info(
                "command delivered again after it finished; not run again",
                extra={"command_id": command.command_id, "meter_id": command.meter_id, "published": run.published},
            )
            if not run.published:  # the crash fell between the record and the broker
                await self._emit(CommandDone(run.result), publisher)
                await self.records.published(command)
            return
        early = (command.not_before - self.clock()) if command.not_before is not None else timedelta(0)
        if early > self._early_wait:
            await self._finish(command, self._too_early(command), publisher)
            return
        if early > timedelta(0):
            await asyncio.sleep(early.total_seconds())
        if self.clock() >= command.expires_at:
            await self._finish(command, CommandDone(self._expired(command)), publisher)
            return
        await self.records.started(command)
        started = self.clock()
        await self._emit(CommandDone(self.executor.result(command, CommandOutcome.SENT, started)), publisher)
        if self.clock() >= command.expires_at:  # publishing "sent" took the last of its time
            await self._finish(command, CommandDone(self._expired(command)), publisher)
            return
        if command.kind is CommandKind.FIRMWARE_UPDATE:
            done = await self._with_progress(command, run is not None, publisher)
        else:
            done = await self.executor.execute(command, interrupted_before=run is not None)
        await self._finish(command, done, publisher)

    async def _with_progress(self, command: MeterCommand, interrupted: bool, publisher: Publisher) -> CommandDone:
        """Run a firmware-update, publishing its progress as ``sent`` results while it runs.

        Progress is published by one task, newest first (a figure superseded while the broker was
        slow is dropped), and is all out before the final result, so the scheduler never sees a
        ``sent`` after the command's end.
        """
        latest: list[CommandResult] = []
        wake = asyncio.Event()
        finished = False

        def heard(result: CommandResult) -> None:
            latest[:] = [result]
            wake.set()

        async def relay() -> None:
            while True:
                await wake.wait()
                wake.clear()
                if latest:
                    result = latest.pop()
                    await self._emit(CommandDone(result), publisher)
                if finished and not latest:
                    return

        sender = asyncio.create_task(relay(), name=f"firmware-progress-{command.meter_id}")
        try:
            done = await self.executor.execute(command, interrupted_before=interrupted, on_progress=heard)
        except BaseException:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            raise
        finished = True
        wake.set()
        await sender
        return done

    def _expired(self, command: MeterCommand) -> CommandResult:
        message = f"meter {command.meter_id}: expired at {command.expires_at.isoformat()}; not executed"
        return self.executor.result(command, CommandOutcome.EXPIRED, error_kind="expired", error_message=message)

    def _too_early(self, command: MeterCommand) -> CommandDone:
        assert command.not_before is not None
        message = (
            f"meter {command.meter_id}: arrived before its not_before {command.not_before.isoformat()}"
            f" by more than {self._early_wait.total_seconds():.0f} s; not executed"
        )
        return CommandDone(
            self.executor.result(command, CommandOutcome.FAILED, error_kind="not-yet", error_message=message)
        )

    async def _finish(self, command: MeterCommand, done: CommandDone, publisher: Publisher) -> None:
        """Record the final result, then publish it (see gxami_collector.command_records for why in that order)."""
        r = done.result
        await self.records.finished(command, r)
        await self._emit(done, publisher)
        await self.records.published(command)
        COMMANDS_DONE.labels(r.kind.value, r.outcome.value, r.error_kind or "").inc()
        log.info(
            "command finished",
            extra={
                "command_id": r.command_id,
                "meter_id": r.meter_id,
                "kind": r.kind.value,
                "outcome": r.outcome.value,
                "state": r.state,
                "error_kind": r.error_kind,
                "error": r.error_message,
            },
        )

    async def _emit(self, done: CommandDone, publisher: Publisher) -> None:
        """Readings and events (of a ``read``) before the result, through the spool when there is one."""
        items: list[tuple[str, str, Message]] = []
        if done.batch is not None:
            items += [(READINGS.name, p.meter_id, p) for p in fitting_batches(done.batch)]
        items += [(EVENTS.name, e.meter_id, e) for e in done.events]
        if self.spool is not None:
            items.append((COMMAND_RESULTS.name, done.result.meter_id, done.result))
            await self.spool.put([Outgoing(t, k.encode(), m.model_dump_json().encode()) for t, k, m in items])
            return
        for topic in (READINGS.name, EVENTS.name):
            batch = [(k, m) for t, k, m in items if t == topic]
            if batch:
                await publisher.send_many(topic, batch)
        await publisher.send(COMMAND_RESULTS.name, done.result.meter_id, done.result)

    async def _failed(self, command: Decoded[MeterCommand], exc: BaseException, dead: DeadLetters) -> None:
        """A command's failure inside the collector is that command's: dead-letter it, unless the broker
        or the disk is away (then nothing is committed and the commands come again)."""
        if not isinstance(exc, Exception) or (isinstance(exc, KafkaError) and exc.retriable):
            raise exc
        if isinstance(exc, sqlite3.Error | OSError):
            raise exc  # the spool's or the record's disk, not the command's
        log.error(
            "command failed inside the collector; dead-lettered",
            extra={
                "meter_id": command.message.meter_id,
                "command_id": command.message.command_id,
                "error": type(exc).__name__,
            },
        )
        await dead.send(command.record, f"collector failed on this command: {type(exc).__name__}")


async def serve_commands(
    settings: CollectorSettings,
    reader: MeterReader,
    publisher: Publisher,
    dead: DeadLetters,
    stop: asyncio.Event,
    *,
    links: Mapping[str, asyncio.Lock],
    meters: KeyedLocks,
    slots: asyncio.Semaphore,
    spool: Spool | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> None:
    """Consume this collector's commands topic until ``stop`` (the collector runs this beside its jobs loop)."""
    s = settings
    # The site's topic is the catalog's commands topic under another physical name (as for read jobs).
    mine = s.model_copy(update={"topic_overrides": {**s.topic_overrides, COMMANDS.name: s.commands_topic()}})
    if s.site is not None:
        try:
            await ensure_topics(mine, [COMMANDS.name])
        except (KafkaConnectionError, OSError) as exc:
            raise kafka_startup_error(s.kafka_bootstrap, exc, s.kafka_security()) from None
        except KafkaError as exc:  # an edge user without the right to create topics: it must exist
            log.warning(
                "cannot create the site's commands topic; it must exist already",
                extra={"topic": s.commands_topic(), "error": type(exc).__name__},
            )
    firmware: FirmwareImages | None = None
    if s.scheduler_api_url:
        try:
            firmware = FirmwareImages.from_settings(s)
        except FirmwareFetchError as exc:  # a URL without a readable token: a setting to fix, not a meter fault
            raise StartupError(str(exc)) from None
    records = await CommandRecords.open(s.command_records_dir, retention=timedelta(days=s.command_records_days))
    try:
        executor = CommandExecutor(
            reader,
            clock_tolerance_s=s.command_clock_tolerance_s,
            collector=s.instance,
            clock=clock,
            firmware=firmware,
            firmware_session_timeout=s.firmware_session_timeout_s,
        )
        service = CommandService(s, executor, records, links=links, meters=meters, slots=slots, spool=spool)
        consumer = make_consumer(mine, s.commands_group(), mine.topic(COMMANDS.name))
        try:
            await consumer.start()
        except (KafkaError, OSError) as exc:
            await consumer.stop()
            raise kafka_startup_error(s.kafka_bootstrap, exc, s.kafka_security()) from None
        log.info("commands consumer started", extra={"topic": s.commands_topic(), "group": s.commands_group()})
        try:
            await service.run(consumer, publisher, dead, stop)
        finally:
            await consumer.stop()
    finally:
        await records.close()
