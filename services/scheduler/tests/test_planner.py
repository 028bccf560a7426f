"""Pure scheduling rules: backoff, slot alignment, load-profile ranges, sharding, job contents."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gxami_scheduler.planner import (
    DueMeter,
    SchedulePolicy,
    Shard,
    after_failure,
    after_success,
    backoff_delay,
    first_due,
    next_slot,
    plan_read,
    profile_from,
    shard_of,
    spread,
)

NOW = datetime(2025, 3, 1, 12, 7, 31, 500_000, tzinfo=UTC)


def test_backoff_sequence_without_jitter() -> None:
    policy = SchedulePolicy(backoff_base_s=60, backoff_factor=2, backoff_cap_s=3600, backoff_jitter=0)
    delays = [backoff_delay(n, "m1", policy) for n in range(1, 10)]
    assert delays == [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]
    assert backoff_delay(10_000, "m1", policy) == 3600  # no overflow, still the cap


def test_backoff_jitter_is_bounded_deterministic_and_spreads() -> None:
    policy = SchedulePolicy(backoff_base_s=60, backoff_factor=2, backoff_cap_s=3600, backoff_jitter=0.2)
    for n in range(1, 12):
        full = min(3600, 60 * 2 ** (n - 1))
        d = backoff_delay(n, "meter-7", policy)
        assert 0.8 * full <= d <= full
        assert d == backoff_delay(n, "meter-7", policy)
    firsts = {round(backoff_delay(1, f"m{i}", policy), 3) for i in range(100)}
    assert len(firsts) > 90  # meters failing together do not retry together
    assert min(firsts) >= 48
    assert max(firsts) <= 60


def test_backoff_needs_a_failure() -> None:
    with pytest.raises(ValueError):
        backoff_delay(0, "m", SchedulePolicy())


@pytest.mark.parametrize(
    ("now", "interval", "expected"),
    [
        (datetime(2025, 3, 1, 12, 7, 31, tzinfo=UTC), 900, datetime(2025, 3, 1, 12, 15, tzinfo=UTC)),
        (datetime(2025, 3, 1, 12, 15, 0, tzinfo=UTC), 900, datetime(2025, 3, 1, 12, 30, tzinfo=UTC)),
        (datetime(2025, 3, 1, 12, 14, 59, 999_999, tzinfo=UTC), 900, datetime(2025, 3, 1, 12, 15, tzinfo=UTC)),
        (datetime(2025, 3, 1, 23, 59, 0, tzinfo=UTC), 86400, datetime(2025, 3, 2, tzinfo=UTC)),
        (datetime(2025, 3, 1, 12, 0, 30, tzinfo=UTC), 60, datetime(2025, 3, 1, 12, 1, tzinfo=UTC)),
        # An aware non-UTC "now" is the same instant: boundaries are on the UTC epoch.
        (datetime(2025, 3, 1, 13, 7, tzinfo=UTC).astimezone(), 3600, datetime(2025, 3, 1, 14, tzinfo=UTC)),
    ],
)
def test_next_slot(now: datetime, interval: int, expected: datetime) -> None:
    assert next_slot(now, interval) == expected


@given(
    # hypothesis takes naive bounds and applies ``timezones`` itself
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),  # noqa: DTZ001
    st.integers(min_value=60, max_value=7 * 86400),
)
def test_next_slot_properties(now: datetime, interval: int) -> None:
    slot = next_slot(now, interval)
    assert now < slot <= now + timedelta(seconds=interval)
    assert int(slot.timestamp()) % interval == 0


def test_profile_from_rules() -> None:
    policy = SchedulePolicy(history_days=2, backfill_max_days=31)
    assert profile_from(None, NOW, policy) == NOW - timedelta(days=2)  # never read: history_days back
    last = NOW - timedelta(hours=3)
    assert profile_from(last, NOW, policy) == last  # from the last stored point
    ancient = NOW - timedelta(days=400)
    assert profile_from(ancient, NOW, policy) == NOW - timedelta(days=31)  # capped by backfill_max_days
    assert profile_from(NOW + timedelta(hours=1), NOW, policy) == NOW  # never from the future
    capped = SchedulePolicy(history_days=10, backfill_max_days=3)
    assert profile_from(None, NOW, capped) == NOW - timedelta(days=3)


def _meter(**changes: object) -> DueMeter:
    base: dict[str, object] = {
        "meter_id": "m1",
        "protocol": "dlms",
        "url": "tcp://h:4059",
        "link_id": "tcp://h:4059",
        "profile": "em-dlms",
        "interval_s": 900,
        "options": {"client": "16"},
        "purposes": ("billing",),
    }
    base.update(changes)
    return DueMeter(**base)  # type: ignore[arg-type]  # test builder over a dict of mixed values


def test_plan_read_contents() -> None:
    policy = SchedulePolicy(job_timeout_s=120, result_grace_s=10, history_days=2)
    planned = plan_read(_meter(consecutive_failures=2), NOW, "job-1", policy)
    job = planned.job
    assert (job.job_id, job.meter_id, job.link_id, job.protocol) == ("job-1", "m1", "tcp://h:4059", "dlms")
    assert job.options == {"client": "16"}
    assert job.purposes == ["billing"]
    assert job.attempt == 3  # consecutive failures + 1
    assert job.profile_from == NOW - timedelta(days=2)
    assert job.profile_to == NOW
    assert job.issued_at == NOW
    assert job.deadline == NOW + timedelta(seconds=120)
    assert planned.in_flight_until == job.deadline + timedelta(seconds=10)  # grace for a result in transit
    assert (planned.failures, planned.lost_previous) == (2, False)


def test_plan_read_counts_a_lost_job_as_a_failure() -> None:
    planned = plan_read(_meter(consecutive_failures=1, expired_job="old"), NOW, "job-2", SchedulePolicy())
    assert (planned.failures, planned.job.attempt, planned.lost_previous) == (2, 3, True)


def test_schedule_updates() -> None:
    ok = after_success("m1", 900, NOW)
    assert (ok.ok, ok.consecutive_failures, ok.next_due_at) == (True, 0, datetime(2025, 3, 1, 12, 15, tzinfo=UTC))
    policy = SchedulePolicy(backoff_base_s=60, backoff_jitter=0)
    bad = after_failure("m1", 2, NOW, policy)
    assert (bad.ok, bad.consecutive_failures, bad.next_due_at) == (False, 3, NOW + timedelta(seconds=240))


def test_first_due_is_prompt_and_spread() -> None:
    dues = [first_due(f"m{i}", 900, NOW) for i in range(200)]
    assert all(NOW <= d < NOW + timedelta(seconds=30) for d in dues)
    assert len(set(dues)) > 190
    assert first_due("m1", 900, NOW) == first_due("m1", 900, NOW)
    assert first_due("m1", 60, NOW) < NOW + timedelta(seconds=60)


def test_shard_known_answers() -> None:
    # md5("meter-1") starts a2839776 = 2726532982; md5("a") starts 0cc175b9 = 214005177. Pinned so a
    # change of hashing is noticed: replicas of different versions must agree on who owns a meter.
    assert shard_of("meter-1", 7) == 2726532982 % 7 == 5
    assert shard_of("meter-1", 4) == 2
    assert shard_of("a", 4) == 214005177 % 4 == 1
    assert shard_of("meter-1", 1) == 0


def test_shards_partition_the_fleet_evenly() -> None:
    ids = [f"SN{i:08d}" for i in range(4000)]
    owners = Counter(shard_of(m, 4) for m in ids)
    assert set(owners) == {0, 1, 2, 3}
    assert all(800 < n < 1200 for n in owners.values())
    shards = [Shard(i, 4) for i in range(4)]
    for m in ids[:200]:
        assert sum(s.owns(m) for s in shards) == 1
    assert Shard().owns("anything")


@given(st.text(min_size=1, max_size=64))
def test_spread_in_unit_interval(meter_id: str) -> None:
    assert 0.0 <= spread(meter_id, "x") < 1.0
