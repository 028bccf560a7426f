"""Edge sites end to end: with one site's collector down, the other site's jobs are read (issue 8, item 5).

The scheduler service and a site collector run in this process over the session's broker and a
database of this test; the meters are simulated DLMS meters on TCP.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer

from gxami_collector.app import Collector
from gxami_collector.jobs import MeterReader
from gxami_collector.secret_store import SecretStore
from gxami_collector.settings import CollectorSettings
from gxami_collector.spool import Spool
from gxami_contracts import FleetEntry, ReadJob
from gxami_contracts.topics import DEAD_LETTER, EVENTS, FLEET, JOB_RESULTS, READ_JOBS, READINGS
from gxami_meterlab.devstack import StackEndpoints
from gxami_meterlab.devstack_procs import free_port
from gxami_meterlab.simulators.dlms import DlmsFleetSimulator
from gxami_scheduler.app import serve
from gxami_scheduler.fleet import parse_fleet
from gxami_scheduler.registry import import_fleet
from gxami_scheduler.settings import SchedulerSettings
from gxami_scheduler.sites import site_jobs_topic
from gxami_store import migrate
from gxcore.profiles import ProfileCatalog
from gxcore.secrets import Secret

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest_asyncio.fixture(loop_scope="function")
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        await migrate(conn)
        yield conn
    finally:
        await conn.close()


def _reader(bootstrap: str, *topics: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest", enable_auto_commit=False
    )


async def test_with_one_sites_collector_down_the_other_sites_jobs_are_read(
    stack: StackEndpoints, db: asyncpg.Connection, database_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    names = (READ_JOBS.name, JOB_RESULTS.name, READINGS.name, EVENTS.name, DEAD_LETTER, FLEET.name)
    overrides = {n: f"{topic_prefix}{n}" for n in names}
    port = free_port()
    settings = SchedulerSettings(
        kafka_bootstrap=stack.kafka_bootstrap,
        kafka_enable_idempotence=False,
        database_url=database_url,
        topic_overrides=overrides,
        tick_seconds=0.2,
        job_timeout_s=60,
        results_group=f"{topic_prefix}scheduler",
        http_port=port,
    )
    async with DlmsFleetSimulator(4, seed=21, authentication="low", password="pw") as sim:
        rows = [
            f"{m.meter_id},dlms,tcp://127.0.0.1:{m.port},generic-dlms,15m,{'north' if i < 2 else 'south'},"
            "authentication=low,billing"
            for i, m in enumerate(sim.meters)
        ]
        text = "meter_id,protocol,address,profile,schedule,site,options,purposes\n" + "\n".join(rows) + "\n"
        fleet = parse_fleet("f.csv", text, ProfileCatalog())
        await import_fleet(db, fleet, datetime.now(UTC))
        north = {m.meter_id for m in fleet if m.site == "north"}
        south = {m.meter_id for m in fleet if m.site == "south"}
        edge = CollectorSettings(
            kafka_bootstrap=stack.kafka_bootstrap,
            kafka_enable_idempotence=False,
            kafka_session_timeout_ms=2000,
            kafka_heartbeat_interval_ms=500,
            topic_overrides=overrides,
            site="south",
            spool_dir=tmp_path / "spool",
            consumer_group=f"{topic_prefix}collector",
        )
        assert edge.jobs_topic() == site_jobs_topic(settings, "south")
        reader = MeterReader(
            ProfileCatalog(), SecretStore(default={"password": Secret("pw")}), exchange_timeout=5, session_timeout=30
        )
        spool = await Spool.open(tmp_path / "spool", max_bytes=1 << 20)
        stop = asyncio.Event()
        scheduler = asyncio.create_task(serve(settings, stop))
        collector = asyncio.create_task(Collector(edge, reader, spool).run(stop))  # south's only; north's is down
        try:
            deadline = time.monotonic() + 90
            while True:
                done = await db.fetch(
                    "SELECT meter_id FROM meter_schedule WHERE last_success_at IS NOT NULL AND in_flight_job IS NULL"
                )
                if {r["meter_id"] for r in done} >= south or time.monotonic() > deadline:
                    break
                assert not scheduler.done() and not collector.done()
                await asyncio.sleep(0.2)
            read = {r["meter_id"] for r in done}
            waiting: dict[str, set[str]] = {"north": set(), "south": set()}
            fleet_sites: dict[str, str | None] = {}
            out = _reader(
                stack.kafka_bootstrap,
                site_jobs_topic(settings, "north"),
                site_jobs_topic(settings, "south"),
                settings.topic(READ_JOBS.name),
                settings.topic(FLEET.name),
            )
            await out.start()
            try:
                central_jobs = 0
                for _ in range(10):
                    for tp, recs in (await out.getmany(timeout_ms=300)).items():
                        for r in recs:
                            if tp.topic == settings.topic(FLEET.name):
                                entry = FleetEntry.from_wire(r.value or b"")
                                fleet_sites[entry.meter_id] = entry.site
                            elif tp.topic == settings.topic(READ_JOBS.name):
                                central_jobs += 1
                            else:
                                site = tp.topic.rsplit(".", 1)[1]
                                waiting[site].add(ReadJob.model_validate_json(r.value or b"").meter_id)
            finally:
                await out.stop()
        finally:
            stop.set()
            for task in (collector, scheduler):
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(task, 30)
            await spool.close()
    assert read == south, "south's meters were read while north's collector was down"
    assert waiting == {"north": north, "south": south}, "each site's jobs in its own topic"
    assert central_jobs == 0, "no site meter's job went to the central topic"
    assert fleet_sites == {**dict.fromkeys(north, "north"), **dict.fromkeys(south, "south")}, "ami.fleet names the site"
