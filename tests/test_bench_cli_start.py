"""The CLI start-up benchmark keeps the output contract and times the commands it names (no speed checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_cli_start_figures_compare_gxami_with_a_bare_typer_import() -> None:
    names = ("cli_start_help", "cli_start_decode_mbus")
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", *names],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    figures = [json.loads(line) for line in done.stdout.splitlines()]
    assert [f["bench"] for f in figures] == list(names)
    for figure, command in zip(figures, ("gxami --help", "gxami decode mbus 68"), strict=True):
        assert list(figure)[:6] == ["bench", "value", "unit", "limit", "ratio", "better"]
        assert figure["unit"] == "s" and figure["better"] == "lower"
        assert figure["peer"] == 'python -c "import typer"' and figure["command"].startswith(command)
        assert figure["value"] > 0 and figure["limit"] > 0
        expected = figure["limit"] / figure["value"]
        assert abs(figure["ratio"] - expected) <= 0.01 * expected, figure
