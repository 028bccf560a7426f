"""Dial-in meters: their due work on ``ami.dial-in-work``, their results, their last contact.

A meter marked ``connection: dial-in`` calls one of the collector replicas when it likes; it
cannot be sent a read job on ``ami.read-jobs`` (that goes to whichever consumer owns the
partition, not to the replica the meter reached). So the scheduler keeps such meters in a
table of their own (``dial_in_schedule``, migration 0014) and:

* when a meter's read is due, plans a job (the same :class:`~gxami_contracts.ReadJob` a polled
  meter gets: purposes, load-profile back-fill from the last stored point) and publishes the
  meter's pending set as one :class:`~gxami_contracts.DialInWork` on the compacted topic
  ``ami.dial-in-work`` (key meter id). Every collector replica keeps the whole topic in memory,
  so the replica the meter calls has it; replicas agree on who serves a job through claims
  (see :mod:`gxami_contracts.dial_in`);
* a pending job waits as long as the meter stays away: it is never "lost", never counted as a
  failure, and gets no backoff. Once an interval has passed without a call it is planned anew
  (a new job id, its load-profile window up to now), so a meter that calls after a week gets its
  whole back-fill in one job. A meter never read yet keeps the history start of its first plan
  (``last_profile_ts`` holds it until the first good read), so a re-plan never narrows its window;
* on the job's result (``ami.job-results``, the results consumer hands them here): success
  clears the pending set (a tombstone) and makes the next read due an interval later; an error
  (the meter stopped answering mid-session) leaves the work pending as a new job, attempt + 1,
  served at the meter's next call. Either way the meter's ``last_contact_at`` is recorded;
* every call of a known dial-in meter, served or not, comes as a
  :class:`~gxami_contracts.DialInContact` on ``ami.dial-in-contacts``: it moves ``last_contact_at``
  too, so a meter that called with nothing due is seen as alive;
* every ``full_sync_s`` (and at start) the whole pending set of the shard is published again, and
  tombstones go out for meters published earlier that have nothing pending, so a publish that
  failed, or a topic that lost data, heals.

A result for a job that is no longer the meter's pending one (a session that overlapped a new
plan) still records the contact; its readings are stored anyway, and a re-read of the same
interval is a no-op in the database (natural key).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

import asyncpg
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from gxami_contracts import DialInContact, DialInWork, JobResult, JobStatus, Message, ReadJob
from gxami_contracts.topics import DIAL_IN_WORK
from gxami_runtime.kafka import DeadLetters, Decoded, consume_batches
from gxami_scheduler.planner import SchedulePolicy, Shard, next_slot, profile_from, shard_sql
from gxami_scheduler.registry import CONTACT_KEY, DbConn, split_options

log = logging.getLogger(__name__)

SYNC_S: Final = 5.0
FULL_SYNC_S: Final = 300.0
RETRY_S: Final = 2.0
DB_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class WorkSender(Protocol):
    """What the dial-in planner needs of the broker (the scheduler's FleetPublisher fits)."""

    async def send_many(self, logical_topic: str, items: Sequence[tuple[str, Message]]) -> None: ...

    async def tombstone(self, logical_topic: str, key: str) -> None: ...


_DIAL_IN = f"(m.options -> '{CONTACT_KEY}' ->> 'connection') = 'dial-in'"


def _shard(count: str, index: str) -> str:
    return f"({count}::int = 1 OR {shard_sql('m.meter_id', count + '::int')} = {index}::int)"


_SHARD = _shard("$2", "$3")

# New dial-in meters are due at once: nothing dials out, so there is no burst to spread.
_ADD = f"""
INSERT INTO dial_in_schedule (meter_id, next_due_at)
SELECT m.meter_id, $1 FROM meters m
 WHERE {_DIAL_IN} AND {_SHARD}
ON CONFLICT (meter_id) DO NOTHING
"""  # noqa: S608 - constants only

_DROP = f"""
DELETE FROM dial_in_schedule d USING meters m
 WHERE m.meter_id = d.meter_id AND NOT coalesce({_DIAL_IN}, false) AND {_shard("$1", "$2")}
RETURNING d.meter_id
"""  # noqa: S608 - constants only

_ROW = """
d.meter_id, d.next_due_at, d.pending_job, d.pending_attempt, d.pending_since, d.pending_profile_to,
d.last_profile_ts, d.consecutive_failures, m.protocol, m.url, m.link_id, m.profile, m.interval_s, m.options
"""

_CLAIM = f"""
SELECT {_ROW}
  FROM dial_in_schedule d JOIN meters m ON m.meter_id = d.meter_id
 WHERE m.enabled AND {_DIAL_IN} AND {_SHARD}
   AND ((d.pending_job IS NULL AND d.next_due_at <= $1)
        OR (d.pending_job IS NOT NULL AND d.pending_since + make_interval(secs => m.interval_s) <= $1))
 ORDER BY d.next_due_at
 LIMIT $4
   FOR UPDATE OF d SKIP LOCKED
"""  # noqa: S608 - constants only

_PENDING = f"""
SELECT {_ROW}
  FROM dial_in_schedule d JOIN meters m ON m.meter_id = d.meter_id
 WHERE m.enabled AND d.pending_job IS NOT NULL AND {_shard("$1", "$2")} AND d.meter_id > $3
 ORDER BY d.meter_id LIMIT $4
"""  # noqa: S608 - constants only

_MARK = """
UPDATE dial_in_schedule d
   SET pending_job = u.job_id, pending_attempt = u.attempt, pending_since = u.since, pending_profile_to = u.since,
       last_profile_ts = coalesce(d.last_profile_ts, u.start)
  FROM unnest($1::text[], $2::text[], $3::int[], $4::timestamptz[], $5::timestamptz[])
       AS u(meter_id, job_id, attempt, since, start)
 WHERE d.meter_id = u.meter_id
"""

_WAITING = f"""
SELECT {_ROW}
  FROM dial_in_schedule d JOIN meters m ON m.meter_id = d.meter_id
 WHERE d.meter_id = ANY($1::text[])
 ORDER BY d.meter_id
   FOR UPDATE OF d
"""  # noqa: S608 - constants only

_CONTACT = """
UPDATE dial_in_schedule d SET last_contact_at = greatest(d.last_contact_at, u.at)
  FROM (SELECT meter_id, max(at) AS at FROM unnest($1::text[], $2::timestamptz[]) AS x(meter_id, at)
         GROUP BY meter_id) AS u  -- one row per meter: an UPDATE applies only one joined row
 WHERE d.meter_id = u.meter_id
"""

_DONE = """
UPDATE dial_in_schedule
   SET pending_job = NULL, pending_attempt = 0, pending_since = NULL, pending_profile_to = NULL,
       next_due_at = $2, consecutive_failures = 0, last_success_at = $3,
       last_profile_ts = coalesce(pending_profile_to, last_profile_ts)
 WHERE meter_id = $1 AND pending_job = $4
"""

_FAILED = """
UPDATE dial_in_schedule
   SET pending_job = $2, pending_attempt = $3, pending_since = $4, pending_profile_to = $4,
       consecutive_failures = consecutive_failures + 1,
       last_error_at = $5, last_error_kind = $6, last_error = $7
 WHERE meter_id = $1 AND pending_job = $8
"""


def new_job_id() -> str:
    return uuid.uuid4().hex


def dial_in_job(
    row: asyncpg.Record | dict[str, Any], job_id: str, attempt: int, issued: datetime, policy: SchedulePolicy
) -> ReadJob:
    """The read job of a dial-in meter issued at ``issued``: its window from the last stored point up to then.

    It is rebuilt from the row alone (job id, attempt, issued instant, watermark), so a republished
    job is the very job published first. Its deadline outlives the re-plan an interval later.
    """
    options, purposes = split_options(row["options"])
    return ReadJob(
        job_id=job_id,
        meter_id=row["meter_id"],
        link_id=row["link_id"],
        protocol=row["protocol"],
        url=row["url"],
        profile=row["profile"],
        options=options,
        purposes=purposes,
        profile_from=profile_from(row["last_profile_ts"], issued, policy),
        profile_to=issued,
        attempt=attempt,
        issued_at=issued,
        deadline=issued + timedelta(seconds=row["interval_s"] + policy.job_timeout_s),
    )


def pending_job(row: asyncpg.Record, policy: SchedulePolicy) -> ReadJob:
    """The job a row holds as pending (it has one)."""
    return dial_in_job(row, row["pending_job"], row["pending_attempt"], row["pending_since"], policy)


@dataclass(frozen=True, slots=True)
class WorkChanges:
    """Pending sets to publish after a transaction: new jobs by meter, and meters with nothing pending."""

    jobs: dict[str, ReadJob]
    cleared: list[str]
    applied: int = 0  # results that answered a meter's pending job


async def sync_meters(conn: DbConn, now: datetime, shard: Shard) -> list[str]:
    """Rows for new dial-in meters of ``shard`` (due now), none for meters no longer dialling in."""
    async with conn.transaction():
        await conn.execute(_ADD, now, shard.count, shard.index)
        gone = await conn.fetch(_DROP, shard.count, shard.index)
    return [r["meter_id"] for r in gone]


async def plan_due(
    conn: DbConn,
    now: datetime,
    policy: SchedulePolicy,
    *,
    limit: int,
    shard: Shard,
    job_id: Callable[[], str] = new_job_id,
) -> list[ReadJob]:
    """Plan a job for each due dial-in meter (and re-plan one pending for a whole interval), commit, return them."""
    async with conn.transaction():
        rows = await conn.fetch(_CLAIM, now, shard.count, shard.index, limit)
        jobs = [
            dial_in_job(r, job_id(), (r["pending_attempt"] or r["consecutive_failures"] + 1), now, policy) for r in rows
        ]
        if jobs:
            await conn.execute(
                _MARK,
                [j.meter_id for j in jobs],
                [j.job_id for j in jobs],
                [j.attempt for j in jobs],
                [now] * len(jobs),
                [j.profile_from for j in jobs],
            )
    return jobs


async def pending_work(conn: DbConn, policy: SchedulePolicy, shard: Shard, *, page: int = 5000) -> list[ReadJob]:
    """Every pending job of ``shard``, one per meter."""
    out: list[ReadJob] = []
    after = ""
    while True:
        rows = await conn.fetch(_PENDING, shard.count, shard.index, after, page)
        out.extend(pending_job(r, policy) for r in rows)
        if len(rows) < page:
            return out
        after = rows[-1]["meter_id"]


async def record_dial_in_results(
    conn: DbConn,
    results: Sequence[JobResult],
    now: datetime,
    policy: SchedulePolicy,
    *,
    job_id: Callable[[], str] = new_job_id,
) -> WorkChanges:
    """Apply the results of dial-in meters (others are ignored) in one transaction; what to publish after."""
    jobs: dict[str, ReadJob] = {}
    cleared: list[str] = []
    applied = 0
    async with conn.transaction():
        rows = {r["meter_id"]: dict(r) for r in await conn.fetch(_WAITING, sorted({r.meter_id for r in results}))}
        if not rows:
            return WorkChanges({}, [])
        contacts = [r for r in results if r.meter_id in rows]
        await conn.execute(_CONTACT, [r.meter_id for r in contacts], [r.finished_at for r in contacts])
        for result in contacts:
            row = rows[result.meter_id]
            if row["pending_job"] is None or row["pending_job"] != result.job_id:
                continue  # redelivered, or a session that overlapped a new plan
            applied += 1
            if result.status is JobStatus.OK:
                due = next_slot(now, row["interval_s"])
                await conn.execute(_DONE, result.meter_id, due, result.finished_at, result.job_id)
                cleared.append(result.meter_id)
                jobs.pop(result.meter_id, None)
            else:
                # The meter stopped answering (or refused): the work stays pending, as a new job.
                retry = dial_in_job(row, job_id(), row["pending_attempt"] + 1, now, policy)
                await conn.execute(
                    _FAILED,
                    result.meter_id,
                    retry.job_id,
                    retry.attempt,
                    now,
                    result.finished_at,
                    result.error_kind or "unknown",
                    result.error_message,
                    result.job_id,
                )
                jobs[result.meter_id] = retry
            # Later results of the same meter in this batch see the row as it is now.
            rows[result.meter_id] = {**row, **_row_after(jobs.get(result.meter_id))}
    return WorkChanges(jobs, [m for m in cleared if m not in jobs], applied)


def _row_after(retry: ReadJob | None) -> dict[str, Any]:
    if retry is None:
        return {"pending_job": None, "pending_attempt": 0}
    return {"pending_job": retry.job_id, "pending_attempt": retry.attempt, "pending_since": retry.issued_at}


async def dial_in_state(conn: DbConn, meter_id: str) -> dict[str, Any] | None:
    """What GET /meters/{id} shows of a dial-in meter: last contact and its pending job, or None."""
    row = await conn.fetchrow(
        "SELECT next_due_at, pending_job, pending_attempt, pending_since, last_contact_at, last_success_at,"
        " last_error_at, last_error_kind, consecutive_failures FROM dial_in_schedule WHERE meter_id = $1",
        meter_id,
    )
    if row is None:
        return None
    out = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}
    return {"last_contact_at": out.pop("last_contact_at"), "dial_in": out}


