"""Meters that dial in, served by whichever of two collector replicas they call (issue 8, item 3).

Real processes over the real broker and database: the scheduler publishes the dial-in meters'
due work on ``ami.dial-in-work``, two collectors with dial-in listeners follow it, and
``gxami simulate dlms --dial-in`` makes 50 meters call a replica picked at random per call, twice
back to back (the second call often reaches the other replica before the scheduler's update
has: the claims must stop a second serve). The first round's meters send no ident line (the
collector reads their logical device name); one meter stops answering mid-session. A second
round, with ident lines, finds nothing to do except that meter's work, which is served then.
Each due read is served exactly once (collector counters, job results, the simulator's call
log) and the database holds exactly the rows the meters' model gives.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import time
import urllib.request
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from gxami_meterlab.cli_procs import ServiceProcess, gxami_argv, service_env
from gxami_meterlab.devstack import StackEndpoints
from gxami_meterlab.devstack_procs import free_port
from gxami_meterlab.simulators.dlms import ROW_PERIOD, expected_register, meter_id
from gxami_meterlab.testkit import scrape_metric, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(600)]

METERS = 50
SEED = 23
STALLED = 7
HISTORY_H = 3
QUANTITIES = {"1-0:1.8.0": "1.0.1.8.0.255", "1-0:2.8.0": "1.0.2.8.0.255"}  # Wh on the meter, kWh stored
TOPICS = (
    "ami.read-jobs",
    "ami.readings",
    "ami.job-results",
    "ami.events",
    "ami.commands",
    "ami.command-results",
    "ami.dead-letter",
    "ami.fleet",
    "ami.dial-in-work",
    "ami.dial-in-claims",
)


async def _fetch(dsn: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


def _q(dsn: str, sql: str) -> list[asyncpg.Record]:
    return asyncio.run(_fetch(dsn, sql))


def _boundaries(start: datetime, end: datetime) -> list[datetime]:
    """The 15-minute boundaries in [start, end]."""
    first = math.ceil(start.timestamp() / ROW_PERIOD) * ROW_PERIOD
    return [datetime.fromtimestamp(t, start.tzinfo) for t in range(first, int(end.timestamp()) + 1, ROW_PERIOD)]


def test_dial_in_meters_are_served_once_by_whichever_replica_they_call(
    stack: StackEndpoints, database_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    fleet, secrets, call_log = tmp_path / "fleet.yaml", tmp_path / "secrets.yaml", tmp_path / "calls.jsonl"
    listen = [free_port(), free_port()]
    base = {
        **stack.env(),
        "GXAMI_DATABASE_URL": database_url,
        "GXAMI_TOPIC_OVERRIDES": json.dumps({t: f"{topic_prefix}{t}" for t in TOPICS}),
        "GXAMI_KAFKA_SESSION_TIMEOUT_MS": "2000",
        "GXAMI_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
        "GXAMI_SECRETS_FILE": str(secrets),
        "GXAMI_LOG_LEVEL": "INFO",
    }
    procs: list[ServiceProcess] = []

    def spawn(name: str, argv: list[str], **extra: str) -> ServiceProcess:
        p = ServiceProcess(name, argv, service_env(base, free_port(), name, **extra), logs / f"{name}.log")
        p.start()
        procs.append(p)
        return p

    def run(name: str, *args: str) -> str:
        done = subprocess.run(
            gxami_argv(*args), check=False, env=service_env(base, 0, name), capture_output=True, text=True, timeout=180
        )
        assert done.returncode == 0, f"{name}: {done.stderr[-3000:]}"
        return done.stdout

    targets = [a for port in listen for a in ("--dial-in", f"127.0.0.1:{port}")]
    # Secured meters (HLS-GMAC, their own keys): the public client reads the logical device name.
    common = [
        *("simulate", "dlms", "--meters", str(METERS), "--seed", str(SEED), *targets),
        *("--idle", "15", "--authentication", "high-gmac"),
    ]
    collectors = [
        spawn(
            f"collector{i}",
            gxami_argv("collector"),
            GXAMI_CONSUMER_GROUP=f"{topic_prefix}collector",
            GXAMI_LISTENERS=f"dlms-dial-in@tcp://127.0.0.1:{listen[i]}",
            GXAMI_EXCHANGE_TIMEOUT_S="3",
            GXAMI_DIAL_IN_IDENT_WAIT_S="0.5",
            GXAMI_DIAL_IN_MAX_SESSIONS="64",
        )
        for i in range(2)
    ]

    def total(name: str, **labels: str) -> float:
        return sum(scrape_metric(c.env["GXAMI_HTTP_PORT"], name, **labels) for c in collectors)

    def each(name: str, **labels: str) -> list[float]:
        return [scrape_metric(c.env["GXAMI_HTTP_PORT"], name, **labels) for c in collectors]

    def dial(*extra: str) -> list[dict[str, Any]]:
        before = len(call_log.read_text().splitlines()) if call_log.exists() else 0
        sim = spawn("dialer", gxami_argv(*common, "--call-log", str(call_log), *extra))
        assert sim.proc is not None
        assert sim.proc.wait(240) == 0, sim.log_path.read_text()[-3000:]
        procs.remove(sim)
        return [json.loads(line) for line in call_log.read_text().splitlines()[before:]]

    try:
        run(
            "files",
            *common,
            "--schedule",
            "1h",
            "--fleet-out",
            str(fleet),
            "--secrets-out",
            str(secrets),
            "--write-only",
        )
        run("db", "db", "migrate")
        run("fleet", "fleet", "import", str(fleet))
        assert _q(database_url, "SELECT count(*) AS n FROM meter_schedule")[0]["n"] == 0, (
            "dial-in meters are not polled"
        )
        viewer = run("token", "token", "create", "--role", "viewer", "--name", "dial-in-test").strip()
        scheduler = spawn(
            "scheduler",
            gxami_argv("scheduler"),
            GXAMI_RESULTS_GROUP=f"{topic_prefix}scheduler",
            GXAMI_HISTORY_DAYS=str(HISTORY_H / 24),
        )
        spawn(
            "ingest",
            gxami_argv("ingest"),
            GXAMI_CONSUMER_GROUP=f"{topic_prefix}ingest",
            GXAMI_BATCH_MAX_READINGS="400",
            GXAMI_BATCH_MAX_AGE_MS="50",
        )
        wait_until(
            "both replicas to know every meter and its due work",
            lambda: (
                each("gxami_collector_fleet_meters") == [METERS, METERS]
                and each("gxami_collector_dial_in_pending_meters") == [METERS, METERS]
            ),
            120,
            procs,
        )
        assert _q(database_url, "SELECT count(*) AS n FROM job_results")[0]["n"] == 0, "nothing is read until a call"
        # Where each meter's back-fill starts: HISTORY_H before its first job, kept if the job is planned anew.
        starts = {r["meter_id"]: r["last_profile_ts"] for r in _q(database_url, "SELECT * FROM dial_in_schedule")}
        assert len(starts) == METERS and all(starts.values())

        # Round 1: no ident lines (the logical device name is read), two calls back to back, one meter stalls.
        first = dial(
            "--no-ident", "--calls", "2", "--every", "0.1s", "--stall-meter", str(STALLED), "--stall-after", "9"
        )
        assert len(first) == 2 * METERS
        assert {c["target"] for c in first} == {f"127.0.0.1:{p}" for p in listen}, "both replicas were called"
        stalled_call = next(c for c in first if c["index"] == STALLED and c["call"] == 0)
        assert stalled_call["ended"] == "stalled"
        wait_until(
            "every first-round result applied",
            lambda: (
                _q(
                    database_url,
                    "SELECT count(*) AS n FROM dial_in_schedule WHERE last_contact_at IS NOT NULL"
                    " AND (pending_job IS NULL OR pending_attempt = 2)",
                )[0]["n"]
                == METERS
                and total("gxami_collector_dial_in_jobs_total", status="error") == 1
            ),
            120,
            procs,
        )
        served_early = not _q(
            database_url,
            f"SELECT 1 FROM dial_in_schedule WHERE meter_id = '{meter_id(SEED, STALLED)}' AND pending_job IS NOT NULL",
        )
        want_pending = 0 if served_early else 1
        wait_until(
            "both replicas to see what is still pending",
            lambda: each("gxami_collector_dial_in_pending_meters") == [want_pending, want_pending],
            60,
            procs,
        )

        # Round 2: every meter calls once more, announcing itself; only the stalled meter has work.
        second = dial("--calls", "1")
        assert len(second) == METERS
        wait_until(
            "the stalled meter's work served",
            lambda: (
                _q(database_url, "SELECT count(*) AS n FROM dial_in_schedule WHERE pending_job IS NULL")[0]["n"]
                == METERS
                and _q(database_url, "SELECT count(*) AS n FROM job_results")[0]["n"] == METERS + 1
            ),
            120,
            procs,
        )
        # Every call is a contact, also those with nothing to do: each meter's last one is its second-round call.
        second_at = {c["meter_id"]: datetime.fromisoformat(c["started_at"]) for c in second}
        wait_until(
            "every second-round call recorded as the meter's last contact",
            lambda: all(
                r["last_contact_at"] is not None and r["last_contact_at"] >= second_at[r["meter_id"]]
                for r in _q(database_url, "SELECT meter_id, last_contact_at FROM dial_in_schedule")
            ),
            60,
            procs,
        )
        # Readings settle (ingest batches): the count stops moving.
        last, stable = -1, time.monotonic()
        while time.monotonic() - stable < 2:
            n = _q(database_url, "SELECT count(*) AS n FROM readings")[0]["n"]
            if n != last:
                last, stable = n, time.monotonic()
            time.sleep(0.3)
        served = total("gxami_collector_dial_in_jobs_total", status="ok")
        failed = total("gxami_collector_dial_in_jobs_total", status="error")
        sessions_served = total("gxami_collector_dial_in_sessions_total", outcome="served")
        shown = json.loads(
            urllib.request.urlopen(
                urllib.request.Request(
                    f"http://127.0.0.1:{scheduler.env['GXAMI_HTTP_PORT']}/meters/{meter_id(SEED, STALLED)}",
                    headers={"Authorization": f"Bearer {viewer}"},
                ),
                timeout=10,
            ).read()
        )
        results = _q(database_url, "SELECT job_id, attempt, meter_id, status, error_kind FROM job_results")
        schedule = {r["meter_id"]: r for r in _q(database_url, "SELECT * FROM dial_in_schedule")}
        rows = _q(database_url, "SELECT meter_id, quantity, ts, value, job_id FROM readings ORDER BY 1, 2, 3")
        revisions = _q(database_url, "SELECT count(*) AS n FROM reading_revisions")[0]["n"]
    finally:
        for p in reversed(procs):
            p.stop()

    # Each due read served exactly once: 50 good sessions and the one that stalled, whoever took the call.
    assert served == METERS and failed == 1 and sessions_served == METERS
    ok = [r for r in results if r["status"] == "ok"]
    assert sorted(r["meter_id"] for r in ok) == sorted(meter_id(SEED, i) for i in range(METERS))
    errors = [r for r in results if r["status"] == "error"]
    assert [(r["meter_id"], r["attempt"], r["error_kind"]) for r in errors] == [(meter_id(SEED, STALLED), 1, "timeout")]
    retried = next(r for r in ok if r["meter_id"] == meter_id(SEED, STALLED))
    assert retried["attempt"] == 2 and retried["job_id"] != errors[0]["job_id"], "its work stayed pending, anew"
    # ... and was served at a later call than the one that stalled.
    # (Each dialer run numbers its calls from 0; a call that found no work only answered the identification.)
    later = [c for c in first + second if c["index"] == STALLED and c is not stalled_call and c["answered"] > 5]
    assert len(later) == 1 and later[0]["started_at"] >= stalled_call["finished_at"]
    # The meter's last contact is recorded and shown.
    assert shown["connection"] == "dial-in" and shown["last_contact_at"] is not None
    assert datetime.fromisoformat(shown["last_contact_at"]) >= datetime.fromisoformat(stalled_call["started_at"])
    assert shown["dial_in"]["pending_job"] is None and shown["dial_in"]["consecutive_failures"] == 0

    # The rows are exactly right: for each meter, every 15-minute boundary of its back-fill window
    # (from its start, HISTORY_H before its first job, up to the job served) plus its billing read.
    assert revisions == 0
    by_meter: dict[str, list[asyncpg.Record]] = {}
    for r in rows:
        by_meter.setdefault(r["meter_id"], []).append(r)
    assert sorted(by_meter) == sorted(meter_id(SEED, i) for i in range(METERS))
    job_of = {r["meter_id"]: r["job_id"] for r in ok}
    for index in range(METERS):
        mid = meter_id(SEED, index)
        issued = schedule[mid]["last_profile_ts"]
        assert issued - starts[mid] >= timedelta(hours=HISTORY_H), mid
        want_ts = _boundaries(starts[mid], issued)
        mine = by_meter[mid]
        assert {r["job_id"] for r in mine} == {job_of[mid]}, mid
        for quantity, obis in QUANTITIES.items():
            got = {r["ts"]: r["value"] for r in mine if r["quantity"] == quantity}
            extra = set(got) - set(want_ts)
            assert set(want_ts) <= set(got), (mid, quantity)
            # The billing read, at the meter's clock (whole seconds) in the session, after the job was issued.
            assert len(extra) == 1 and min(extra) >= issued.replace(microsecond=0), (mid, quantity, extra)
            for ts, value in got.items():
                assert math.isclose(value, float(expected_register(SEED, index, obis, ts)) * 0.001), (mid, ts)
        assert Counter(r["quantity"] for r in mine) == {q: len(want_ts) + 1 for q in QUANTITIES}
