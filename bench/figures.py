"""What a benchmark reports (:class:`Figure`), what it is (:class:`Benchmark`) and gets (:class:`RunContext`).

The output contract: one JSON object per line,
``{"bench": NAME, "value": V, "unit": U, "limit": L, "ratio": R, "better": "higher"|"lower", ...}``
where ``limit`` is the physical limit or the peer measured in the same run, in the same
unit as ``value``, and ``ratio`` is ``value / limit`` when higher is better and
``limit / value`` when lower is better, so a ratio of 1 always means "as good as the peer".
Further keys (``peer``, sizes, side figures) follow and never replace those six.
"""

from __future__ import annotations

import enum
import json
import math
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TextIO

if TYPE_CHECKING:
    from bench.stack import BenchStack

Better = Literal["higher", "lower"]
REQUIRED_KEYS = ("bench", "value", "unit", "limit", "ratio")


class Size(enum.Enum):
    """How big a run is: ``quick`` checks the plumbing, ``full`` is the issue's whole size."""

    QUICK = "quick"
    DEFAULT = "default"
    FULL = "full"

    def pick(self, quick: int, default: int, full: int) -> int:
        """The count for this size."""
        return {Size.QUICK: quick, Size.DEFAULT: default, Size.FULL: full}[self]


def significant(x: float, digits: int = 4) -> float:
    """``x`` rounded to ``digits`` significant digits (JSON stays readable, nothing pretends to more)."""
    if x == 0 or not math.isfinite(x):
        return x
    return round(x, digits - 1 - math.floor(math.log10(abs(x))))


@dataclass(frozen=True, slots=True)
class Figure:
    """One measured figure and the limit (or peer) it is compared with."""

    bench: str
    value: float
    unit: str
    limit: float
    better: Better = "higher"
    extra: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for what, number in (("value", self.value), ("limit", self.limit)):
            if not (math.isfinite(number) and number > 0):
                raise ValueError(f"{self.bench}: {what} must be a positive finite number, not {number!r}")
        clash = set(self.extra) & {*REQUIRED_KEYS, "better"}
        if clash:
            raise ValueError(f"{self.bench}: extra keys {sorted(clash)} would hide the contract's keys")

    @property
    def ratio(self) -> float:
        """1.0 = as good as the limit; above 1 better, below 1 worse, whichever way "better" points."""
        return self.value / self.limit if self.better == "higher" else self.limit / self.value

    def to_json(self) -> str:
        """The one output line."""
        line: dict[str, object] = {
            "bench": self.bench,
            "value": significant(self.value),
            "unit": self.unit,
            "limit": significant(self.limit),
            "ratio": significant(self.ratio, 3),
            "better": self.better,
        }
        line.update(self.extra)
        return json.dumps(line, separators=(", ", ": "))


@dataclass(frozen=True, slots=True)
class Benchmark:
    """A named benchmark: ``run(ctx)`` yields its figures."""

    name: str
    summary: str
    run: Callable[[RunContext], Iterable[Figure]]
    needs_stack: bool = False


class RunContext:
    """What a benchmark gets: the size, the stack (started on first use), a place for notes."""

    def __init__(self, size: Size, stack_factory: Callable[[], BenchStack], notes: TextIO = sys.stderr) -> None:
        self.size = size
        self._stack_factory = stack_factory
        self.notes = notes

    def stack(self) -> BenchStack:
        """The shared local broker and database, started on first use and stopped at the end of the run."""
        return self._stack_factory()

    def note(self, text: str) -> None:
        """Progress or an explanation, on stderr."""
        print(f"bench: {text}", file=self.notes, flush=True)
