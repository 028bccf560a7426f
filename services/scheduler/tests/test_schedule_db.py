"""Claiming due meters and applying job results, against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta

import asyncpg

from gxami_contracts import JobResult, JobStatus
from gxami_scheduler.fleet import FleetMeter
from gxami_scheduler.planner import SchedulePolicy, Shard, shard_of
from gxami_scheduler.registry import import_fleet, request_read
from gxami_scheduler.schedule import LOST_JOB_KIND, claim_due, count_due, record_results, release

from .conftest import T0

POLICY = SchedulePolicy(job_timeout_s=270, result_grace_s=30, history_days=2, backoff_base_s=60, backoff_jitter=0)
LATER = T0 + timedelta(minutes=1)  # every imported meter is due by now (first reads spread over 30 s)


def _meter(i: int, **changes: object) -> FleetMeter:
    data: dict[str, object] = {
        "meter_id": f"m{i:03d}",
        "protocol": "dlms",
        "address": f"tcp://10.0.0.{i % 250}:4059",
        "profile": "em-dlms",
        "schedule": "15m",
        "options": {"client": "16"},
    }
    data.update(changes)
    return FleetMeter.model_validate(data)


async def _fleet(db: asyncpg.Connection, n: int, **changes: object) -> list[str]:
    meters = [_meter(i, **changes) for i in range(n)]
    await import_fleet(db, meters, T0)
    return [m.meter_id for m in meters]


async def _schedule(db: asyncpg.Connection, meter_id: str) -> asyncpg.Record:
    row = await db.fetchrow("SELECT * FROM meter_schedule WHERE meter_id = $1", meter_id)
    assert row is not None
    return row


def _result(
    job_id: str, meter_id: str, status: JobStatus = JobStatus.OK, attempt: int = 1, **extra: object
) -> JobResult:
    return JobResult(
        job_id=job_id,
        meter_id=meter_id,
        link_id="l",
        status=status,
        attempt=attempt,
        started_at=LATER,
        finished_at=LATER + timedelta(seconds=2),
        readings_count=5 if status is JobStatus.OK else 0,
        **extra,  # type: ignore[arg-type]  # error_kind / error_message in some tests
    )


async def test_claim_marks_in_flight_and_builds_jobs(db: asyncpg.Connection) -> None:
    ids = await _fleet(db, 3)
    ids_iter = (f"job-{n}" for n in itertools.count())
    planned = await claim_due(db, LATER, POLICY, limit=10, job_id=lambda: next(ids_iter))
    assert sorted(p.job.meter_id for p in planned) == ids
    job = next(p.job for p in planned if p.job.meter_id == "m001")
    assert (job.protocol, job.url, job.link_id, job.profile) == (
        "dlms",
        "tcp://10.0.0.1:4059",
        "tcp://10.0.0.1:4059",
        "em-dlms",
    )
    assert job.options == {"client": "16"}  # the stored purposes are not an option
    assert job.purposes == ["billing", "load-profile"]
    assert job.profile_from == LATER - timedelta(days=2)
    assert job.profile_to == LATER
    assert job.attempt == 1
    row = await _schedule(db, "m001")
    assert row["in_flight_job"] == job.job_id
    assert job.deadline == LATER + timedelta(seconds=270)
    assert row["in_flight_until"] == LATER + timedelta(seconds=300)  # the deadline plus the result grace
    assert row["in_flight_profile_to"] == LATER
    # Claimed meters are not claimed again while their job is in flight.
    assert await claim_due(db, LATER + timedelta(seconds=299), POLICY, limit=10) == []


async def test_claim_respects_due_time_limit_order_and_enabled(db: asyncpg.Connection) -> None:
    await _fleet(db, 5)
    await import_fleet(db, [_meter(9, enabled=False)], T0)
    await db.execute("UPDATE meter_schedule SET next_due_at = $1", T0)  # all due at T0 but:
    await db.execute("UPDATE meter_schedule SET next_due_at = $1 WHERE meter_id = 'm004'", T0 - timedelta(hours=1))
    await db.execute("UPDATE meter_schedule SET next_due_at = $1 WHERE meter_id = 'm003'", T0 + timedelta(hours=1))
    assert await count_due(db, T0) == 4  # m003 is not due, m009 is disabled
    first = await claim_due(db, T0, POLICY, limit=2)
    assert first[0].job.meter_id == "m004"  # the most overdue first
    assert len(first) == 2
    rest = await claim_due(db, T0, POLICY, limit=10)
    assert {p.job.meter_id for p in first + rest} == {"m000", "m001", "m002", "m004"}
    assert await count_due(db, T0) == 0


async def test_skip_locked_gives_concurrent_claimers_disjoint_meters(db: asyncpg.Connection, database_url: str) -> None:
    ids = await _fleet(db, 10)
    other = await asyncpg.connect(database_url, timeout=10)
    try:
        # Claimer A holds its claim uncommitted (an outer transaction around claim_due's savepoint) ...
        held = db.transaction()
        await held.start()
        a = await claim_due(db, LATER, POLICY, limit=6)
        # ... while B claims: it must skip A's locked rows instead of waiting for them or taking them.
        b = await asyncio.wait_for(claim_due(other, LATER, POLICY, limit=10), timeout=5)
        await held.commit()
    finally:
        await other.close()
    got_a = {p.job.meter_id for p in a}
    got_b = {p.job.meter_id for p in b}
    assert len(got_a) == 6
    assert len(got_b) == 4
    assert got_a.isdisjoint(got_b)
    assert got_a | got_b == set(ids)


async def test_many_concurrent_claimers_never_share_a_meter(db: asyncpg.Connection, database_url: str) -> None:
    ids = await _fleet(db, 40)
    conns = [await asyncpg.connect(database_url, timeout=10) for _ in range(4)]
    try:

        async def claimer(conn: asyncpg.Connection) -> list[str]:
            got: list[str] = []
            while batch := await claim_due(conn, LATER, POLICY, limit=3):
                got += [p.job.meter_id for p in batch]
            return got

        claims = await asyncio.wait_for(asyncio.gather(*(claimer(c) for c in conns)), timeout=20)
    finally:
        for c in conns:
            await c.close()
    flat = [m for got in claims for m in got]
    assert sorted(flat) == ids  # every meter exactly once


async def test_shards_claim_their_own_meters_only(db: asyncpg.Connection) -> None:
    ids = await _fleet(db, 30)
    seen: set[str] = set()
    for index in range(3):
        shard = Shard(index, 3)
        assert await count_due(db, LATER, shard) == sum(shard_of(m, 3) == index for m in ids)
        planned = await claim_due(db, LATER, POLICY, limit=100, shard=shard)
        got = {p.job.meter_id for p in planned}
        assert all(shard_of(m, 3) == index for m in got)  # SQL and Python agree on the hash
        seen |= got
    assert seen == set(ids)


async def test_ok_result_moves_schedule_to_next_slot(db: asyncpg.Connection) -> None:
    await _fleet(db, 1)
    (p,) = await claim_due(db, LATER, POLICY, limit=10)
    now = LATER + timedelta(seconds=5)  # 12:01:12 -> next 15-minute slot 12:15:00
    out = await record_results(db, [_result(p.job.job_id, "m000")], now, POLICY)
    assert (out.stored, out.applied, out.stale) == (1, 1, 0)
    row = await _schedule(db, "m000")
    assert row["next_due_at"] == datetime(2025, 3, 1, 12, 15, tzinfo=UTC)
    assert row["last_success_at"] == LATER + timedelta(seconds=2)
    assert row["last_profile_ts"] == LATER  # the in-flight job's profile_to
    assert row["consecutive_failures"] == 0
    assert (row["in_flight_job"], row["in_flight_until"], row["in_flight_profile_to"]) == (None, None, None)
    stored = await db.fetchrow("SELECT * FROM job_results WHERE job_id = $1", p.job.job_id)
    assert stored is not None
    assert (stored["status"], stored["readings_count"]) == ("ok", 5)
    # The next job asks for the load profile from where the last one ended.
    (nxt,) = await claim_due(db, datetime(2025, 3, 1, 12, 15, 1, tzinfo=UTC), POLICY, limit=10)
    assert nxt.job.profile_from == LATER


async def test_error_results_back_off_exponentially(db: asyncpg.Connection) -> None:
    await _fleet(db, 1)
    now = LATER
    delays = []
    for attempt in range(1, 5):
        (p,) = await claim_due(db, now, POLICY, limit=10)
        assert p.job.attempt == attempt
        err = _result(
            p.job.job_id,
            "m000",
            JobStatus.ERROR,
            attempt,
            error_kind="MeterTimeoutError",
            error_message="no answer within 5 s",
        )
        await record_results(db, [err], now, POLICY)
        row = await _schedule(db, "m000")
        assert row["consecutive_failures"] == attempt
        assert (row["last_error_kind"], row["last_error"]) == ("MeterTimeoutError", "no answer within 5 s")
        assert row["last_error_at"] == LATER + timedelta(seconds=2)
        assert row["in_flight_job"] is None
        delays.append((row["next_due_at"] - now).total_seconds())
        now = row["next_due_at"]
    assert delays == [60, 120, 240, 480]
    (p,) = await claim_due(db, now, POLICY, limit=10)
    await record_results(db, [_result(p.job.job_id, "m000", attempt=5)], now, POLICY)
    assert (await _schedule(db, "m000"))["consecutive_failures"] == 0


async def test_redelivered_result_is_a_no_op(db: asyncpg.Connection) -> None:
    await _fleet(db, 1)
    (p,) = await claim_due(db, LATER, POLICY, limit=10)
    result = _result(p.job.job_id, "m000", JobStatus.ERROR, error_kind="x")
    first = await record_results(db, [result, result], LATER, POLICY)  # twice in one batch
    assert (first.stored, first.applied, first.stale) == (1, 1, 1)
    before = dict(await _schedule(db, "m000"))
    again = await record_results(db, [result], LATER + timedelta(minutes=5), POLICY)  # redelivered later
    assert (again.stored, again.applied, again.stale) == (0, 0, 1)
    assert dict(await _schedule(db, "m000")) == before
    assert before["consecutive_failures"] == 1
    assert await db.fetchval("SELECT count(*) FROM job_results") == 1


async def test_stale_job_id_is_ignored(db: asyncpg.Connection) -> None:
    await _fleet(db, 1)
    (old,) = await claim_due(db, LATER, POLICY, limit=10)
    expired = LATER + timedelta(seconds=301)
    (new,) = await claim_due(db, expired, POLICY, limit=10)
    assert new.job.job_id != old.job.job_id
    late = await record_results(db, [_result(old.job.job_id, "m000")], expired, POLICY)
    assert (late.stored, late.applied, late.stale) == (1, 0, 1)
    row = await _schedule(db, "m000")
    assert row["in_flight_job"] == new.job.job_id  # still waiting for the current job
    assert row["last_success_at"] is None
    current = await record_results(db, [_result(new.job.job_id, "m000", attempt=2)], expired, POLICY)
    assert current.applied == 1
    assert (await _schedule(db, "m000"))["in_flight_job"] is None


async def test_result_for_unknown_meter_is_logged_only(db: asyncpg.Connection) -> None:
    out = await record_results(db, [_result("j", "ghost")], LATER, POLICY)
    assert (out.stored, out.applied, out.stale) == (1, 0, 1)


async def test_crash_between_commit_and_publish_is_recovered_after_timeout(db: asyncpg.Connection) -> None:
    await _fleet(db, 2)
    lost = await claim_due(db, LATER, POLICY, limit=10)  # committed ... and then the process died
    assert len(lost) == 2
    assert await claim_due(db, LATER + timedelta(seconds=300), POLICY, limit=10) == []  # until = now: not yet
    recovered = await claim_due(db, LATER + timedelta(seconds=301), POLICY, limit=10)
    assert {p.job.meter_id for p in recovered} == {"m000", "m001"}
    assert all(p.job.attempt == 2 and p.lost_previous for p in recovered)
    assert {p.job.job_id for p in recovered}.isdisjoint(p.job.job_id for p in lost)
    row = await _schedule(db, "m000")
    assert row["last_error_kind"] == LOST_JOB_KIND
    assert row["consecutive_failures"] == 1
    assert "before its deadline" in row["last_error"]
    # Never read successfully: the load-profile range is still the history window.
    assert recovered[0].job.profile_from == LATER + timedelta(seconds=301) - timedelta(days=2)


async def test_release_after_failed_publish_makes_meters_claimable_at_once(db: asyncpg.Connection) -> None:
    await _fleet(db, 3)
    planned = await claim_due(db, LATER, POLICY, limit=10)
    assert await release(db, [p.job.job_id for p in planned]) == 3
    again = await claim_due(db, LATER, POLICY, limit=10)
    assert len(again) == 3
    assert all(p.job.attempt == 1 for p in again)  # a released job is not a lost one


async def test_a_push_meter_is_never_claimed_even_after_an_on_demand_read(db: asyncpg.Connection) -> None:
    await _fleet(db, 2)
    wm = _meter(7, protocol="wmbus", address="tcp://10.0.0.9:2000", connection="push", wmbus_id="12345678")
    await import_fleet(db, [wm], T0)
    assert await request_read(db, wm.meter_id, T0) is not None  # makes a schedule row for it
    assert await count_due(db, LATER) == 2
    planned = await claim_due(db, LATER, POLICY, limit=10)
    assert sorted(p.job.meter_id for p in planned) == ["m000", "m001"]  # the wM-Bus meter's telegrams are its reads
