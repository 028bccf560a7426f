"""Start-up time of the `gxami` command (`cli_start_help`, `cli_start_decode_mbus`) vs `python -c "import typer"`.

A field tool is started by hand, often on a small box beside the meters, so the time to a
first line matters more than throughput. Each figure is the wall time of a fresh process,
from spawn to exit, the median of several runs; the peer is the least any typer command can
cost, a bare ``python -c "import typer"`` from the same interpreter, timed in turns with
ours in the same run (a slow spell on the shared machine hits both alike). The median, not
the best, is taken: a start-up time is what a user waits on an ordinary run.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from bench.figures import Figure, RunContext

# rscada/libmbus test/test-frames/oms_frame1.hex: the OMS gas meter example, wired form (as in the CLI tests).
OMS_GAS_WIRED = "6820206808FD7278563412931533032A0000000C1427048502046D32371F1502FD1700008916"
PEER = (sys.executable, "-c", "import typer")


def gxami_executable() -> str:
    """The installed ``gxami`` script beside this interpreter (what a user runs)."""
    script = Path(sys.executable).parent / "gxami"
    if not script.is_file():
        raise FileNotFoundError(f"{script} is missing: install the workspace (uv sync --all-packages)")
    return str(script)


def _wall(argv: Sequence[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} ... exited {done.returncode}: {done.stderr.decode()[-500:]}")
    return elapsed


def start_times(ours: Sequence[str], runs: int) -> tuple[float, float]:
    """Median wall time of ``ours`` and of the peer over ``runs`` turns each, after one warm-up of each."""
    _wall(ours), _wall(PEER)  # warm the page cache and the .pyc files: not what a user waits for twice
    mine: list[float] = []
    peer: list[float] = []
    for _ in range(runs):
        mine.append(_wall(ours))
        peer.append(_wall(PEER))
    return statistics.median(mine), statistics.median(peer)


def _figure(name: str, ours: Sequence[str], ctx: RunContext) -> Figure:
    runs = ctx.size.pick(3, 9, 21)
    value, limit = start_times(ours, runs)
    return Figure(
        name,
        value,
        "s",
        limit,
        better="lower",
        extra={"peer": 'python -c "import typer"', "command": " ".join(["gxami", *ours[1:]]), "runs": runs},
    )


def run_help(ctx: RunContext) -> Iterator[Figure]:
    yield _figure("cli_start_help", (gxami_executable(), "--help"), ctx)


def run_decode(ctx: RunContext) -> Iterator[Figure]:
    yield _figure("cli_start_decode_mbus", (gxami_executable(), "decode", "mbus", OMS_GAS_WIRED), ctx)
