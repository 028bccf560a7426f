"""The collector against simulated DLMS meters over the real broker."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gxami_collector.app import Collector
from gxami_collector.jobs import MeterReader
from gxami_collector.secret_store import SecretStore
from gxami_collector.settings import CollectorSettings
from gxami_contracts import DeadLetter, JobResult, JobStatus, ReadingBatch, ReadJob
from gxami_meterlab.devstack import StackEndpoints
from gxami_meterlab.simulators.dlms import DlmsFleetSimulator
from gxami_runtime.kafka import ensure_topics, make_consumer, make_producer
from gxcore.drivers import ReadResult
from gxcore.profiles import ProfileCatalog
from gxcore.readings import Reading
from gxcore.secrets import Secret

PASSWORD = "s3cret-Pw"


def _job(meter_id: str, port: int, **kw: object) -> ReadJob:
    now = datetime.now(UTC)
    url = f"tcp://127.0.0.1:{port}"
    fields: dict[str, object] = {
        "job_id": uuid.uuid4().hex,
        "meter_id": meter_id,
        "link_id": url,
        "protocol": "dlms",
        "url": url,
        "profile": "generic-dlms",
        "options": {"authentication": "low"},
        "purposes": ["billing"],
        "issued_at": now,
        "deadline": now + timedelta(minutes=5),
    }
    fields.update(kw)
    return ReadJob.model_validate(fields)


def _reader(password: str = PASSWORD, exchange_timeout: float = 1.0) -> MeterReader:
    return MeterReader(
        ProfileCatalog(),
        SecretStore(default={"password": Secret(password)}),
        exchange_timeout=exchange_timeout,
        session_timeout=30,
    )


async def test_a_silent_meter_times_out_without_holding_up_the_others() -> None:
    async with DlmsFleetSimulator(3, seed=3, authentication="low", password=PASSWORD, silent_meters={1}) as sim:
        reader = _reader(exchange_timeout=1.0)
        t0 = time.monotonic()
        outcomes = await asyncio.gather(*(reader.run(_job(m.meter_id, m.port)) for m in sim.meters))
        elapsed = time.monotonic() - t0
    ok, silent, ok2 = (o.result for o in outcomes)
    assert ok.status is JobStatus.OK and ok2.status is JobStatus.OK
    assert ok.readings_count == 2 and outcomes[0].batch is not None
    assert silent.status is JobStatus.ERROR
    assert silent.error_kind == "timeout"
    assert silent.meter_id in (silent.error_message or "")
    assert elapsed < 5, "the silent meter held the others up"
    assert (silent.finished_at - silent.started_at).total_seconds() < 3


async def test_wrong_password_and_expired_jobs_are_typed_errors() -> None:
    async with DlmsFleetSimulator(1, seed=3, authentication="low", password=PASSWORD) as sim:
        m = sim.meters[0]
        denied = await _reader(password="wrong-one").run(_job(m.meter_id, m.port))
        expired = await _reader().run(_job(m.meter_id, m.port, deadline=datetime.now(UTC) - timedelta(seconds=1)))
        unknown = await _reader().run(_job(m.meter_id, m.port, profile="no-such-profile"))
    assert (denied.result.status, denied.result.error_kind) == (JobStatus.ERROR, "access-denied")
    assert "wrong-one" not in (denied.result.error_message or "")
    assert expired.result.error_kind == "expired"
    assert unknown.result.error_kind == "configuration"
    assert "no-such-profile" in (unknown.result.error_message or "")


@pytest.mark.integration
async def test_collector_service_publishes_readings_results_and_dead_letters(
    stack: StackEndpoints, topic_prefix: str
) -> None:
    s = CollectorSettings(
        kafka_bootstrap=stack.kafka_bootstrap,
        kafka_enable_idempotence=stack.kafka_enable_idempotence,
        consumer_group=f"{topic_prefix}collector",
        exchange_timeout_s=1.0,
        kafka_session_timeout_ms=2000,
        kafka_heartbeat_interval_ms=500,
        topic_overrides={
            n: f"{topic_prefix}{n}" for n in ("ami.read-jobs", "ami.readings", "ami.job-results", "ami.dead-letter")
        },
    )
    await ensure_topics(s, ["ami.read-jobs", "ami.readings", "ami.job-results", "ami.dead-letter"])
    async with DlmsFleetSimulator(4, seed=5, authentication="low", password=PASSWORD, silent_meters={2}) as sim:
        jobs = [_job(m.meter_id, m.port) for m in sim.meters]
        producer = make_producer(s)
        await producer.start()
        try:
            for j in jobs:
                await producer.send_and_wait(
                    s.topic("ami.read-jobs"), j.model_dump_json().encode(), key=j.link_id.encode()
                )
            await producer.send_and_wait(s.topic("ami.read-jobs"), b'{"job_id": 1}', key=b"x")
        finally:
            await producer.stop()
        stop = asyncio.Event()
        task = asyncio.create_task(Collector(s, _reader(exchange_timeout=1.0)).run(stop))
        out = make_consumer(
            s, f"{topic_prefix}check", s.topic("ami.job-results"), s.topic("ami.readings"), s.topic("ami.dead-letter")
        )
        await out.start()
        results: dict[str, JobResult] = {}
        batches: list[ReadingBatch] = []
        letters: list[DeadLetter] = []
        try:
            deadline = asyncio.get_running_loop().time() + 60
            while (len(results) < 4 or not letters) and asyncio.get_running_loop().time() < deadline:
                for tp, recs in (await out.getmany(timeout_ms=300)).items():
                    for r in recs:
                        if tp.topic == s.topic("ami.job-results"):
                            jr = JobResult.model_validate_json(r.value)
                            results[jr.meter_id] = jr
                        elif tp.topic == s.topic("ami.readings"):
                            batches.append(ReadingBatch.model_validate_json(r.value))
                        else:
                            letters.append(DeadLetter.model_validate_json(r.value))
        finally:
            await out.stop()
            stop.set()
            await asyncio.wait_for(task, 30)
    sim_ids = [j.meter_id for j in jobs]
    silent_id = sim_ids[2]
    assert results[silent_id].error_kind == "timeout"
    assert all(results[m].status is JobStatus.OK for m in sim_ids if m != silent_id)
    assert {b.meter_id for b in batches} == set(sim_ids) - {silent_id}
    assert all(b.count == 2 for b in batches)
    assert len(letters) == 1
    assert letters[0].consumer == "collector"
    assert "job_id" in letters[0].reason


async def test_ciphered_meter_counters_survive_a_collector_restart(tmp_path: Path) -> None:
    import json

    from gxami_meterlab.simulators.dlms import meter_secrets, meter_system_title

    counters = tmp_path / "counters.json"
    async with DlmsFleetSimulator(1, seed=4, authentication="high-gmac") as sim:
        m = sim.meters[0]
        keys = meter_secrets(4, 0)
        store = SecretStore(meters={m.meter_id: {k: Secret(v) for k, v in keys.items()}})
        options = {"authentication": "high-gmac", "client": "1", "server_system_title": meter_system_title(4, 0).hex()}
        results = []
        for _ in range(2):  # two collector "processes" sharing the counters file
            reader = MeterReader(
                ProfileCatalog(), store, exchange_timeout=2, session_timeout=30, invocation_counters=counters
            )
            results.append(await reader.run(_job(m.meter_id, m.port, options=options)))
            saved = json.loads(counters.read_text())
            assert saved, "the counter store was written"
    assert all(r.result.status is JobStatus.OK for r in results), [r.result.error_message for r in results]
    assert keys["key"] not in counters.read_text()


class _FarFutureClockDriver:
    """A driver whose meter reports a clock beyond what the contract carries (9999-12-31)."""

    name = "far-future-clock"

    def validate_profile(self, profile: object) -> None:
        return None

    async def read(self, target: object, profile: object, request: object, *, timeout: float) -> ReadResult:
        now = datetime.now(UTC)
        return ReadResult(
            readings=[Reading(quantity="1-0:1.8.0", ts=now, value=1.5, unit="kWh")],
            meter_time=datetime(9999, 12, 31, 23, 0, tzinfo=UTC),
        )


async def test_a_meter_clock_outside_the_contract_keeps_the_readings_and_the_result() -> None:
    reader = _reader()
    reader._drivers["dlms"] = _FarFutureClockDriver()  # type: ignore[assignment]  # a stand-in meter
    outcome = await reader.run(_job("FAR0001", 1))
    assert outcome.result.status is JobStatus.OK, outcome.result.error_message
    assert outcome.result.meter_time is None
    assert outcome.batch is not None and outcome.batch.count == 1
