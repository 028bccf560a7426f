"""A simulated DLMS fleet read end to end: scheduler, collector, ingest and reports as separate
processes over the real broker and database; the rows must equal what the simulator served,
by meter and timestamp, also after ingest is killed with SIGKILL mid-stream and restarted."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
import yaml

from gxami_meterlab.cli_procs import ServiceProcess, gxami_argv, service_env
from gxami_meterlab.devstack import StackEndpoints
from gxami_meterlab.devstack_procs import free_port
from gxami_meterlab.simulators.dlms import expected_register

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(600)]

METERS = 20
SEED = 7
HISTORY_DAYS = 4
QUANTITIES = {"1-0:1.8.0": "1.0.1.8.0.255", "1-0:2.8.0": "1.0.2.8.0.255"}
STEP = timedelta(minutes=15)
SERVICES = ("scheduler", "collector", "ingest", "reports")


async def _count(dsn: str) -> tuple[int, int]:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        rec = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM readings) AS n,"
            " (SELECT count(*) FROM meter_schedule WHERE last_success_at IS NOT NULL) AS ok"
        )
        assert rec is not None
        return int(rec["n"]), int(rec["ok"])
    finally:
        await conn.close()


def _wait(dsn: str, pred: object, timeout: float, procs: list[ServiceProcess]) -> tuple[int, int]:
    deadline = time.monotonic() + timeout
    state = (0, 0)
    while time.monotonic() < deadline:
        for p in procs:
            assert p.alive(), f"{p.name} died; log: {p.log_path.read_text()[-3000:]}"
        state = asyncio.run(_count(dsn))
        if callable(pred) and pred(state):
            return state
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting; last state (readings, meters ok) = {state}")


def _expected_boundaries(first: datetime, last: datetime) -> int:
    return int((last - first) / STEP) + 1


def test_fleet_is_read_exactly_once_even_when_ingest_is_killed(
    stack: StackEndpoints, database_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    fleet, secrets = tmp_path / "fleet.yaml", tmp_path / "secrets.yaml"
    overrides = {
        name: f"{topic_prefix}{name}"
        for name in (
            "ami.read-jobs",
            "ami.readings",
            "ami.job-results",
            "ami.events",
            "ami.commands",
            "ami.command-results",
            "ami.dead-letter",
        )
    }
    base = {
        **stack.env(),
        "GXAMI_DATABASE_URL": database_url,
        "GXAMI_TOPIC_OVERRIDES": json.dumps(overrides),
        "GXAMI_KAFKA_SESSION_TIMEOUT_MS": "2000",
        "GXAMI_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
        "GXAMI_HISTORY_DAYS": str(HISTORY_DAYS),
        "GXAMI_SECRETS_FILE": str(secrets),
        "GXAMI_LOG_LEVEL": "INFO",
    }
    procs: list[ServiceProcess] = []

    def spawn(name: str, argv: list[str], **extra: str) -> ServiceProcess:
        p = ServiceProcess(name, argv, service_env(base, free_port(), name, **extra), logs / f"{name}.log")
        p.start()
        procs.append(p)
        return p

    try:
        sim = spawn(
            "simulator",
            gxami_argv(
                "simulate",
                "dlms",
                "--meters",
                str(METERS),
                "--seed",
                str(SEED),
                "--fleet-out",
                str(fleet),
                "--secrets-out",
                str(secrets),
            ),
        )
        deadline = time.monotonic() + 60
        while not fleet.exists():
            assert sim.alive(), sim.log_path.read_text()
            assert time.monotonic() < deadline, "the simulator wrote no fleet file within 60 s"
            time.sleep(0.05)
        meters = yaml.safe_load(fleet.read_text())["meters"]
        index_of = {m["meter_id"]: i for i, m in enumerate(meters)}
        for step in (("db", "migrate"), ("fleet", "import", str(fleet))):
            p = ServiceProcess(step[0], gxami_argv(*step), service_env(base, 0, step[0]), logs / f"{step[0]}.log")
            p.start()
            assert p.proc is not None
            assert p.proc.wait(60) == 0, p.log_path.read_text()
        # The report API needs a viewer token: made the way an operator makes one, printed once on stdout.
        made = subprocess.run(
            gxami_argv("token", "create", "--role", "viewer", "--name", "e2e-report"),
            env=service_env(base, 0, "token"),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        viewer_token = made.stdout.strip()
        started = datetime.now(UTC)
        spawn("scheduler", gxami_argv("scheduler"), GXAMI_RESULTS_GROUP=f"{topic_prefix}scheduler")
        spawn("collector", gxami_argv("collector"), GXAMI_CONSUMER_GROUP=f"{topic_prefix}collector")
        reports = spawn("reports", gxami_argv("reports"))
        ingest_env = {
            "GXAMI_CONSUMER_GROUP": f"{topic_prefix}ingest",
            "GXAMI_BATCH_MAX_READINGS": "400",
            "GXAMI_BATCH_MAX_AGE_MS": "50",
        }
        ingest = spawn("ingest", gxami_argv("ingest"), **ingest_env)

        # Kill ingest with SIGKILL as soon as it has stored something, twice, restarting it each time.
        for _ in range(2):
            before = asyncio.run(_count(database_url))[0]
            _wait(database_url, lambda s, b=before: s[0] > b, 180, procs)
            ingest.kill()
            procs.remove(ingest)
            ingest = spawn("ingest", gxami_argv("ingest"), **ingest_env)

        # every meter read once, and the readings settle
        _wait(database_url, lambda s: s[1] == METERS, 300, procs)
        last, stable = -1, time.monotonic()
        while time.monotonic() - stable < 3:
            n = _wait(database_url, lambda s: True, 10, procs)[0]
            if n != last:
                last, stable = n, time.monotonic()
            time.sleep(0.3)

        rows = asyncio.run(_fetch(database_url))
        revisions = asyncio.run(_scalar(database_url, "SELECT count(*) FROM reading_revisions"))
        first_read = asyncio.run(_first_reads(database_url))
        report = json.loads(
            urllib.request.urlopen(
                urllib.request.Request(
                    f"http://127.0.0.1:{reports.env['GXAMI_HTTP_PORT']}/reports/daily",
                    headers={"Authorization": f"Bearer {viewer_token}"},
                ),
                timeout=10,
            ).read()
        )
    finally:
        for p in reversed(procs):
            p.stop()

    assert revisions == 0, "no reading may arrive twice with different values"
    by_meter: dict[str, dict[str, list[tuple[datetime, float]]]] = {}
    for meter_id, quantity, ts, value in rows:
        by_meter.setdefault(meter_id, {}).setdefault(quantity, []).append((ts, value))
    assert set(by_meter) == set(index_of), "every meter has readings, and only fleet meters"
    for meter_id, per_q in by_meter.items():
        idx = index_of[meter_id]
        for quantity, obis in QUANTITIES.items():
            series = per_q[quantity]
            # every stored value is exactly what the simulator served at that instant (Wh -> kWh)
            for ts, value in series:
                want = expected_register(SEED, idx, obis, ts) * 0.001
                assert math.isclose(value, want, rel_tol=0, abs_tol=1e-9), (meter_id, quantity, ts, value, want)
            # the load profile is complete: every 15-minute boundary from the history start on
            boundaries = sorted(ts for ts, _ in series if ts.minute % 15 == 0 and ts.second == 0)
            first, last_b = boundaries[0], boundaries[-1]
            # The scheduler asks for HISTORY_DAYS back from the moment it plans the meter's first job:
            # after the test started and before the collector began that job (a busy machine may
            # delay the plan by tens of seconds, so bound it by both ends rather than by one).
            earliest = started - timedelta(days=HISTORY_DAYS)
            latest = first_read[meter_id] - timedelta(days=HISTORY_DAYS)
            assert earliest - STEP <= first <= latest + STEP, (meter_id, first, earliest, latest)
            assert len(boundaries) == _expected_boundaries(first, last_b), (meter_id, quantity)
            assert last_b >= started - STEP
    # the report covers every meter, with a full day each (96 intervals) for yesterday
    yesterday = (started - timedelta(days=1)).date().isoformat()
    full = [r for r in report["rows"] if r["day"] == yesterday]
    assert {r["meter_id"] for r in full} == set(index_of)
    for r in full:
        idx = index_of[r["meter_id"]]
        day_end = datetime.fromisoformat(yesterday).replace(tzinfo=UTC) + timedelta(days=1)
        want = (
            expected_register(SEED, idx, "1.0.1.8.0.255", day_end)
            - expected_register(SEED, idx, "1.0.1.8.0.255", day_end - timedelta(days=1))
        ) * 0.001
        assert math.isclose(r["kwh"], want, abs_tol=1e-6), r


async def _first_reads(dsn: str) -> dict[str, datetime]:
    conn = await asyncpg.connect(dsn)
    try:
        recs = await conn.fetch("SELECT meter_id, min(started_at) AS t FROM job_results GROUP BY meter_id")
        return {r["meter_id"]: r["t"] for r in recs}
    finally:
        await conn.close()


async def _fetch(dsn: str) -> list[tuple[str, str, datetime, float]]:
    conn = await asyncpg.connect(dsn)
    try:
        recs = await conn.fetch("SELECT meter_id, quantity, ts, value FROM readings ORDER BY 1, 2, 3")
        return [(r["meter_id"], r["quantity"], r["ts"], r["value"]) for r in recs]
    finally:
        await conn.close()


async def _scalar(dsn: str, sql: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()
