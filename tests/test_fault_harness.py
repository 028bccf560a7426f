"""The fault harness, short version: every service SIGKILLed at seeded random moments, the broker
restarted, the database stopped for 60 s; afterwards every value the DLMS and Modbus simulators
served is in the database once, with its value, and every job was done or retried.

`make soak` runs the same harness for SOAK_SECONDS (bench/fault_harness.py says what each number means).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.fault_harness import SERVICES, FaultPlan, run

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(600)]


def test_killing_every_service_and_restarting_the_broker_loses_and_doubles_nothing(tmp_path: Path) -> None:
    plan = FaultPlan(seed=14, seconds=90, dlms_meters=8, modbus_meters=2, db_outage_s=60, check_the_checker=True)
    report = run(plan, tmp_path)
    summary = report.line()

    # the faults really happened: each service killed, the broker restarted, the database stopped
    assert all(report.kills_by_service[s] >= 1 for s in SERVICES), summary
    assert report.broker_restarts >= 1 and report.db_outages == 1, summary
    # several protocols were read, and the comparison had something to compare
    assert report.protocols.get("dlms", 0) > 0 and report.protocols.get("modbus", 0) > 0, summary
    assert report.required > 0 and report.readings >= report.required, summary

    assert report.lost == 0, summary
    assert report.doubled == 0, summary
    assert report.revised == 0, summary
    assert report.unretried == 0 and report.stuck == 0, summary
    assert report.unexpected_exits == 0 and report.dead_letters == 0, summary

    # the comparison itself sees a deleted reading, a changed value and a revision
    assert report.spoiled["lost"] >= 2, report.spoiled
    assert report.spoiled["revised"] == 1, report.spoiled
