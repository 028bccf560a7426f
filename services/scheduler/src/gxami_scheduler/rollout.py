"""Firmware rollouts in waves, as pure functions: who is in which wave, and what the rollout does next.

A rollout's waves are cumulative percentages of the group, the last 100 (``1,10,100``: 1 % of the
meters, then up to 10 %, then the rest). Meters are ordered by a hash of the rollout's seed and
their id, so the first wave is a spread sample of the group, not the meters whose ids sort first,
and the same rollout always plans the same waves. Every wave has at least one meter; a percentage
that adds no meter (1 % of 20 meters after 0 %) still takes one, and later waves that would be
empty are dropped.

:func:`next_step` decides from the states of the current wave's meters: wait while any is still
pending or running; halt when the wave's failure rate (failed / meters in the wave) is above the
threshold; else start the next wave, or finish after the last.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

FINISHED_STATES: Final = frozenset({"activated", "failed"})
MAX_WAVES: Final = 20


class RolloutPlanError(ValueError):
    """Waves or threshold that make no rollout; the message says which and why."""


def parse_waves(text: str | Sequence[int | float]) -> list[float]:
    """``"1,10,100"`` (or a list) as checked cumulative percentages: increasing, in (0, 100], ending at 100."""
    if isinstance(text, str):
        try:
            values = [float(p) for p in text.split(",") if p.strip()]
        except ValueError:
            raise RolloutPlanError(f"waves {text!r}: expected comma-separated percentages like 1,10,100") from None
    else:
        values = [float(p) for p in text]
    if not 1 <= len(values) <= MAX_WAVES:
        raise RolloutPlanError(f"waves: expected 1 to {MAX_WAVES} percentages, not {len(values)}")
    if any(not math.isfinite(v) or not 0 < v <= 100 for v in values):
        raise RolloutPlanError("waves: every percentage must be above 0 and at most 100")
    if any(b <= a for a, b in itertools.pairwise(values)):
        raise RolloutPlanError("waves: percentages are cumulative and must increase (e.g. 1,10,100)")
    if values[-1] != 100:
        raise RolloutPlanError("waves: the last wave must reach 100 (the whole group)")
    return values


def check_threshold(value: float) -> float:
    if not (math.isfinite(value) and 0 <= value <= 1):
        raise RolloutPlanError(f"threshold {value!r}: expected a failure rate between 0 and 1 (e.g. 0.05)")
    return value


def plan_waves(meters: Sequence[str], waves: Sequence[float], *, seed: str = "") -> list[list[str]]:
    """The meters of each wave (see the module doc); ``meters`` are distinct ids."""
    percentages = parse_waves(list(waves))
    if len(set(meters)) != len(meters):
        raise RolloutPlanError("a meter is listed twice")
    ordered = sorted(meters, key=lambda m: (hashlib.sha256(f"{seed}\0{m}".encode()).digest(), m))
    out: list[list[str]] = []
    taken = 0
    for pct in percentages:
        upto = min(len(ordered), max(taken + 1, math.ceil(len(ordered) * pct / 100)))
        if upto > taken:
            out.append(ordered[taken:upto])
            taken = upto
    return out


@dataclass(frozen=True, slots=True)
class Step:
    """What a rollout does next: ``start`` wave ``wave`` (its ``meters``), ``wait``, ``halt`` or ``finish``."""

    action: Literal["start", "wait", "halt", "finish"]
    wave: int
    meters: list[str] = field(default_factory=list)
    failure_rate: float | None = None
    reason: str = ""


def wave_failure_rate(wave: Sequence[str], states: Mapping[str, str]) -> float:
    """Failed meters over the wave's meters (0 for an empty wave)."""
    if not wave:
        return 0.0
    return sum(1 for m in wave if states.get(m) == "failed") / len(wave)


def next_step(
    waves: Sequence[Sequence[str]], states: Mapping[str, str], current: int, threshold: float, *, started: bool
) -> Step:
    """The next step of a rollout at wave ``current`` (``started``: its meters were sent their command)."""
    check_threshold(threshold)
    if not waves:
        return Step("finish", 0, reason="the group has no meters")
    if not 0 <= current < len(waves):
        raise RolloutPlanError(f"wave {current} is not one of the rollout's {len(waves)} waves")
    if not started:
        return Step("start", current, list(waves[current]))
    wave = waves[current]
    open_meters = [m for m in wave if states.get(m) not in FINISHED_STATES]
    if open_meters:
        return Step("wait", current, open_meters, reason=f"{len(open_meters)} of {len(wave)} meters not finished")
    rate = wave_failure_rate(wave, states)
    if rate > threshold:
        reason = f"wave {current + 1}: {rate:.0%} of {len(wave)} meters failed, above the threshold {threshold:.0%}"
        return Step("halt", current, failure_rate=rate, reason=reason)
    if current + 1 == len(waves):
        return Step("finish", current, failure_rate=rate, reason=f"all {len(waves)} waves done")
    return Step("start", current + 1, list(waves[current + 1]), failure_rate=rate)
