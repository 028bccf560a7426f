"""The wave planner: who is in which wave, and when a rollout starts, waits, halts or finishes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gxami_scheduler.rollout import RolloutPlanError, next_step, parse_waves, plan_waves, wave_failure_rate

METERS = [f"m{i:03d}" for i in range(200)]


def test_waves_split_the_group_by_cumulative_percentages() -> None:
    waves = plan_waves(METERS, [1, 10, 100], seed="r1")
    assert [len(w) for w in waves] == [2, 18, 180]
    assert sorted(m for w in waves for m in w) == METERS  # every meter once
    assert plan_waves(METERS, [1, 10, 100], seed="r1") == waves  # the same rollout plans the same waves
    assert plan_waves(METERS, [1, 10, 100], seed="r2")[0] != waves[0]  # another rollout samples others
    assert waves[0] != METERS[:2]  # a spread sample, not the ids that sort first


def test_small_groups_get_one_meter_per_wave_and_no_empty_waves() -> None:
    assert [len(w) for w in plan_waves(["a", "b", "c"], [1, 10, 100])] == [1, 1, 1]
    assert [len(w) for w in plan_waves(["a", "b"], [1, 10, 50, 100])] == [1, 1]
    assert [len(w) for w in plan_waves(["a"], [1, 10, 100])] == [1]
    assert plan_waves([], [1, 100]) == []
    assert [len(w) for w in plan_waves([str(i) for i in range(20)], [1, 5, 100])] == [1, 1, 18]


@pytest.mark.parametrize(
    ("waves", "why"),
    [
        ("1,10", "must reach 100"),
        ("10,1,100", "must increase"),
        ("0,100", "above 0"),
        ("1,10,101", "at most 100"),
        ("1,x,100", "comma-separated"),
        ("", "1 to 20"),
        (",".join(str(i) for i in range(1, 22)) + ",100", "1 to 20"),
    ],
)
def test_bad_waves_are_refused(waves: str, why: str) -> None:
    with pytest.raises(RolloutPlanError, match=why):
        parse_waves(waves)


def test_duplicate_meters_and_bad_thresholds_are_refused() -> None:
    with pytest.raises(RolloutPlanError, match="twice"):
        plan_waves(["a", "a"], [100])
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(RolloutPlanError, match="threshold"):
            next_step([["a"]], {}, 0, bad, started=True)


def test_a_rollout_starts_waits_then_moves_wave_by_wave_and_finishes() -> None:
    waves = [["a"], ["b", "c"], ["d", "e", "f", "g"]]
    step = next_step(waves, {}, 0, 0.25, started=False)
    assert (step.action, step.wave, step.meters) == ("start", 0, ["a"])
    step = next_step(waves, {"a": "transferring"}, 0, 0.25, started=True)
    assert (step.action, step.meters) == ("wait", ["a"])
    step = next_step(waves, {"a": "activated"}, 0, 0.25, started=True)
    assert (step.action, step.wave, step.meters, step.failure_rate) == ("start", 1, ["b", "c"], 0.0)
    step = next_step(waves, {"a": "activated", "b": "activated", "c": "verified"}, 1, 0.25, started=True)
    assert step.action == "wait"  # verified, not yet activated, is not finished
    done = {m: "activated" for w in waves for m in w}
    step = next_step(waves, done | {"g": "failed"}, 2, 0.25, started=True)
    assert (step.action, step.failure_rate) == ("finish", 0.25)  # 1 of 4 is at the threshold, not above


def test_a_wave_above_the_threshold_halts_the_rollout() -> None:
    waves = [["a", "b", "c", "d"], ["e"]]
    states = {"a": "activated", "b": "failed", "c": "failed", "d": "activated"}
    step = next_step(waves, states, 0, 0.25, started=True)
    assert step.action == "halt" and step.failure_rate == 0.5
    assert "wave 1: 50% of 4 meters failed, above the threshold 25%" in step.reason
    assert wave_failure_rate(["a", "b"], {"b": "failed"}) == 0.5
    assert next_step(waves, states, 0, 0.5, started=True).action == "start"  # a threshold of 50 % tolerates it
    assert next_step([["a"]], {"a": "failed"}, 0, 0.0, started=True).action == "halt"
    assert next_step([], {}, 0, 0.1, started=False).action == "finish"
    with pytest.raises(RolloutPlanError, match="not one of"):
        next_step(waves, states, 5, 0.1, started=True)


@given(
    count=st.integers(min_value=0, max_value=300),
    cuts=st.lists(st.integers(min_value=1, max_value=99), max_size=6, unique=True),
    seed=st.text(max_size=8),
)
def test_any_plan_puts_every_meter_in_exactly_one_non_empty_wave(count: int, cuts: list[int], seed: str) -> None:
    meters = [f"m{i}" for i in range(count)]
    percentages = [*sorted(cuts), 100]
    waves = plan_waves(meters, percentages, seed=seed)
    assert sorted(m for w in waves for m in w) == sorted(meters)
    assert all(waves) and len(waves) <= len(percentages)
    # No wave ends before its share of the group (cumulative counts never fall short of the percentage).
    if count:
        cumulative = 0
        for pct, wave in zip(percentages, waves, strict=False):
            cumulative += len(wave)
            assert cumulative >= min(count, -(-count * pct // 100))
