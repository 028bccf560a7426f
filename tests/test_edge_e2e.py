"""Edge collectors end to end (issue 8, the edge test): the scheduler, ingest and an edge collector
as processes; 20 simulated DLMS meters at site ``north`` read every minute, 3 meters at site
``south`` whose collector is never started.

1. Site routing: the scheduler sends north's jobs to ``ami.read-jobs.north``, where the edge
   reads them, and south's to ``ami.read-jobs.south``, where they wait; north's jobs flow all the
   same (one site's outage never holds another's jobs).
2. The broker is stopped for (at least) 60 s. No job reaches the edge, so it reads its meters on
   its local schedule, from its copy of the site's fleet (taken from ``ami.fleet``), into its spool.
3. Once the spool holds a local read of every meter, the edge is SIGKILLed and started again,
   still without a broker.
4. When the broker is back, the spool drains: every reading the spool held is in the database
   exactly once, with the value the simulator's model gives for that meter, quantity and instant,
   and every meter has readings taken during the outage.
"""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
import yaml
from aiokafka import AIOKafkaConsumer

from gxami_collector.edge_schedule import STATE_FILE
from gxami_collector.spool import SPOOL_FILE
from gxami_contracts import JobResult, ReadingBatch, ReadJob
from gxami_meterlab.cli_procs import ServiceProcess, gxami_argv, service_env
from gxami_meterlab.devstack import DevStack
from gxami_meterlab.devstack_procs import free_port
from gxami_meterlab.simulators.dlms import expected_register
from gxami_runtime.kafka import ensure_topics
from gxami_runtime.settings import ServiceSettings

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(900)]

METERS = 20
SEED = 17
OUTAGE_S = 60.0  # as the issue asks
OBIS = {"1-0:1.8.0": "1.0.1.8.0.255", "1-0:2.8.0": "1.0.2.8.0.255"}
TOPICS = ("ami.read-jobs", "ami.readings", "ami.job-results", "ami.events", "ami.dead-letter", "ami.fleet")
SOUTH = ["SOUTH001", "SOUTH002", "SOUTH003"]

Row = tuple[str, str, datetime, float]


def _spooled(spool_db: Path, since: datetime | None = None) -> tuple[set[Row], dict[str, JobResult]]:
    """The readings in the spool, and the good results of local jobs started ``since``, by meter
    (read beside the running collector)."""
    conn = sqlite3.connect(spool_db, timeout=10)
    try:
        rows = conn.execute("SELECT topic, value FROM outbox").fetchall()
    finally:
        conn.close()
    readings: set[Row] = set()
    local: dict[str, JobResult] = {}
    for topic, value in rows:
        if topic == "ami.readings":
            batch = ReadingBatch.model_validate_json(value)
            readings |= {(batch.meter_id, r.quantity, r.ts, float(r.value)) for r in batch.readings()}
        elif topic == "ami.job-results":
            result = JobResult.model_validate_json(value)
            fresh = since is None or result.started_at >= since
            if result.job_id.startswith("local-") and result.status.value == "ok" and fresh:
                local[result.meter_id] = result
    return readings, local


async def _db(dsn: str) -> tuple[list[Row], int, set[str]]:
    """Readings, revisions, and the meters the scheduler has a good result for."""
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        recs = await conn.fetch("SELECT meter_id, quantity, ts, value FROM readings")
        revisions = int(await conn.fetchval("SELECT count(*) FROM reading_revisions"))
        read = await conn.fetch("SELECT meter_id FROM meter_schedule WHERE last_success_at IS NOT NULL")
        return (
            [(r["meter_id"], r["quantity"], r["ts"], float(r["value"])) for r in recs],
            revisions,
            {r["meter_id"] for r in read},
        )
    finally:
        await conn.close()