async def record_contacts(conn: DbConn, contacts: Sequence[DialInContact]) -> None:
    """Move the last contact of each meter that called (idempotent: the latest time wins)."""
    await conn.execute(_CONTACT, [c.meter_id for c in contacts], [c.at for c in contacts])


async def _rewind(consumer: AIOKafkaConsumer) -> None:
    for tp in consumer.assignment():
        committed = await consumer.committed(tp)
        if committed is None:
            await consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, committed)


class DialInPlanner:
    """Keeps ``ami.dial-in-work`` equal to the pending jobs of this shard's dial-in meters."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        sender: WorkSender,
        policy: SchedulePolicy,
        shard: Shard,
        clock: Callable[[], datetime],
        *,
        tick_s: float = 1.0,
        limit: int = 500,
        sync_s: float = SYNC_S,
        full_sync_s: float = FULL_SYNC_S,
    ) -> None:
        self._pool = pool
        self._sender = sender
        self._policy = policy
        self._shard = shard
        self._clock = clock
        self.tick_s = tick_s
        self.limit = limit
        self.sync_s = sync_s
        self.full_sync_s = full_sync_s
        self._published: set[str] = set()  # meters whose last publish was a pending set
        self.applied = 0

    async def _publish(self, jobs: Sequence[ReadJob], cleared: Sequence[str]) -> None:
        now = self._clock()
        if jobs:
            items = [(j.meter_id, DialInWork(meter_id=j.meter_id, jobs=[j], updated_at=now)) for j in jobs]
            await self._sender.send_many(DIAL_IN_WORK.name, items)
            self._published.update(j.meter_id for j in jobs)
        for meter_id in cleared:
            await self._sender.tombstone(DIAL_IN_WORK.name, meter_id)
            self._published.discard(meter_id)

    async def full_sync(self) -> None:
        """Publish every pending set again; tombstone meters published before that have none now."""
        async with self._pool.acquire() as conn:
            jobs = await pending_work(conn, self._policy, self._shard)
        stale = self._published - {j.meter_id for j in jobs}
        await self._publish(jobs, sorted(stale))

    async def tick(self, *, sync: bool = False) -> int:
        """Add and drop dial-in meters (when ``sync``), plan what is due, publish it; the jobs planned."""
        now = self._clock()
        async with self._pool.acquire() as conn:
            gone = await sync_meters(conn, now, self._shard) if sync else []
            jobs = await plan_due(conn, now, self._policy, limit=self.limit, shard=self._shard)
        await self._publish(jobs, [m for m in gone if m in self._published])
        return len(jobs)

    async def apply_results(self, results: Sequence[JobResult]) -> int:
        """Apply a batch of job results to dial-in meters and publish their new pending sets; how many applied."""
        async with self._pool.acquire() as conn:
            changes = await record_dial_in_results(conn, results, self._clock(), self._policy)
        await self._publish(list(changes.jobs.values()), changes.cleared)
        self.applied += changes.applied
        return changes.applied

    async def handle_contacts(self, batch: list[Decoded[DialInContact]]) -> None:
        async with self._pool.acquire() as conn:
            await record_contacts(conn, [d.message for d in batch])

    async def run_contacts(self, consumer: AIOKafkaConsumer, dead_letters: DeadLetters, stop: asyncio.Event) -> None:
        """Consume ``ami.dial-in-contacts`` until ``stop`` (the consumer is started here); failures re-read."""
        starting = asyncio.create_task(consumer.start())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait([starting, stopping], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, KafkaError, OSError):
                await starting
            return
        starting.result()
        rewind = False
        while not stop.is_set():
            try:
                if rewind:
                    await _rewind(consumer)
                    rewind = False
                await consume_batches(consumer, DialInContact, self.handle_contacts, dead_letters, stop=stop.is_set)
            except (*DB_ERRORS, KafkaError) as exc:
                rewind = True
                log.warning("recording dial-in contacts failed; re-reading", extra={"error": type(exc).__name__})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=RETRY_S)

    async def run(self, stop: asyncio.Event) -> None:
        """Plan every ``tick_s`` until ``stop``; database or broker trouble is logged and retried."""
        loop = asyncio.get_running_loop()
        last_sync = last_full = -1e18
        while not stop.is_set():
            started = loop.time()
            try:
                if started - last_full >= self.full_sync_s:
                    await self.tick(sync=True)
                    await self.full_sync()
                    last_full = last_sync = started
                else:
                    sync = started - last_sync >= self.sync_s
                    await self.tick(sync=sync)
                    if sync:
                        last_sync = started
            except (*DB_ERRORS, KafkaError) as exc:
                log.warning("dial-in planning failed", extra={"error": f"{type(exc).__name__}: {exc}"})
                last_full = -1e18  # publish the whole pending set once things work again
            wait = max(0.0, self.tick_s - (loop.time() - started))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)
