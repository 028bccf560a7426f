"""Timing CPU-bound work against its peer: fixed work, taken in turns, best of N.

Each contender does the same fixed amount of work per pass (sizes are deterministic,
never "as many as fit in a second"). Passes alternate between contenders so that a slow
spell on the shared 2-core machine hits both alike, and the best pass of each counts
(timeit's rule: the minimum is the run least disturbed by everything else). The garbage
collector is off during a pass, as in timeit, for both contenders alike.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Contender:
    """A pass of fixed work; ``run()`` returns how many items it handled."""

    name: str
    run: Callable[[], int]


def race(contenders: Sequence[Contender], *, repeats: int) -> dict[str, float]:
    """Best rate (items per second) of each contender over ``repeats`` alternating passes."""
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    best: dict[str, float] = {c.name: float("inf") for c in contenders}
    items: dict[str, int] = {}
    for c in contenders:  # a warm-up pass: imports, caches and first-call costs are not the figure
        items[c.name] = c.run()
    enabled = gc.isenabled()
    try:
        for _ in range(repeats):
            for c in contenders:
                gc.collect()
                gc.disable()
                start = time.perf_counter()
                handled = c.run()
                elapsed = time.perf_counter() - start
                if enabled:
                    gc.enable()
                if handled != items[c.name]:
                    raise RuntimeError(f"{c.name}: a pass handled {handled} items, the first {items[c.name]}")
                best[c.name] = min(best[c.name], elapsed)
    finally:
        if enabled:
            gc.enable()
    return {name: items[name] / max(seconds, 1e-9) for name, seconds in best.items()}


def over(items: Sequence[T], passes: int, handle: Callable[[T], object]) -> Callable[[], int]:
    """A pass that calls ``handle`` on every item, ``passes`` times over; returns the count."""

    def run() -> int:
        for _ in range(passes):
            for item in items:
                handle(item)
        return passes * len(items)

    return run
