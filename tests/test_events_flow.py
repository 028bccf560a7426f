"""Meter events end to end: simulated DLMS event logs -> collector -> ami.events -> ingest -> events table.

Over the real broker and database: every event the meters logged is stored exactly once even
though each read job is delivered twice and ingest later re-reads the whole topic, and
malformed event messages go to the dead-letter topic with their reason.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from prometheus_client import REGISTRY

from gxami_collector.app import Collector
from gxami_collector.jobs import MeterReader
from gxami_collector.secret_store import SecretStore
from gxami_collector.settings import CollectorSettings
from gxami_contracts import CATALOG, DeadLetter, JobResult, JobStatus, MeterEvent, ReadJob
from gxami_ingest.app import Ingest
from gxami_ingest.settings import IngestSettings
from gxami_meterlab.devstack import StackEndpoints
from gxami_meterlab.simulators.dlms import DlmsFleetSimulator, expected_events
from gxami_runtime.kafka import ensure_topics, make_consumer, make_producer
from gxami_store import migrate
from gxcore.drivers import stable_event_id
from gxcore.profiles import ProfileCatalog

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SEED, METERS, ENTRIES = 11, 3, 6
LOG = "0-0:99.98.0"
PROFILE = f"""
name: events-dlms
protocol: dlms
parameters: {{client_address: 16, server_address: 1, authentication: none, interface: wrapper}}
points:
  - {{quantity: "1-0:1.8.0", unit: kWh, source: "3/1.0.1.8.0.255", purpose: [billing]}}
  - {{quantity: "0-0:96.11.0", unit: "", source: "1/0.0.96.11.0.255", purpose: [events],
     options: {{profile: "0.0.99.98.0.255", last_entries: {ENTRIES}}}}}