async def _jobs_in(bootstrap: str, topic: str) -> set[str]:
    """The meters with a job in ``topic`` (read from its start, no group)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        meters: set[str] = set()
        for _ in range(8):
            for recs in (await consumer.getmany(timeout_ms=250)).values():
                meters |= {ReadJob.model_validate_json(r.value or b"").meter_id for r in recs}
        return meters
    finally:
        await consumer.stop()


def _wait(what: str, until: Callable[[], bool], timeout: float, procs: list[ServiceProcess]) -> None:
    deadline = time.monotonic() + timeout
    while True:
        for p in procs:
            assert p.alive(), f"{p.name} died: {p.log_path.read_text()[-3000:]}"
        if until():
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_an_edge_site_reads_on_through_a_broker_outage_and_a_sigkill_and_stores_every_reading_once(
    tmp_path: Path,
) -> None:
    prefix = f"x{uuid.uuid4().hex[:6]}."
    logs, spool_dir = tmp_path / "logs", tmp_path / "spool"
    fleet_file, secrets = tmp_path / "fleet.yaml", tmp_path / "secrets.yaml"
    procs: list[ServiceProcess] = []
    with DevStack(tmp_path / "stack", fresh=True, keep_data=False, persistent_broker=True) as stack:
        overrides = {t: f"{prefix}{t}" for t in TOPICS}
        base = {
            **stack.env(),
            "GXAMI_TOPIC_OVERRIDES": json.dumps(overrides),
            "GXAMI_KAFKA_SESSION_TIMEOUT_MS": "2000",
            "GXAMI_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
            "GXAMI_KAFKA_REQUEST_TIMEOUT_MS": "5000",
            "GXAMI_LOG_LEVEL": "INFO",
        }
        edge = {
            "GXAMI_SITE": "north",
            "GXAMI_SPOOL_DIR": str(spool_dir),
            "GXAMI_CONSUMER_GROUP": f"{prefix}collector",
            "GXAMI_SECRETS_FILE": str(secrets),
            "GXAMI_CONCURRENCY": "32",
            "GXAMI_EXCHANGE_TIMEOUT_S": "10",
            "GXAMI_EDGE_AUTONOMOUS_AFTER": "10s",
        }

        def spawn(name: str, argv: list[str], **extra: str) -> ServiceProcess:
            p = ServiceProcess(name, argv, service_env(base, free_port(), name, **extra), logs / f"{name}.log")
            p.start()
            procs.append(p)
            return p

        try:
            sim = spawn(
                "meters",
                gxami_argv(
                    "simulate",
                    "dlms",
                    *("--meters", str(METERS), "--seed", str(SEED), "--schedule", "1m"),
                    *("--fleet-out", str(fleet_file), "--secrets-out", str(secrets)),
                ),
            )
            _wait("the fleet file", fleet_file.exists, 60, [sim])
            fleet = yaml.safe_load(fleet_file.read_text())
            index_of = {m["meter_id"]: i for i, m in enumerate(fleet["meters"])}
            for m in fleet["meters"]:
                m.update(site="north", purposes=["billing", "load-profile"])
            fleet["meters"] += [
                {
                    "meter_id": meter_id,
                    "protocol": "dlms",
                    "address": f"tcp://127.0.0.1:{9 + n}",
                    "profile": "generic-dlms",
                    "schedule": "1m",
                    "site": "south",
                }
                for n, meter_id in enumerate(SOUTH)
            ]
            fleet_file.write_text(yaml.safe_dump(fleet))
            settings = ServiceSettings(
                kafka_bootstrap=stack.kafka_bootstrap, kafka_enable_idempotence=False, topic_overrides=overrides
            )
            asyncio.run(ensure_topics(settings, list(TOPICS)))
            for step in (("db", "migrate"), ("fleet", "import", str(fleet_file))):
                p = ServiceProcess(step[0], gxami_argv(*step), service_env(base, 0, step[0]), logs / f"{step[0]}.log")
                p.start()
                assert p.proc is not None
                assert p.proc.wait(120) == 0, p.log_path.read_text()
            ingest_env = {"GXAMI_CONSUMER_GROUP": f"{prefix}ingest", "GXAMI_BATCH_MAX_AGE_MS": "50"}
            ingest = spawn("ingest-1", gxami_argv("ingest"), **ingest_env)
            spawn(
                "scheduler",
                gxami_argv("scheduler"),
                GXAMI_RESULTS_GROUP=f"{prefix}scheduler",
                GXAMI_HISTORY_DAYS="0.125",  # 3 hours of load profile asked of a new meter
                GXAMI_JOB_TIMEOUT_S="60",
            )
            collector = spawn("edge-1", gxami_argv("collector"), **edge)

            # 1. The scheduler's jobs reach north's edge through north's topic; south's wait in theirs.
            north = set(index_of)
            _wait(
                "a good read of every north meter through the scheduler",
                lambda: asyncio.run(_db(stack.database_url))[2] >= north,
                180,
                procs,
            )
            south_waiting = asyncio.run(_jobs_in(stack.kafka_bootstrap, f"{prefix}ami.read-jobs.south"))
            north_jobs = asyncio.run(_jobs_in(stack.kafka_bootstrap, f"{prefix}ami.read-jobs.north"))
            central_jobs = asyncio.run(_jobs_in(stack.kafka_bootstrap, f"{prefix}ami.read-jobs"))
            _wait("the edge's copy of its site's fleet", (spool_dir / STATE_FILE).exists, 60, procs)

            # 2. The broker away: the edge reads on its own, into its spool. (Ingest, a central
            #    service, is stopped across the outage and started after it: a consumer group
            #    that lives through a Tansu restart can be left with a coordinator that times
            #    out every heartbeat; that is the broker's, not the edge's, and not tested here.)
            ingest.stop()
            procs.remove(ingest)
            stack.stop_broker()
            outage_began = datetime.now(UTC)
            began = time.monotonic()
            spool_db = spool_dir / SPOOL_FILE
            _wait(
                "a local read of every meter in the spool",
                lambda: set(_spooled(spool_db, outage_began)[1]) >= north,
                120,
                procs,
            )
            spooled, local = _spooled(spool_db, outage_began)

            # 3. SIGKILL while the spool holds them; the new process comes up without a broker.
            collector.kill()
            procs.remove(collector)
            collector = spawn("edge-2", gxami_argv("collector"), **edge)
            _wait(
                "the restarted edge up without a broker",
                lambda: "broker unreachable at start" in (logs / "edge-2.log").read_text(),
                60,
                procs,
            )
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - began)))
            assert collector.alive(), "an edge collector waits for its broker, it does not exit"
            assert _spooled(spool_db)[0] >= spooled, "the restarted collector kept the spool"
            outage_ended = datetime.now(UTC)
            stack.start_broker()
            spawn("ingest-2", gxami_argv("ingest"), **ingest_env)

            # 4. Forwarded: everything spooled reaches the database, once.
            def stored() -> bool:
                rows = {(m, q, t) for m, q, t, _ in asyncio.run(_db(stack.database_url))[0]}
                return {(m, q, t) for m, q, t, _ in spooled} <= rows

            _wait("the spooled readings in the database", stored, 180, procs)
            _wait("an empty spool", lambda: not _spooled(spool_db)[0], 120, procs)
            time.sleep(3)  # anything doubled or revised would show up now
            rows, revisions, _ = asyncio.run(_db(stack.database_url))
            log2 = (logs / "edge-2.log").read_text()
        finally:
            for p in reversed(procs):
                p.stop()

    assert south_waiting == set(SOUTH), "south's jobs wait in south's topic"
    assert north_jobs <= north
    assert north_jobs, "north's jobs went through north's topic"
    assert central_jobs == set(), "no site meter's job in the central topic"
    assert set(local) == north, "every north meter read on the local schedule during the outage"
    assert "broker unreachable at start; spool kept, retrying" in log2
    assert "local fleet copy loaded" in log2, "the restarted edge knew its site's meters without a broker"
    assert revisions == 0, "no reading arrived twice with different values"
    assert len(rows) == len({(m, q, t) for m, q, t, _ in rows}), "each reading once"
    assert {m for m, _, _, _ in rows} == north, "no reading of south's meters: nobody read them"
    by_key = {(m, q, t): v for m, q, t, v in rows}
    for meter_id, quantity, ts, value in spooled:
        assert by_key[(meter_id, quantity, ts)] == value, "a spooled reading is stored with its value"
    for meter_id, quantity, ts, value in rows:
        want = float(expected_register(SEED, index_of[meter_id], OBIS[quantity], ts)) * 0.001  # Wh -> kWh
        assert math.isclose(value, want, rel_tol=0, abs_tol=1e-9), (meter_id, quantity, ts, value, want)
    during = {m for m, _, t, _ in rows if outage_began <= t <= outage_ended}
    assert during == north, "every meter has readings taken while the broker was away"
