"""``python -m bench [--quick | --full] [NAME ...]``, ``python -m bench --list``.

stdout carries one JSON line per figure and nothing else: everything else that would
write there (gurux-dlms prints from inside the library) is pointed at stderr for the
whole run. A benchmark that fails is reported on stderr, the others still run, and the
exit code is 1. Every process and stack started is stopped on the way out, also on
Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
import traceback
from types import FrameType

from bench.catalog import BENCHMARKS
from bench.figures import RunContext, Size
from bench.stack import BenchStack


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--quick", action="store_true", help="small sizes: checks the plumbing, not the speed")
    sizes.add_argument("--full", action="store_true", help="the issues' full sizes (the merge up to 50M rows: long)")
    return parser.parse_args(argv)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwind through the finally blocks that stop what we started


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    out = sys.stdout
    if args.list:
        width = max(len(b.name) for b in BENCHMARKS.values())
        for bench in BENCHMARKS.values():
            needs = "  [starts Kafka + PostgreSQL]" if bench.needs_stack else ""
            print(f"{bench.name:<{width}}  {bench.summary}{needs}", file=out)
        return 0
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        print(f"bench: unknown benchmark(s) {', '.join(unknown)}; see --list", file=sys.stderr)
        return 2
    chosen = [BENCHMARKS[n] for n in (args.names or BENCHMARKS)]
    size = Size.QUICK if args.quick else Size.FULL if args.full else Size.DEFAULT
    signal.signal(signal.SIGTERM, _on_sigterm)
    stack = BenchStack()
    ctx = RunContext(size, lambda: stack)
    failed: list[str] = []
    sys.stdout = sys.stderr  # nothing but figures on the real stdout
    try:
        for bench in chosen:
            ctx.note(f"{bench.name} ({size.value}) ...")
            started = time.monotonic()
            try:
                for figure in bench.run(ctx):
                    print(figure.to_json(), file=out, flush=True)
            except Exception:  # noqa: BLE001 - one failing benchmark must not hide the others' figures
                failed.append(bench.name)
                traceback.print_exc(file=sys.stderr)
            ctx.note(f"{bench.name} took {time.monotonic() - started:.1f} s")
    finally:
        sys.stdout = out
        stack.close()
    if failed:
        print(f"bench: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