"""


def _overrides(prefix: str) -> dict[str, str]:
    return {name: f"{prefix}{name}" for name in CATALOG}


def _events_counted(outcome: str) -> float:
    return REGISTRY.get_sample_value("gxami_ingest_events_total", {"outcome": outcome}) or 0.0


async def _until(what: str, ready: Callable[[], Awaitable[bool]], timeout: float = 90) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await ready():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


def _job(meter_id: str, port: int) -> ReadJob:
    now = datetime.now(UTC)
    url = f"tcp://127.0.0.1:{port}"
    return ReadJob(
        job_id=uuid.uuid4().hex,
        meter_id=meter_id,
        link_id=url,
        protocol="dlms",
        url=url,
        profile="events-dlms",
        purposes=["billing", "events"],
        issued_at=now,
        deadline=now + timedelta(minutes=5),
    )


async def test_meter_events_are_stored_once_despite_redelivery_and_bad_ones_are_dead_lettered(
    stack: StackEndpoints, database_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    (tmp_path / "events-dlms.yaml").write_text(PROFILE)
    kafka = {
        "kafka_bootstrap": stack.kafka_bootstrap,
        "kafka_enable_idempotence": stack.kafka_enable_idempotence,
        "kafka_session_timeout_ms": 2000,
        "kafka_heartbeat_interval_ms": 500,
        "topic_overrides": _overrides(topic_prefix),
    }
    cs = CollectorSettings(consumer_group=f"{topic_prefix}collector", exchange_timeout_s=2.0, **kafka)  # type: ignore[arg-type]

    def ingest_settings(group: str) -> IngestSettings:
        return IngestSettings(
            database_url=database_url,
            consumer_group=f"{topic_prefix}{group}",  # type: ignore[arg-type]
            batch_max_age_ms=100,
            vee_enabled=False,
            **kafka,
        )

    await ensure_topics(cs)
    now = datetime.now(UTC).replace(microsecond=0)  # the meters' clock stands still: both reads see one log
    db = await asyncpg.connect(database_url)
    try:
        await migrate(db)
        async with DlmsFleetSimulator(METERS, seed=SEED, clock=lambda: now) as sim:
            await db.executemany(
                "INSERT INTO meters (meter_id, protocol, url, link_id, profile, interval_s)"
                " VALUES ($1, 'dlms', $2, $2, $3, 900)",
                [(m.meter_id, f"tcp://127.0.0.1:{m.port}", "events-dlms") for m in sim.meters],
            )
            jobs = [_job(m.meter_id, m.port) for m in sim.meters]
            stranger = MeterEvent(event_id="ev-x", meter_id="NOT-IN-REGISTRY", ts=now, kind="power-down")
            producer = make_producer(cs)
            await producer.start()
            try:
                for job in jobs * 2:  # every job delivered twice, as after a collector crash before its commit
                    await producer.send_and_wait(
                        cs.topic("ami.read-jobs"), job.model_dump_json().encode(), key=job.link_id.encode()
                    )
                events_topic = cs.topic("ami.events")
                await producer.send_and_wait(events_topic, b"{not json", key=b"M1")
                await producer.send_and_wait(
                    events_topic, json.dumps({"event_id": "", "meter_id": "M1"}).encode(), key=b"M1"
                )
                await producer.send_and_wait(events_topic, stranger.model_dump_json().encode(), key=b"NOT-IN-REGISTRY")
            finally:
                await producer.stop()

            stored_before, duplicates_before = _events_counted("stored"), _events_counted("duplicate")
            expected_total = METERS * ENTRIES
            stop = asyncio.Event()
            reader = MeterReader(ProfileCatalog(tmp_path), SecretStore(), exchange_timeout=2.0, session_timeout=30)
            tasks = [
                asyncio.create_task(Collector(cs, reader).run(stop)),
                asyncio.create_task(Ingest(ingest_settings("ingest")).run(stop)),
            ]
            check = make_consumer(cs, f"{topic_prefix}check", cs.topic("ami.job-results"), cs.topic("ami.dead-letter"))
            await check.start()
            results: list[JobResult] = []
            letters: list[DeadLetter] = []

            async def settled() -> bool:
                for tp, recs in (await check.getmany(timeout_ms=200)).items():
                    for r in recs:
                        if tp.topic == cs.topic("ami.job-results"):
                            results.append(JobResult.model_validate_json(r.value))
                        else:
                            letters.append(DeadLetter.model_validate_json(r.value))
                # each job's events reach ingest twice: once stored, once a duplicate
                return (
                    len(results) == 2 * METERS
                    and len(letters) == 3
                    and _events_counted("duplicate") - duplicates_before == expected_total
                    and await db.fetchval("SELECT count(*) FROM events") == expected_total
                )

            try:
                await _until("events stored, duplicates absorbed and dead letters sent", settled)
            finally:
                await check.stop()
                stop.set()
                await asyncio.wait_for(asyncio.gather(*tasks), 60)
            assert _events_counted("stored") - stored_before == expected_total

            # Ingest restarted without its offsets (a new group): the whole topic again, nothing new stored.
            stop = asyncio.Event()
            task = asyncio.create_task(Ingest(ingest_settings("ingest-again")).run(stop))

            async def reread() -> bool:
                return _events_counted("duplicate") - duplicates_before == 3 * expected_total

            try:
                await _until("the topic re-read", reread)
            finally:
                stop.set()
                await asyncio.wait_for(task, 60)

        rows = await db.fetch("SELECT event_id, meter_id, ts, kind, severity, data FROM events ORDER BY meter_id, ts")
    finally:
        await db.close()

    assert all(r.status is JobStatus.OK and (r.readings_count, r.events_count) == (1, ENTRIES) for r in results), [
        (r.status, r.error_message) for r in results
    ]
    by_meter: dict[str, list[tuple[datetime, int]]] = {}
    for row in rows:
        data = json.loads(row["data"])
        assert data == {"source": LOG, "code": data["code"], "protocol": "dlms"}
        assert row["event_id"] == stable_event_id(row["meter_id"], LOG, row["ts"], data["code"])
        assert (row["kind"], row["severity"]) in {("power-down", "warning"), ("power-up", "info")}
        by_meter.setdefault(row["meter_id"], []).append((row["ts"], data["code"]))
    assert len(rows) == expected_total, "every event stored exactly once"
    for index, meter in enumerate(sim.meters):
        assert by_meter[meter.meter_id] == expected_events(SEED, index, now - timedelta(days=400), now)[-ENTRIES:]

    reasons = sorted(letter.reason for letter in letters)
    assert {letter.consumer for letter in letters} == {"ingest"}
    assert {letter.source_topic for letter in letters} == {events_topic}
    assert any("json" in r.lower() for r in reasons), reasons
    assert any("event_id" in r and "at least 1 character" in r for r in reasons), reasons
    assert any("unknown meter 'NOT-IN-REGISTRY'" in r for r in reasons), reasons
