"""Named schedules: DST in the meter's zone, stable spread offsets, windows, priorities, fleet-file parsing."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from gxami_scheduler.fleet import FleetFileError, parse_fleet
from gxami_scheduler.schedules import MeterPlan, NamedSchedule, PriorityClass
from gxami_scheduler.segments import bucket_after

BERLIN = ZoneInfo("Europe/Berlin")
BILLING = NamedSchedule.model_validate(
    {"cron": "0 0 * * *", "timezone": "Europe/Berlin", "purposes": ["billing"], "priority": "billing"}
)


@pytest.mark.parametrize(
    ("start", "gaps_h"),
    [
        (datetime(2026, 3, 27, 12, tzinfo=UTC), [24, 23, 24]),  # 29 March: 02:00 -> 03:00
        (datetime(2026, 10, 23, 12, tzinfo=UTC), [24, 25, 24]),  # 25 October: 03:00 -> 02:00
    ],
)
def test_local_midnight_billing_across_dst(start: datetime, gaps_h: list[int]) -> None:
    runs = []
    at = start
    for _ in range(4):
        at = BILLING.next_run("billing", "m1", at)
        runs.append(at)
    assert all(r.astimezone(BERLIN).time().hour == 0 and r.astimezone(BERLIN).minute == 0 for r in runs)
    assert [(b - a) / timedelta(hours=1) for a, b in pairwise(runs)] == gaps_h


def test_interval_offsets_are_stable_and_spread() -> None:
    lp = NamedSchedule.model_validate({"interval": "15m", "purposes": ["load-profile"]})
    now = datetime(2026, 1, 5, 8, 3, tzinfo=UTC)
    first = {f"m{i}": lp.next_run("lp", f"m{i}", now) for i in range(50)}
    # Again, as another replica or after a restart would compute it: the same instants.
    fresh = NamedSchedule.model_validate({"interval": 900, "purposes": ["load-profile"]})
    assert {m: fresh.next_run("lp", m, now) for m in first} == first
    offsets = {(t.timestamp() % 900) for t in first.values()}
    assert len(offsets) > 40  # spread over the interval, not one burst at :00
    for t in first.values():
        assert now < t <= now + timedelta(minutes=15)
        assert lp.next_run("lp", "m1", t) - t == timedelta(minutes=15) or t != first["m1"]
    # The offset depends on the schedule name too: two schedules of one meter do not collide by design.
    assert lp.next_run("other", "m1", now) != first["m1"]


def test_window_keeps_runs_inside_local_hours_across_dst() -> None:
    backfill = NamedSchedule.model_validate(
        {
            "interval": "1h",
            "timezone": "Europe/Berlin",
            "purposes": ["load-profile"],
            "window": "01:00-05:00",
            "priority": "back-fill",
        }
    )
    plan = MeterPlan({"backfill": backfill})
    start = datetime(2026, 3, 27, 12, tzinfo=UTC)
    runs = list(plan.runs("m7", start, start + timedelta(days=4)))
    assert runs
    for run in runs:
        local = run.at.astimezone(BERLIN)
        assert 1 <= local.hour < 5, local
        assert run.priority is PriorityClass.BACKFILL
    per_night: dict[object, int] = {}
    for run in runs:
        per_night[run.at.astimezone(BERLIN).date()] = per_night.get(run.at.astimezone(BERLIN).date(), 0) + 1
    # Four local hours a night, except the spring-forward night (02:00-03:00 does not exist): three.
    assert per_night[date(2026, 3, 29)] == 3
    assert set(per_night.values()) == {3, 4}


def test_plan_merges_runs_at_one_instant_with_the_higher_priority() -> None:
    hourly = NamedSchedule.model_validate(
        {"cron": "0 * * * *", "timezone": "Europe/Berlin", "purposes": "load-profile"}
    )
    plan = MeterPlan({"billing": BILLING, "hourly": hourly})
    run = plan.next_run("m1", datetime(2026, 6, 1, 21, 30, tzinfo=UTC))  # 23:30 local
    assert run.at == datetime(2026, 6, 1, 22, 0, tzinfo=UTC)
    assert run.schedules == ("billing", "hourly")
    assert set(run.purposes) == {"billing", "load-profile"}
    assert run.priority is PriorityClass.BILLING
    nxt = plan.next_run("m1", run.at)
    assert (nxt.schedules, nxt.priority) == (("hourly",), PriorityClass.INTERVAL)


def test_priority_order_and_refusals() -> None:
    order = sorted(PriorityClass, reverse=True)
    assert [p.label for p in order] == ["command", "on-demand", "billing", "interval", "back-fill"]
    with pytest.raises(ValueError, match="exactly one of interval"):
        NamedSchedule.model_validate({"interval": "15m", "cron": "0 0 * * *", "purposes": ["billing"]})
    with pytest.raises(ValueError, match="cron expression"):
        NamedSchedule.model_validate({"cron": "61 * * * *", "purposes": ["billing"]})
    with pytest.raises(ValueError, match="unknown time zone"):
        NamedSchedule.model_validate({"cron": "0 0 * * *", "timezone": "Mars/Olympus", "purposes": ["billing"]})
    with pytest.raises(ValueError, match="not command"):
        NamedSchedule.model_validate({"interval": "1h", "purposes": ["billing"], "priority": "command"})


def test_bucket_refills_at_its_rate_up_to_one_second() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    assert bucket_after(0, t0, t0 + timedelta(milliseconds=500), 2) == pytest.approx(1.0)
    assert bucket_after(0, t0, t0 + timedelta(seconds=10), 2) == 2.0
    assert bucket_after(0, t0, t0 + timedelta(seconds=10), 0) == float("inf")


FLEET = """
schedules:
  daily-billing: {cron: "0 0 * * *", timezone: Europe/Berlin, purposes: [billing], priority: billing}
  lp-15m: {interval: 15m, purposes: [load-profile]}
  night-backfill: {interval: 1h, timezone: Europe/Berlin, purposes: [load-profile], window: "01:00-05:00",
                   priority: back-fill}
