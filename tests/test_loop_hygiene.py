"""The root conftest's async hygiene can fail: leaked timers and a blocked loop fail the test."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CASES = """
import asyncio
import time


async def test_clean() -> None:
    handle = asyncio.get_running_loop().call_later(30, lambda: None)
    handle.cancel()
    await asyncio.sleep(0.01)


async def test_leaks_a_timer() -> None:
    asyncio.get_running_loop().call_later(30, lambda: None)


async def test_blocks_the_loop() -> None:
    time.sleep(SLOW)
"""


def _run(tmp_path: Path, slow: float) -> str:
    test_file = tmp_path / "test_cases.py"
    test_file.write_text(textwrap.dedent(CASES).replace("SLOW", repr(slow)))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:randomly", "-rA", "-q",
         "--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml"), str(test_file)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> str:
    from conftest import SLOW_CALLBACK_SECONDS

    return _run(tmp_path_factory.mktemp("hygiene"), SLOW_CALLBACK_SECONDS + 0.3)


def test_a_leaked_timer_handle_fails_its_test(report: str) -> None:
    assert re.search(r"PASSED \S*::test_clean$", report, re.M), report
    assert not re.search(r"ERROR \S*::test_clean ", report), report
    assert re.search(r"ERROR \S*::test_leaks_a_timer ", report), report
    assert "left 1 timer handle(s)" in report, report


def test_a_blocked_loop_fails_its_test(report: str) -> None:
    assert re.search(r"ERROR \S*::test_blocks_the_loop ", report), report
    assert "the event loop was blocked" in report, report
