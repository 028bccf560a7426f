"""A missing broker or database at start: one line naming what and where, exit code 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CASES = [
    ("collector", {"GXAMI_KAFKA_BOOTSTRAP": "127.0.0.1:1"}, "cannot reach the Kafka broker at 127.0.0.1:1"),
    (
        "ingest",
        {"GXAMI_DATABASE_URL": "postgresql://gx:hunter2@127.0.0.1:1/none"},
        "cannot reach the database at postgresql://gx:***@127.0.0.1:1/none",
    ),
    (
        "scheduler",
        {"GXAMI_DATABASE_URL": "postgresql://gx:hunter2@127.0.0.1:1/none"},
        "cannot reach the database at postgresql://gx:***@127.0.0.1:1/none",
    ),
    (
        "reports",
        {"GXAMI_DATABASE_URL": "postgresql://gx:hunter2@127.0.0.1:1/none"},
        "cannot reach the database at postgresql://gx:***@127.0.0.1:1/none",
    ),
]


@pytest.mark.parametrize(("service", "env", "message"), CASES, ids=[c[0] for c in CASES])
def test_unreachable_dependency_is_one_line_and_exit_2(service: str, env: dict[str, str], message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gxami_cli", service],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"gxami {service}: {message}")
    assert "Traceback" not in proc.stderr
    assert "hunter2" not in proc.stderr + proc.stdout