segments:
  apn-north: {kind: apn, max_sessions: 2, max_new_per_s: 5}
groups:
  residential: {schedules: [daily-billing, lp-15m], segment: apn-north}
meters:
  - {meter_id: r1, protocol: dlms, address: "tcp://10.0.0.1:4059", profile: p, schedule: 15m, group: residential}
  - {meter_id: r2, protocol: dlms, address: "tcp://10.0.0.2:4059", profile: p, schedule: 15m, group: residential,
     schedules: [night-backfill]}
  - {meter_id: c1, protocol: dlms, address: "tcp://10.0.0.3:4059", profile: p, schedule: 1h}
"""


def test_fleet_file_resolves_group_schedules_meter_overrides_and_segments() -> None:
    meters = {m.meter_id: m for m in parse_fleet("fleet.yaml", FLEET)}
    assert sorted(meters["r1"].plan) == ["daily-billing", "lp-15m"]
    assert sorted(meters["r2"].plan) == ["night-backfill"]  # the meter's own list replaces the group's
    assert meters["r1"].segment == meters["r2"].segment == "apn-north"
    assert meters["r1"].segment_limits is not None and meters["r1"].segment_limits.max_sessions == 2
    assert meters["c1"].plan == {} and meters["c1"].segment is None


def test_fleet_file_refuses_unknown_names_with_their_line() -> None:
    bad = FLEET.replace("schedules: [night-backfill]", "schedules: [nightly]").replace(
        "max_sessions: 2", "max_sessions: 0"
    )
    with pytest.raises(FleetFileError) as info:
        parse_fleet("fleet.yaml", bad)
    text = str(info.value)
    assert "fleet.yaml:14: schedules: unknown schedule 'nightly'" in text
    assert "fleet.yaml:8: segments.apn-north.max_sessions: Input should be greater than or equal to 1" in text
    with pytest.raises(FleetFileError, match="plan: unknown field"):
        parse_fleet("fleet.yaml", FLEET.replace("group: residential}", "group: residential, plan: {}}", 1))


def test_the_readme_schedules_example_parses() -> None:
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"```yaml\n(schedules:\n  daily-billing.*?)```", readme, re.S)
    meters = {m.meter_id: m for m in parse_fleet("README-schedules.yaml", block)}
    assert sorted(meters["ELEC-0100"].plan) == ["daily-billing", "lp-15m"]
    assert (sorted(meters["ELEC-0101"].plan), meters["ELEC-0101"].segment) == (["night-backfill"], "conc-17")
    assert meters["ELEC-0100"].segment == "apn-north"
