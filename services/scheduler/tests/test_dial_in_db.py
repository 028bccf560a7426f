"""Dial-in meters' schedule (gxami_scheduler.dialin) against a real PostgreSQL: due work, results, last contact."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import asyncpg

from gxami_contracts import DialInContact, DialInWork, JobResult, JobStatus, Message
from gxami_scheduler.dialin import (
    DialInPlanner,
    dial_in_state,
    plan_due,
    record_contacts,
    record_dial_in_results,
    sync_meters,
)
from gxami_scheduler.fleet import FleetMeter
from gxami_scheduler.planner import SchedulePolicy, Shard
from gxami_scheduler.registry import import_fleet

from .conftest import T0

POLICY = SchedulePolicy(job_timeout_s=300, history_days=1)
WHOLE = Shard(0, 1)


def _meter(i: int, connection: str = "dial-in", **changes: object) -> FleetMeter:
    data: dict[str, object] = {
        "meter_id": f"d{i:03d}",
        "protocol": "dlms",
        "address": "tcp://0.0.0.0:4061",
        "profile": "em-dlms",
        "schedule": "1h",
        "connection": connection,
        "serial": f"d{i:03d}",
        **changes,
    }
    return FleetMeter.model_validate(data)


def _contact(meter_id: str, at: datetime, outcome: str) -> DialInContact:
    return DialInContact.model_validate({"meter_id": meter_id, "at": at, "replica": "r1", "outcome": outcome})


def _result(job_id: str, meter_id: str, status: JobStatus, minutes: float, attempt: int = 1) -> JobResult:
    at = T0 + timedelta(minutes=minutes)
    return JobResult(
        job_id=job_id,
        meter_id=meter_id,
        link_id="x",
        status=status,
        attempt=attempt,
        started_at=at - timedelta(seconds=5),
        finished_at=at,
        readings_count=0,
        error_kind=None if status is JobStatus.OK else "timeout",
        error_message=None if status is JobStatus.OK else "meter d001: no data within 3 s",
    )


async def test_due_work_waits_for_the_call_is_renewed_on_error_and_cleared_on_success(db: asyncpg.Connection) -> None:
    await import_fleet(db, [_meter(1), _meter(2), _meter(3, connection="poll", serial=None)], T0)
    assert await db.fetchval("SELECT count(*) FROM meter_schedule") == 1, "only the polled meter is polled"
    assert await sync_meters(db, T0, WHOLE) == []
    jobs = {j.meter_id: j for j in await plan_due(db, T0, POLICY, limit=10, shard=WHOLE)}
    assert sorted(jobs) == ["d001", "d002"], "dial-in meters are due at once; the polled one is not planned here"
    j1 = jobs["d001"]
    assert j1.profile_to == T0 and j1.profile_from == T0 - timedelta(days=1) and j1.attempt == 1
    assert j1.deadline > T0 + timedelta(hours=1), "it outlives a re-plan"
    # Long after every poll deadline: the meter has not called; nothing is lost, failing or planned again early.
    later = T0 + timedelta(minutes=59)
    assert await plan_due(db, later, POLICY, limit=10, shard=WHOLE) == []
    row = await db.fetchrow("SELECT * FROM dial_in_schedule WHERE meter_id = 'd001'")
    assert row["consecutive_failures"] == 0 and row["last_error_at"] is None and row["pending_job"] == j1.job_id

    # d001 calls and stops mid-session: an error result; the work stays pending as a new job.
    changes = await record_dial_in_results(db, [_result(j1.job_id, "d001", JobStatus.ERROR, 60)], T0, POLICY)
    retry = changes.jobs["d001"]
    assert changes.cleared == [] and changes.applied == 1
    assert retry.job_id != j1.job_id and retry.attempt == 2 and retry.profile_from == j1.profile_from
    state = await dial_in_state(db, "d001")
    assert state is not None and state["last_contact_at"] == (T0 + timedelta(minutes=60)).isoformat()
    assert state["dial_in"]["pending_job"] == retry.job_id and state["dial_in"]["consecutive_failures"] == 1
    # A redelivered (stale) result changes nothing but the contact.
    again = await record_dial_in_results(db, [_result(j1.job_id, "d001", JobStatus.ERROR, 61)], T0, POLICY)
    assert again.jobs == {} and again.cleared == [] and again.applied == 0

    # Its next call succeeds: cleared (a tombstone), next read due an interval on, watermark moved.
    done = await record_dial_in_results(db, [_result(retry.job_id, "d001", JobStatus.OK, 90, 2)], T0, POLICY)
    assert done.cleared == ["d001"] and done.jobs == {}
    row = await db.fetchrow("SELECT * FROM dial_in_schedule WHERE meter_id = 'd001'")
    assert row["pending_job"] is None and row["consecutive_failures"] == 0
    assert row["last_profile_ts"] == T0 and row["next_due_at"] == T0 + timedelta(hours=1) - timedelta(seconds=7)
    assert row["last_contact_at"] == T0 + timedelta(minutes=90)
    # A call with nothing to do still counts as a contact; an older report never moves it back.
    seen = T0 + timedelta(minutes=100)
    await record_contacts(
        db, [_contact("d001", seen, "no-work"), _contact("d001", seen - timedelta(hours=1), "served")]
    )
    assert await db.fetchval("SELECT last_contact_at FROM dial_in_schedule WHERE meter_id = 'd001'") == seen

    # An hour on: d001's next read is due (back-filling from its watermark); d002 never called for a
    # whole interval, so its job is planned anew (its window up to now), not failed.
    an_hour = T0 + timedelta(hours=1)
    renewed = {j.meter_id: j for j in await plan_due(db, an_hour, POLICY, limit=10, shard=WHOLE)}
    assert sorted(renewed) == ["d001", "d002"]
    assert renewed["d001"].profile_from == T0 and renewed["d001"].profile_to == an_hour
    assert renewed["d002"].job_id != jobs["d002"].job_id and renewed["d002"].profile_to == an_hour
    assert renewed["d002"].profile_from == jobs["d002"].profile_from and renewed["d002"].attempt == 1
    failing = await db.fetchval("SELECT count(*) FROM dial_in_schedule WHERE consecutive_failures > 0")
    assert failing == 0

    # d002 is polled from now on: its dial-in row goes.
    await import_fleet(db, [_meter(2, connection="poll", serial=None)], an_hour)
    assert await sync_meters(db, an_hour, WHOLE) == ["d002"]


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Message]] = []
        self.tombstones: list[str] = []

    async def send_many(self, logical_topic: str, items: Sequence[tuple[str, Message]]) -> None:
        self.sent.extend((logical_topic, k, m) for k, m in items)

    async def tombstone(self, logical_topic: str, key: str) -> None:
        self.tombstones.append(key)


async def test_the_planner_publishes_pending_sets_and_tombstones(database_url: str, db: asyncpg.Connection) -> None:
    await import_fleet(db, [_meter(1), _meter(2)], T0)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        sent = Recorder()
        planner = DialInPlanner(pool, sent, POLICY, WHOLE, lambda: T0)
        assert await planner.tick(sync=True) == 2
        work = {k: m for _, k, m in sent.sent}
        assert all(isinstance(m, DialInWork) and len(m.jobs) == 1 for m in work.values())
        j1 = work["d001"].jobs[0]  # type: ignore[attr-defined]
        assert await planner.apply_results([_result(j1.job_id, "d001", JobStatus.OK, 5)]) == 1
        assert sent.tombstones == ["d001"]
        sent.sent.clear()
        await planner.full_sync()  # the whole pending set again: d002 only, the very same job
        assert [(k, m.jobs[0].job_id) for _, k, m in sent.sent] == [("d002", work["d002"].jobs[0].job_id)]  # type: ignore[attr-defined]
        assert [j.model_dump() for j in work["d002"].jobs] == [j.model_dump() for _, _, m in sent.sent for j in m.jobs]  # type: ignore[attr-defined]
    finally:
        await pool.close()
