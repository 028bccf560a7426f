"""Named schedules and segment admission against a real PostgreSQL: priorities, limits, one job per link."""

from __future__ import annotations

import itertools
from datetime import timedelta

import asyncpg

from gxami_contracts import JobResult, JobStatus
from gxami_scheduler.fleet import parse_fleet
from gxami_scheduler.planner import SchedulePolicy
from gxami_scheduler.registry import import_fleet, request_read
from gxami_scheduler.schedule import claim_due, record_results
from gxami_scheduler.schedules import MeterPlan

from .conftest import T0

POLICY = SchedulePolicy(job_timeout_s=270, result_grace_s=30, history_days=2, backoff_base_s=60, backoff_jitter=0)

FLEET = """
schedules:
  hourly-billing: {cron: "0 * * * *", timezone: Europe/Berlin, purposes: [billing], priority: billing}
  lp: {interval: 15m, purposes: [load-profile]}
segments:
  cell-7: {kind: cell, max_sessions: 2}
  apn-slow: {kind: apn, max_sessions: 10, max_new_per_s: 1}
groups:
  billing: {schedules: [hourly-billing]}
  lp: {schedules: [lp]}
  cell: {segment: cell-7}
  slow: {segment: apn-slow}
meters:
"""


def _row(meter_id: str, host: str, group: str, port: int = 4059) -> str:
    return (
        f"  - {{meter_id: {meter_id}, protocol: dlms, address: 'tcp://{host}:{port}', profile: p,"
        f" schedule: 15m, group: {group}}}\n"
    )


def _ok(job_id: str, meter_id: str, at: object) -> JobResult:
    return JobResult(
        job_id=job_id,
        meter_id=meter_id,
        link_id="l",
        status=JobStatus.OK,
        attempt=1,
        started_at=at,  # type: ignore[arg-type]  # a datetime
        finished_at=at,  # type: ignore[arg-type]
        readings_count=1,
    )


async def test_priorities_segments_and_links(db: asyncpg.Connection) -> None:
    text = FLEET
    text += _row("b1", "10.0.1.1", "billing") + _row("i1", "10.0.1.2", "lp") + _row("i2", "10.0.1.3", "lp")
    # cell-7: four meters on three links (c3 and c4 share a gateway), at most two sessions at once.
    text += _row("c1", "10.0.2.1", "cell") + _row("c2", "10.0.2.2", "cell")
    text += _row("c3", "10.0.2.3", "cell") + _row("c4", "10.0.2.3", "cell")
    text += _row("s1", "10.0.3.1", "slow") + _row("s2", "10.0.3.2", "slow") + _row("s3", "10.0.3.3", "slow")
    meters = parse_fleet("fleet.yaml", text)
    await import_fleet(db, meters, T0)
    ids = (f"job-{n}" for n in itertools.count())

    # The first runs of planned meters follow their schedules, in their class.
    rows = {r["meter_id"]: r for r in await db.fetch("SELECT * FROM meter_schedule")}
    b1_plan = MeterPlan(next(m for m in meters if m.meter_id == "b1").plan)
    assert rows["b1"]["next_due_at"] == b1_plan.next_run("b1", T0).at
    assert (rows["b1"]["priority"], rows["b1"]["due_purposes"]) == (30, ["billing"])
    assert (rows["i1"]["priority"], rows["i1"]["due_purposes"]) == (20, ["load-profile"])

    # Everything is due an hour on; with one slot the billing run takes it, then an on-demand read
    # pre-empts both the remaining interval reads.
    later = T0 + timedelta(hours=1)
    await request_read(db, "i2", later)
    first = await claim_due(db, later, POLICY, limit=1, job_id=lambda: next(ids))
    assert [p.job.meter_id for p in first] == ["i2"]
    second = await claim_due(db, later, POLICY, limit=1, job_id=lambda: next(ids))
    assert [p.job.meter_id for p in second] == ["b1"]
    assert second[0].job.purposes == ["billing"]

    # The rest: cell-7 admits two sessions, never two jobs for the c3/c4 gateway; apn-slow's bucket
    # holds one new connection; meters in no segment all go.
    rest = await claim_due(db, later, POLICY, limit=100, job_id=lambda: next(ids))
    got = {p.job.meter_id for p in rest}
    assert "i1" in got
    cell = got & {"c1", "c2", "c3", "c4"}
    assert len(cell) == 2
    assert not {"c3", "c4"} <= cell
    assert len(got & {"s1", "s2", "s3"}) == 1
    again = await claim_due(db, later, POLICY, limit=100, job_id=lambda: next(ids))
    assert again == []  # limits bind: nothing more until a job ends or a token refills

    # One second later the bucket has one more token; a finished cell job frees one session.
    one_s = later + timedelta(seconds=1)
    cell_jobs = [p for p in rest if p.job.meter_id in cell]
    applied = await record_results(db, [_ok(cell_jobs[0].job.job_id, cell_jobs[0].job.meter_id, one_s)], one_s, POLICY)
    assert applied.applied == 1
    more = await claim_due(db, one_s, POLICY, limit=100, job_id=lambda: next(ids))
    more_ids = {p.job.meter_id for p in more}
    assert len(more_ids & {"s1", "s2", "s3"}) == 1
    assert len(more_ids & {"c1", "c2", "c3", "c4"}) == 1
    in_flight = await db.fetch(
        "SELECT m.link_id, count(*) AS n FROM meter_schedule s JOIN meters m USING (meter_id)"
        " WHERE s.in_flight_job IS NOT NULL GROUP BY 1"
    )
    assert all(r["n"] == 1 for r in in_flight)  # never two jobs out for one link

    # A planned meter's good result moves it to its next run, in its class again.
    b1_job = second[0].job
    await record_results(db, [_ok(b1_job.job_id, "b1", one_s)], one_s, POLICY)
    row = await db.fetchrow("SELECT * FROM meter_schedule WHERE meter_id = 'b1'")
    assert row is not None
    assert row["next_due_at"] == b1_plan.next_run("b1", one_s).at
    assert (row["priority"], row["due_purposes"]) == (30, ["billing"])
    # Importing the file again (b1 changed: a shorter plain interval) keeps the planned run.
    changed = [m.model_copy(update={"schedule": 60}) if m.meter_id == "b1" else m for m in meters]
    await import_fleet(db, changed, one_s)
    assert await db.fetchval("SELECT next_due_at FROM meter_schedule WHERE meter_id = 'b1'") == row["next_due_at"]
    i2_job = first[0].job
    await record_results(db, [_ok(i2_job.job_id, "i2", one_s)], one_s, POLICY)
    row = await db.fetchrow("SELECT priority FROM meter_schedule WHERE meter_id = 'i2'")
    assert row is not None and row["priority"] == 20  # the on-demand class lasts one run
