"""Segment limits across replicas: two schedulers (two shards) and two collectors in one consumer group read
a DLMS fleet in one network segment; the simulator's session log shows the segment never had more sessions
open than its limit, and no meter or shared link ever had two at once, over a few rounds."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import asyncpg
import pytest
import yaml

from gxami_meterlab.cli_procs import ServiceProcess, gxami_argv, service_env
from gxami_meterlab.devstack import StackEndpoints
from gxami_meterlab.devstack_procs import free_port
from gxami_meterlab.simulators.dlms import DlmsFleetSimulator

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(600)]

METERS = 6
MAX_SESSIONS = 2
ROUNDS = 2
SHARED = (4, 5)  # these two meters sit behind one gateway: one link


class _SimulatorThread:
    """The DLMS fleet simulator on its own event loop in this process, so the test can read its session log."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.sim = DlmsFleetSimulator(METERS, seed=11, fail_on_repeat=False)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> DlmsFleetSimulator:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.sim.start(), self.loop).result(30)
        return self.sim

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.sim.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()


async def _ok_results(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        rows = await conn.fetch("SELECT meter_id, count(*) AS n FROM job_results WHERE status = 'ok' GROUP BY 1")
        return {r["meter_id"]: int(r["n"]) for r in rows}
    finally:
        await conn.close()


def test_segment_limits_hold_across_two_collectors(
    stack: StackEndpoints, database_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    fleet_file, secrets = tmp_path / "fleet.yaml", tmp_path / "secrets.yaml"
    secrets.write_text(yaml.safe_dump({"default": {}, "meters": {}}))
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
        "GXAMI_HISTORY_DAYS": "0.05",
        "GXAMI_SECRETS_FILE": str(secrets),
        "GXAMI_LOG_LEVEL": "INFO",
    }
    procs: list[ServiceProcess] = []

    def spawn(name: str, argv: list[str], **extra: str) -> ServiceProcess:
        p = ServiceProcess(name, argv, service_env(base, free_port(), name, **extra), logs / f"{name}.log")
        p.start()
        procs.append(p)
        return p

    with _SimulatorThread() as sim:
        meters = []
        for m in sim.meters:
            row: dict[str, object] = {
                "meter_id": m.meter_id,
                "protocol": "dlms",
                "address": f"tcp://127.0.0.1:{m.port}",
                "profile": "generic-dlms",
                "group": "cell",
                "schedule": "1m",
                "options": {"authentication": "none"},
            }
            if m.index in SHARED:
                row["link_id"] = "tcp://gateway-7:4059"
            meters.append(row)
        fleet_file.write_text(
            yaml.safe_dump(
                {
                    "segments": {"cell-7": {"kind": "cell", "max_sessions": MAX_SESSIONS, "max_new_per_s": 50}},
                    "groups": {"cell": {"segment": "cell-7"}},
                    "meters": meters,
                }
            )
        )
        try:
            for step in (("db", "migrate"), ("fleet", "import", str(fleet_file))):
                p = ServiceProcess(step[0], gxami_argv(*step), service_env(base, 0, step[0]), logs / f"{step[0]}.log")
                p.start()
                assert p.proc is not None
                assert p.proc.wait(60) == 0, p.log_path.read_text()
            for shard in (0, 1):
                spawn(
                    f"scheduler-{shard}",
                    gxami_argv("scheduler"),
                    GXAMI_RESULTS_GROUP=f"{topic_prefix}scheduler",
                    GXAMI_SHARD_INDEX=str(shard),
                    GXAMI_SHARD_COUNT="2",
                )
            for n in (0, 1):
                spawn(f"collector-{n}", gxami_argv("collector"), GXAMI_CONSUMER_GROUP=f"{topic_prefix}collector")

            deadline = time.monotonic() + 420
            done: dict[str, int] = {}
            while True:
                for p in procs:
                    assert p.alive(), f"{p.name} died; log: {p.log_path.read_text()[-3000:]}"
                done = asyncio.run(_ok_results(database_url))
                if len(done) == METERS and min(done.values()) >= ROUNDS:
                    break
                assert time.monotonic() < deadline, f"not every meter read {ROUNDS} times: {done}"
                time.sleep(0.5)
        finally:
            for p in reversed(procs):
                p.stop()
        sessions = list(sim.sessions)
        most = sim.max_concurrent()
        most_shared = sim.max_concurrent(SHARED)
        per_meter = {i: sim.max_concurrent([i]) for i in range(METERS)}

    assert len(sessions) >= METERS * ROUNDS  # the log saw every read
    assert all(s.closed_step is not None for s in sessions)
    assert 1 <= most <= MAX_SESSIONS, most
    assert most_shared == 1  # the shared gateway never had two sessions at once
    assert set(per_meter.values()) == {1}
