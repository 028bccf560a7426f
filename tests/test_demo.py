"""`gxami demo` as a newcomer runs it (small fleet): ends with the machine-readable summary line."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from gxami_meterlab.devstack import default_root
from gxami_meterlab.testkit import processes_under

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def test_demo_reads_the_fleet_prints_the_report_and_leaves_nothing_running() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gxami_cli", "demo", "--meters", "3", "--timeout", "180"],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    m = re.fullmatch(r"demo: (\d+) meters read, (\d+) readings stored, (\d+) report rows", last)
    assert m, last
    meters, readings, rows = map(int, m.groups())
    assert meters == 3
    assert readings > 3 * 96  # at least a day of 15-minute load profile per meter
    assert rows >= 3
    assert "/reports/daily" in proc.stdout
    assert "/metrics" in proc.stdout
    leftovers = processes_under(default_root().parent / "demo")
    assert not leftovers


def test_control_demo_controls_meters_through_the_api_and_counts_what_happened() -> None:
    """`gxami demo --scenario control`: every check on the simulated meters holds, and the counts add up."""
    proc = subprocess.run(
        [sys.executable, "-m", "gxami_cli", "demo", "--scenario", "control", "--timeout", "240"],
        capture_output=True,
        text=True,
        timeout=290,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "check failed" not in proc.stdout
    last = proc.stdout.strip().splitlines()[-1]
    m = re.fullmatch(
        r"control: (\d+) commands succeeded, (\d+) expired and not executed,"
        r" (\d+) refused without a valid token, (\d+) audit rows",
        last,
    )
    assert m, last
    succeeded, expired, refused, audit = map(int, m.groups())
    # off, on, arm-off, arm, relay-state, clock-sync, tariff, replay; the replayed id ran once.
    assert succeeded == 8
    assert expired == 1
    assert refused == 4  # no token, a wrong one, a viewer's; gxami tariff apply with a viewer's
    # One audit row per meter and command: 2 + 2 + 1 + 1 + 1 + 1 + 4 (the group's tariff) + 1 + 1.
    assert audit == 14
    flat = " ".join(proc.stdout.split())  # rich wraps long lines
    assert "demo-replay: answers [201, 200, 200, 200, 200]; the meter did ['remote-disconnect']" in flat
    # gxami tariff apply -> scheduler -> collector -> meters: each meter holds the file's calendar
    # (the demo compares the simulators' calendar objects and fails otherwise), audited per meter.
    assert "demo-tariff: every meter holds the file's calendar; 4 audit rows, demo-operator/succeeded" in flat
    assert "a calendar with an undefined day: 422 tariff-calendar body: week standard names unknown days" in flat
    assert "gxami tariff apply with a viewer token: exit 1" in flat
    leftovers = processes_under(default_root().parent / "demo-control")
    assert not leftovers
