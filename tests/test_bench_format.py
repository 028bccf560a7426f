"""`python -m bench` keeps its output contract: one JSON figure per stdout line, nothing else.

Only the format is checked, with two fast benchmarks at --quick size; speed is measured
by `make bench`, never by a test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FAST = ("decode_iec62056_21", "decode_modbus")


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


def test_quick_run_prints_one_json_figure_per_line() -> None:
    done = _bench("--quick", *FAST)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert len(lines) == len(FAST), done.stdout
    for line, name in zip(lines, FAST, strict=True):
        figure = json.loads(line)
        assert list(figure)[:5] == ["bench", "value", "unit", "limit", "ratio"]
        assert figure["bench"] == name
        assert isinstance(figure["unit"], str) and figure["unit"]
        for key in ("value", "limit", "ratio"):
            assert isinstance(figure[key], int | float) and figure[key] > 0, (key, figure)
        assert figure["better"] in ("higher", "lower")
        value, limit = figure["value"], figure["limit"]
        expected = value / limit if figure["better"] == "higher" else limit / value
        assert abs(figure["ratio"] - expected) <= 0.01 * expected, figure  # both are rounded to a few digits


def test_list_names_every_benchmark_and_unknown_names_are_refused() -> None:
    listed = _bench("--list")
    assert listed.returncode == 0
    names = [line.split()[0] for line in listed.stdout.splitlines()]
    assert set(FAST) <= set(names)
    assert "ingest_kafka_to_rows" in names
    refused = _bench("no_such_bench")
    assert refused.returncode == 2
    assert refused.stdout == ""
    assert "no_such_bench" in refused.stderr
