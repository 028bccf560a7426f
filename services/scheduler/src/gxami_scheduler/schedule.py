"""Schedule state in the database: claiming due meters, recording job results.

Claims use ``FOR UPDATE SKIP LOCKED`` so any number of replicas (or ticks) claim disjoint
meters; a claim is committed *before* its jobs are published, and a job that never comes back
(crash between commit and publish, lost collector) is claimed again once ``in_flight_until``
has passed. Results are applied only when their job id is the meter's current in-flight job,
so redelivered and late results change nothing but the ``job_results`` log.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from gxami_contracts import JobResult, JobStatus
from gxami_scheduler.planner import (
    NEVER_POLLED,
    DueMeter,
    PlannedRead,
    SchedulePolicy,
    ScheduleUpdate,
    Shard,
    after_failure,
    after_success,
    plan_read,
    shard_sql,
)
from gxami_scheduler.registry import CONTACT_KEY, DbConn, plan_of, split_options
from gxami_scheduler.schedules import PlannedRun, PriorityClass
from gxami_scheduler.segments import admit_by_segment

LOST_JOB_KIND = "lost"
WHOLE_FLEET = Shard(0, 1)

_NEVER_POLLED_SQL = ", ".join(f"'{c}'" for c in sorted(NEVER_POLLED))  # constants only: see NEVER_POLLED
_DUE = f"""
      s.next_due_at <= $1
  AND (s.in_flight_job IS NULL OR s.in_flight_until < $1)
  AND m.enabled
  AND ($2::int = 1 OR {shard_sql("s.meter_id", "$2::int")} = $3::int)
  AND coalesce(m.options -> '{CONTACT_KEY}' ->> 'connection', 'poll') NOT IN ({_NEVER_POLLED_SQL})
"""

_CLAIM = f"""
SELECT s.meter_id, m.protocol, m.url, m.link_id, m.profile, m.interval_s, m.options, m.site,
       s.last_profile_ts, s.consecutive_failures, s.in_flight_job, s.due_purposes
  FROM meter_schedule s JOIN meters m ON m.meter_id = s.meter_id
 WHERE {_DUE}
 ORDER BY s.priority DESC, s.next_due_at
 LIMIT $4
   FOR UPDATE OF s SKIP LOCKED
"""  # noqa: S608 - composed from constants only

_COUNT_DUE = f"SELECT count(*) FROM meter_schedule s JOIN meters m ON m.meter_id = s.meter_id WHERE {_DUE}"  # noqa: S608 - constants only

_MARK = """
UPDATE meter_schedule s
   SET in_flight_job = u.job_id, in_flight_until = u.until, in_flight_profile_to = $1,
       attempt = u.attempt, consecutive_failures = u.failures,
       last_error_at = CASE WHEN u.lost THEN $1 ELSE s.last_error_at END,
       last_error_kind = CASE WHEN u.lost THEN $8 ELSE s.last_error_kind END,
       last_error = CASE WHEN u.lost THEN 'no result for job ' || s.in_flight_job || ' before its deadline'
                         ELSE s.last_error END
  FROM unnest($2::text[], $3::text[], $4::timestamptz[], $5::int[], $6::int[], $7::bool[])
       AS u(meter_id, job_id, until, attempt, failures, lost)
 WHERE s.meter_id = u.meter_id
"""


def new_job_id() -> str:
    return uuid.uuid4().hex


async def claim_due(
    conn: DbConn,
    now: datetime,
    policy: SchedulePolicy,
    *,
    limit: int,
    shard: Shard = WHOLE_FLEET,
    job_id: Callable[[], str] = new_job_id,
) -> list[PlannedRead]:
    """Claim up to ``limit`` due meters of ``shard``, mark them in flight, commit; return their jobs."""
    async with conn.transaction():
        rows = await conn.fetch(_CLAIM, now, shard.count, shard.index, limit)
        rows = await admit_by_segment(conn, rows, now)
        planned = [plan_read(_due_meter(r), now, job_id(), policy) for r in rows]
        if planned:
            await conn.execute(
                _MARK,
                now,
                [p.job.meter_id for p in planned],
                [p.job.job_id for p in planned],
                [p.in_flight_until for p in planned],
                [p.job.attempt for p in planned],
                [p.failures for p in planned],
                [p.lost_previous for p in planned],
                LOST_JOB_KIND,
            )
    return planned


def _due_meter(row: asyncpg.Record) -> DueMeter:
    options, purposes = split_options(row["options"])
    if row["due_purposes"]:
        purposes = list(row["due_purposes"])  # the run's named schedules say what to read
    return DueMeter(
        meter_id=row["meter_id"],
        protocol=row["protocol"],
        url=row["url"],
        link_id=row["link_id"],
        profile=row["profile"],
        interval_s=row["interval_s"],
        options=options,
        purposes=purposes,
        last_profile_ts=row["last_profile_ts"],
        consecutive_failures=row["consecutive_failures"],
        expired_job=row["in_flight_job"],
        site=row["site"],
    )


async def release(conn: DbConn, job_ids: Sequence[str]) -> int:
    """Take jobs that could not be published out of flight so the next tick claims them again."""
    status = await conn.execute(
        "UPDATE meter_schedule SET in_flight_job = NULL, in_flight_until = NULL, in_flight_profile_to = NULL"
        " WHERE in_flight_job = ANY($1::text[])",
        list(job_ids),
    )
    return int(status.rsplit(" ", 1)[-1])


async def count_due(conn: DbConn, now: datetime, shard: Shard = WHOLE_FLEET) -> int:
    """Meters of ``shard`` that are due and not in flight."""
    return int(await conn.fetchval(_COUNT_DUE, now, shard.count, shard.index))


@dataclass(frozen=True, slots=True)
class ResultsApplied:
    """What a batch of job results did."""

    stored: int  # new rows in job_results (a redelivered result adds none)
    applied: int  # results that were the meter's current job and moved its schedule
    stale: int  # results for a job the meter no longer waits for


_STORE_RESULTS = """
INSERT INTO job_results (job_id, attempt, meter_id, status, started_at, finished_at, readings_count,
                         error_kind, error_message, meter_time, collector_time, clock_drift_s)
SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::timestamptz[], $6::timestamptz[],
                     $7::int[], $8::text[], $9::text[], $10::timestamptz[], $11::timestamptz[], $12::float8[])
ON CONFLICT (job_id, attempt) DO NOTHING
"""

_WAITING = """
SELECT s.meter_id, s.in_flight_job, s.consecutive_failures, m.interval_s, m.options
  FROM meter_schedule s JOIN meters m ON m.meter_id = s.meter_id
 WHERE s.meter_id = ANY($1::text[]) AND s.in_flight_job IS NOT NULL
 ORDER BY s.meter_id
   FOR UPDATE OF s
"""

_APPLY = """
UPDATE meter_schedule s
   SET next_due_at = u.next_due_at,
       consecutive_failures = u.failures,
       last_success_at = CASE WHEN u.ok THEN u.finished_at ELSE s.last_success_at END,
       last_profile_ts = CASE WHEN u.ok THEN coalesce(s.in_flight_profile_to, s.last_profile_ts)
                              ELSE s.last_profile_ts END,
       last_error_at = CASE WHEN u.ok THEN s.last_error_at ELSE u.finished_at END,
       last_error_kind = CASE WHEN u.ok THEN s.last_error_kind ELSE u.error_kind END,
       last_error = CASE WHEN u.ok THEN s.last_error ELSE u.error_message END,
       in_flight_job = NULL, in_flight_until = NULL, in_flight_profile_to = NULL,
       priority = CASE WHEN u.ok THEN u.priority ELSE s.priority END,
       due_purposes = CASE WHEN u.ok THEN string_to_array(nullif(u.purposes, ''), ',') ELSE s.due_purposes END
  FROM unnest($1::text[], $2::text[], $3::bool[], $4::timestamptz[], $5::int[], $6::timestamptz[],
              $7::text[], $8::text[], $9::int[], $10::text[])
       AS u(meter_id, job_id, ok, next_due_at, failures, finished_at, error_kind, error_message, priority, purposes)
 WHERE s.meter_id = u.meter_id AND s.in_flight_job = u.job_id
"""


def clock_drift_s(result: JobResult) -> float | None:
    """How far the meter's clock was ahead of the collector's in this job (negative: behind); None if unknown."""
    if result.meter_time is None or result.collector_time is None:
        return None
    return (result.meter_time - result.collector_time).total_seconds()


async def record_results(
    conn: DbConn, results: Sequence[JobResult], now: datetime, policy: SchedulePolicy
) -> ResultsApplied:
    """Log every result and move the schedule of meters whose current job they answer, in one transaction."""
    async with conn.transaction():
        status = await conn.execute(
            _STORE_RESULTS,
            [r.job_id for r in results],
            [r.attempt for r in results],
            [r.meter_id for r in results],
            [r.status.value for r in results],
            [r.started_at for r in results],
            [r.finished_at for r in results],
            [r.readings_count for r in results],
            [r.error_kind for r in results],
            [r.error_message for r in results],
            [r.meter_time for r in results],
            [r.collector_time for r in results],
            [clock_drift_s(r) for r in results],
        )
        stored = int(status.rsplit(" ", 1)[-1])
        waiting = {row["meter_id"]: row for row in await conn.fetch(_WAITING, sorted({r.meter_id for r in results}))}
        matched: list[tuple[JobResult, ScheduleUpdate, PlannedRun | None]] = []
        for result in results:
            row = waiting.get(result.meter_id)
            if row is None or row["in_flight_job"] != result.job_id:
                continue
            del waiting[result.meter_id]  # a duplicate of this result later in the batch is stale
            run: PlannedRun | None = None
            if result.status is JobStatus.OK:
                plan, _ = plan_of(row["options"])
                if plan is not None:
                    run = plan.next_run(result.meter_id, now)
                    update = ScheduleUpdate(result.meter_id, True, run.at, 0)
                else:
                    update = after_success(result.meter_id, row["interval_s"], now)
            else:
                update = after_failure(result.meter_id, row["consecutive_failures"], now, policy)
            matched.append((result, update, run))
        if matched:
            await conn.execute(
                _APPLY,
                [u.meter_id for _, u, _ in matched],
                [r.job_id for r, _, _ in matched],
                [u.ok for _, u, _ in matched],
                [u.next_due_at for _, u, _ in matched],
                [u.consecutive_failures for _, u, _ in matched],
                [r.finished_at for r, _, _ in matched],
                [(r.error_kind or "unknown") if not u.ok else None for r, u, _ in matched],
                [r.error_message if not u.ok else None for r, u, _ in matched],
                [int(run.priority if run else PriorityClass.INTERVAL) for _, _, run in matched],
                [",".join(run.purposes) if run else "" for _, _, run in matched],
            )
    return ResultsApplied(stored=stored, applied=len(matched), stale=len(results) - len(matched))
