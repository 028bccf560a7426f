"""`gxami demo --scenario edge` as a newcomer runs it: ends with the edge summary line, nothing lost."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from gxami_meterlab.devstack import default_root
from gxami_meterlab.testkit import processes_under

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

LINE = (
    r"edge: (\d+) pushed readings stored, (\d+) dial-in meters read, (\d+) wM-Bus meters heard,"
    r" (\d+) spooled readings forwarded, (\d+) lost"
)


def test_edge_demo_stores_pushes_dial_ins_wmbus_and_what_the_cut_off_edge_spooled_and_loses_nothing() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gxami_cli", "demo", "--scenario", "edge", "--timeout", "150"],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    m = re.fullmatch(LINE, last)
    assert m, last
    pushed, dial_in, wmbus, spooled, lost = map(int, m.groups())
    assert lost == 0
    assert pushed >= 3 * 8  # 3 meters, 8 pushes each, at least one reading per push
    assert dial_in == 3 + 1 + 1  # DLMS, IEC 62056-21 and M-Bus meters that call
    assert wmbus == 3
    assert spooled > 0, "the edge read on its own while cut off, and its spool was forwarded"
    assert "cutting the edge collector's uplink" in proc.stdout
    leftovers = processes_under(default_root().parent / "demo-edge")
    assert not leftovers


def test_an_unknown_scenario_is_one_line_and_exit_2() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gxami_cli", "demo", "--scenario", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "--scenario 'nope'" in proc.stderr
