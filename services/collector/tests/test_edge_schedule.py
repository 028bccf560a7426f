"""The edge's local schedule: when it reads on its own, from a fleet copy that survives a restart without a broker."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gxami_collector.app import Collector, _loopback
from gxami_collector.edge_schedule import (
    LOCAL_HISTORY,
    STATE_FILE,
    EdgeSchedule,
    LocalPolicy,
    SiteFleet,
    slot_start,
)
from gxami_collector.jobs import MeterReader
from gxami_collector.secret_store import SecretStore
from gxami_collector.settings import CollectorSettings
from gxami_collector.spool import SPOOL_FILE, Spool
from gxami_contracts import FleetEntry, JobResult, JobStatus, ReadJob
from gxami_meterlab.devstack import StackEndpoints
from gxami_meterlab.devstack_procs import free_port
from gxami_meterlab.simulators.dlms import DlmsFleetSimulator
from gxami_runtime.kafka import ensure_topics, make_consumer, make_producer
from gxcore.profiles import ProfileCatalog
from gxcore.secrets import Secret

T0 = datetime(2026, 3, 1, 12, 0, 7, tzinfo=UTC)


def _entry(meter_id: str, **kw: object) -> FleetEntry:
    fields: dict[str, object] = {
        "meter_id": meter_id,
        "protocol": "dlms",
        "url": "tcp://127.0.0.1:4059",
        "link_id": f"tcp://127.0.0.1:4059/{meter_id}",
        "profile": "generic-dlms",
        "interval_s": 900,
        "purposes": ["billing", "load-profile"],
        "options": {"authentication": "low"},
        "site": "north",
        "updated_at": T0,
    }
    fields.update(kw)
    return FleetEntry.model_validate(fields)


def _fleet(tmp_path: Path) -> SiteFleet:
    fleet = SiteFleet("north", tmp_path / STATE_FILE)
    fleet.put(_entry("q15"))
    fleet.put(_entry("h1", interval_s=3600))
    fleet.put(_entry("pushes", connection="push", system_title="4758410100000007"))
    fleet.put(_entry("off", enabled=False))
    fleet.put(_entry("elsewhere", site="south"))
    fleet.put(_entry("central", site=None))
    return fleet


def _ids(jobs: list[ReadJob]) -> list[str]:
    return sorted(j.meter_id for j in jobs)


def test_the_local_schedule_reads_the_sites_polled_meters_once_per_slot_only_while_the_scheduler_is_away(
    tmp_path: Path,
) -> None:
    fleet = _fleet(tmp_path)
    assert [e.meter_id for e in fleet.meters()] == ["h1", "off", "pushes", "q15"], "only this site's meters"
    edge = EdgeSchedule(fleet, LocalPolicy(autonomous_after_s=120, job_timeout_s=60), started=T0)
    assert edge.due(T0 + timedelta(seconds=110)) == [], "not away yet: 2 minutes from the start"
    assert not edge.autonomous
    at = T0 + timedelta(seconds=150)  # 12:02:37
    first = edge.due(at)
    assert _ids(first) == ["h1", "q15"], "polled and enabled meters, each slot 2 minutes old"
    assert all(j.job_id.startswith("local-") and j.deadline == at + timedelta(seconds=60) for j in first)
    q15 = next(j for j in first if j.meter_id == "q15")
    assert (q15.profile_from, q15.profile_to) == (at - LOCAL_HISTORY, at), "no earlier read known"
    assert q15.purposes == ["billing", "load-profile"]
    assert edge.due(at + timedelta(seconds=30)) == [], "each meter once per slot"
    fleet.write(fleet.snapshot())
    restarted = SiteFleet("north", tmp_path / STATE_FILE)
    restarted.load()
    again = EdgeSchedule(restarted, LocalPolicy(autonomous_after_s=120), started=at + timedelta(seconds=5))
    assert again.due(at + timedelta(seconds=200)) == [], "restarted in the slot: not read twice in it"
    edge.finished(q15, ok=True)
    # 12:15:30: the q15 slot began 30 s ago; the scheduler has until 12:17:00 to send its job.
    assert edge.due(datetime(2026, 3, 1, 12, 15, 30, tzinfo=UTC)) == []
    second = edge.due(datetime(2026, 3, 1, 12, 17, 1, tzinfo=UTC))
    assert _ids(second) == ["q15"], "h1's hour has not ended"
    assert second[0].profile_from == at, "from where the last good read left off"

    # The scheduler's job for q15 arrives in the next slot: the local schedule stops, for every meter.
    back = datetime(2026, 3, 1, 12, 30, 10, tzinfo=UTC)
    stale = ReadJob(
        job_id=uuid.uuid4().hex,
        meter_id="q15",
        link_id="x",
        protocol="dlms",
        url="tcp://127.0.0.1:4059",
        profile="generic-dlms",
        issued_at=T0,
        deadline=T0 + timedelta(minutes=5),
    )
    assert edge.autonomous
    edge.scheduler_job(stale, back)  # a backlog job past its deadline says nothing of the scheduler
    assert edge.autonomous
    edge.scheduler_job(stale.model_copy(update={"deadline": back + timedelta(minutes=5)}), back)
    assert not edge.autonomous
    assert edge.due(datetime(2026, 3, 1, 13, 1, 0, tzinfo=UTC)) == [], "the scheduler sent a job 30 min ago"
    # Away again (nothing since 12:30:10): h1 is due at 13:02, q15 (read by the scheduler at 12:30) too.
    assert _ids(edge.due(datetime(2026, 3, 1, 13, 2, 30, tzinfo=UTC))) == ["h1", "q15"]


def test_slots_end_on_the_clock_and_a_short_interval_gets_half_of_it_as_grace(tmp_path: Path) -> None:
    assert slot_start(datetime(2026, 3, 1, 12, 14, 59, tzinfo=UTC), 900) == datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    fleet = SiteFleet("north", tmp_path / STATE_FILE)
    fleet.put(_entry("m1", interval_s=60))
    edge = EdgeSchedule(fleet, LocalPolicy(autonomous_after_s=120), started=T0)
    assert edge.due(datetime(2026, 3, 1, 12, 3, 29, tzinfo=UTC)) == [], "30 s into the minute: not yet"
    assert _ids(edge.due(datetime(2026, 3, 1, 12, 3, 30, tzinfo=UTC))) == ["m1"]


def test_the_fleet_copy_comes_back_from_disk_and_the_topic_prunes_what_it_no_longer_has(tmp_path: Path) -> None:
    fleet = _fleet(tmp_path)
    fleet.read_up_to("q15", T0)
    fleet.read_up_to("q15", T0 - timedelta(hours=1))  # an older read never moves the horizon back
    assert fleet.dirty
    fleet.write(fleet.snapshot())
    assert not fleet.dirty
    again = SiteFleet("north", tmp_path / STATE_FILE)
    again.load()
    assert again.meters() == fleet.meters()
    assert again.profile_to == {"q15": T0}
    again.put(_entry("q15"))  # the topic, read again from its start, still has q15 (same entry) ...
    again.put(_entry("h1", interval_s=1800))  # ... h1 changed ...
    assert again.profile_to == {"q15": T0}, "a re-put entry keeps its horizon"
    assert again.confirm() == 2, "... and no longer has 'off' and 'pushes'"
    assert [e.meter_id for e in again.meters()] == ["h1", "q15"]
    again.put(_entry("q15", site="south"))  # moved to another site: forgotten here
    assert [e.meter_id for e in again.meters()] == ["h1"]
    (tmp_path / STATE_FILE).write_text('{"entries": [{"meter_id": 5}], "profile_to": 3}')
    damaged = SiteFleet("north", tmp_path / STATE_FILE)
    damaged.load()  # a refused entry is logged and left out; nothing raises
    assert len(damaged) == 0
    (tmp_path / STATE_FILE).write_text("{not json")
    damaged.load()
    assert len(damaged) == 0


def test_a_duration_setting_takes_units_and_refuses_nonsense() -> None:
    assert CollectorSettings(edge_autonomous_after="2m").edge_autonomous_after == 120
    assert CollectorSettings(edge_autonomous_after="90s").edge_autonomous_after == 90
    assert CollectorSettings(edge_autonomous_after=30).edge_autonomous_after == 30
    with pytest.raises(ValueError, match="edge_autonomous_after"):
        CollectorSettings(edge_autonomous_after="soon")


def _spooled_results(spool_dir: Path) -> list[JobResult]:
    conn = sqlite3.connect(spool_dir / SPOOL_FILE, timeout=10)
    try:
        rows = conn.execute("SELECT value FROM outbox WHERE topic = 'ami.job-results'").fetchall()
    finally:
        conn.close()
    return [JobResult.model_validate_json(v) for (v,) in rows]


async def _until(check: Callable[[], Awaitable[bool]], timeout: float, task: asyncio.Task[None]) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if task.done():
            task.result()
            raise AssertionError("the collector stopped")
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.2)


@pytest.mark.integration
async def test_an_edge_with_no_jobs_reads_its_site_from_ami_fleet_and_again_after_a_restart_without_a_broker(
    stack: StackEndpoints, topic_prefix: str, tmp_path: Path
) -> None:
    names = ("ami.read-jobs", "ami.readings", "ami.job-results", "ami.events", "ami.dead-letter", "ami.fleet")
    spool_dir = tmp_path / "spool"
    edge = CollectorSettings(
        kafka_bootstrap=stack.kafka_bootstrap,
        kafka_enable_idempotence=False,
        kafka_session_timeout_ms=2000,
        kafka_heartbeat_interval_ms=500,
        kafka_request_timeout_ms=3000,
        topic_overrides={n: f"{topic_prefix}{n}" for n in names},
        site="north",
        spool_dir=spool_dir,
        consumer_group=f"{topic_prefix}c",
        edge_autonomous_after=5,
        invocation_counters_file=tmp_path / "counters.json",
    )
    await ensure_topics(edge, list(names))
    reader = MeterReader(
        ProfileCatalog(), SecretStore(default={"password": Secret("pw")}), exchange_timeout=5, session_timeout=30
    )
    async with DlmsFleetSimulator(3, seed=5, authentication="low", password="pw") as sim:
        entries = [
            _entry(
                m.meter_id,
                url=f"tcp://127.0.0.1:{m.port}",
                link_id=f"tcp://127.0.0.1:{m.port}",
                interval_s=60,
                purposes=["billing"],
                site="north" if i < 2 else "south",
            )
            for i, m in enumerate(sim.meters)
        ]
        north = {e.meter_id for e in entries if e.site == "north"}
        producer = make_producer(edge)
        await producer.start()
        try:
            for e in entries:
                wire, key = e.model_dump_json().encode(), e.meter_id.encode()
                await producer.send_and_wait(edge.topic("ami.fleet"), wire, key=key)
        finally:
            await producer.stop()

        # 1. No scheduler sends jobs: after 5 s the edge reads its site's two meters on its own, and
        #    their results reach the broker through the spool.
        results: dict[str, JobResult] = {}
        out = make_consumer(edge, f"{topic_prefix}check", edge.topic("ami.job-results"))
        await out.start()
        spool = await Spool.open(spool_dir, max_bytes=1 << 20)
        stop = asyncio.Event()
        task = asyncio.create_task(Collector(edge, reader, spool).run(stop))

        async def forwarded() -> bool:
            for recs in (await out.getmany(timeout_ms=200)).values():
                for r in recs:
                    jr = JobResult.model_validate_json(r.value or b"")
                    results[jr.meter_id] = jr
            return set(results) >= north

        try:
            await _until(forwarded, 60, task)
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
            await spool.close()
            await out.stop()
        saved = SiteFleet("north", spool_dir / STATE_FILE)
        saved.load()

        # 2. Restarted with no broker at all: the copy on disk is enough to go on reading.
        away = edge.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{free_port()}"})
        spool = await Spool.open(spool_dir, max_bytes=1 << 20)
        stop = asyncio.Event()
        collector = Collector(away, reader, spool)
        task = asyncio.create_task(collector.run(stop))
        spooled: dict[str, JobResult] = {}
        before = {r.job_id for r in results.values()} | {r.job_id for r in _spooled_results(spool_dir)}

        async def read_without_broker() -> bool:
            fresh = [r for r in await asyncio.to_thread(_spooled_results, spool_dir) if r.job_id not in before]
            spooled.update({r.meter_id: r for r in fresh})
            return set(spooled) >= north

        try:
            await _until(read_without_broker, 90, task)
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
            await spool.close()
    assert set(results) == north, "the site's meters, not the other site's"
    assert all(r.status is JobStatus.OK and r.job_id.startswith("local-") for r in results.values())
    assert {e.meter_id for e in saved.meters()} == north, "the fleet copy on disk"
    assert set(spooled) == north
    assert all(r.status is JobStatus.OK and r.job_id.startswith("local-") for r in spooled.values())


def test_a_healthy_scheduler_with_long_quiet_between_its_slots_never_sees_a_local_read(tmp_path: Path) -> None:
    fleet = SiteFleet("north", tmp_path / STATE_FILE)
    fleet.put(_entry("q15"))
    edge = EdgeSchedule(fleet, LocalPolicy(autonomous_after_s=120), started=T0)
    for minute in (0, 15, 30):
        at = datetime(2026, 3, 1, 12, minute, 9, tzinfo=UTC)
        job = ReadJob(
            job_id=uuid.uuid4().hex,
            meter_id="q15",
            link_id="x",
            protocol="dlms",
            url="tcp://127.0.0.1:4059",
            profile="generic-dlms",
            issued_at=at,
            deadline=at + timedelta(minutes=5),
        )
        edge.scheduler_job(job, at)
        for later in (3, 10, 14):  # quiet for up to 14 minutes: the slot's read was the scheduler's
            assert edge.due(at + timedelta(minutes=later)) == []
    assert not edge.autonomous


@pytest.mark.parametrize(
    ("host", "loopback"), [("127.0.0.1", True), ("::1", True), ("localhost", True), ("0.0.0.0", False), ("edge", False)]
)
def test_an_edges_ops_server_counts_as_closed_only_on_loopback(host: str, loopback: bool) -> None:
    assert _loopback(host) is loopback
