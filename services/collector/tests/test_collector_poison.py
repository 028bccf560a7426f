"""A read job too large to handle is dead-lettered (cut to a prefix) and the collector serves the next job."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaProducer

from gxami_collector.app import Collector
from gxami_collector.jobs import JobOutcome, MeterReader
from gxami_collector.secret_store import SecretStore
from gxami_collector.settings import CollectorSettings
from gxami_contracts import DeadLetter, JobResult, JobStatus, ReadJob
from gxami_meterlab.devstack import StackEndpoints
from gxami_meterlab.simulators.dlms import DlmsFleetSimulator
from gxami_runtime.kafka import DEAD_LETTER_ORIGINAL_BYTES, ensure_topics, make_consumer, make_producer
from gxcore.profiles import ProfileCatalog
from gxcore.secrets import Secret

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-Pw"
TOPICS = ("ami.read-jobs", "ami.readings", "ami.job-results", "ami.dead-letter", "ami.events")


async def test_a_5_mib_read_job_is_dead_lettered_and_the_next_job_is_read(
    stack: StackEndpoints, topic_prefix: str
) -> None:
    s = CollectorSettings(
        kafka_bootstrap=stack.kafka_bootstrap,
        kafka_enable_idempotence=stack.kafka_enable_idempotence,
        consumer_group=f"{topic_prefix}collector",
        exchange_timeout_s=1.0,
        kafka_session_timeout_ms=2000,
        kafka_heartbeat_interval_ms=500,
        topic_overrides={n: f"{topic_prefix}{n}" for n in TOPICS},
    )
    await ensure_topics(s, list(TOPICS))
    async with DlmsFleetSimulator(1, seed=7, authentication="low", password=PASSWORD) as sim:
        meter = sim.meters[0]
        url = f"tcp://127.0.0.1:{meter.port}"
        now = datetime.now(UTC)
        job = ReadJob(
            job_id=uuid.uuid4().hex,
            meter_id=meter.meter_id,
            link_id=url,
            protocol="dlms",
            url=url,
            profile="generic-dlms",
            options={"authentication": "low"},
            issued_at=now,
            deadline=now + timedelta(minutes=5),
        )
        # A well-formed job padded to 5 MiB: one link key, so both land on one partition, in order.
        huge = job.model_dump_json().encode()[:-1] + b', "pad": "' + b"x" * (5 << 20) + b'"}'
        producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, max_request_size=8 << 20, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(s.topic("ami.read-jobs"), huge, key=url.encode())
            await producer.send_and_wait(s.topic("ami.read-jobs"), job.model_dump_json().encode(), key=url.encode())
        finally:
            await producer.stop()
        reader = MeterReader(
            ProfileCatalog(),
            SecretStore(default={"password": Secret(PASSWORD)}),
            exchange_timeout=1.0,
            session_timeout=30,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(Collector(s, reader).run(stop))
        out = make_consumer(s, f"{topic_prefix}check", s.topic("ami.job-results"), s.topic("ami.dead-letter"))
        await out.start()
        results: list[JobResult] = []
        letters: list[DeadLetter] = []
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while (not results or not letters) and loop.time() < deadline:
                assert not task.done(), task.exception()
                for tp, recs in (await out.getmany(timeout_ms=300)).items():
                    for r in recs:
                        if tp.topic == s.topic("ami.job-results"):
                            results.append(JobResult.model_validate_json(r.value))
                        else:
                            letters.append(DeadLetter.model_validate_json(r.value))
            assert not task.done(), task.exception()  # still serving
        finally:
            await out.stop()
            stop.set()
            await asyncio.wait_for(task, 30)
    [letter] = letters
    assert letter.consumer == "collector" and letter.source_topic == s.topic("ami.read-jobs")
    assert letter.reason == f"too large: {len(huge)} bytes, over the {64 * 1024}-byte bound of ReadJob"
    assert letter.original_truncated and letter.original_size == len(huge)
    assert letter.original_sha256 == hashlib.sha256(huge).hexdigest()
    assert huge.startswith(base64.b64decode(letter.original_b64))
    assert len(base64.b64decode(letter.original_b64)) == DEAD_LETTER_ORIGINAL_BYTES
    assert [(r.job_id, r.status) for r in results] == [(job.job_id, JobStatus.OK)]


class _BuggyReader(MeterReader):
    """The real reader, with a bug injected for one meter (what an unexpected error in a session looks like)."""

    async def run(self, job: ReadJob) -> JobOutcome:
        if job.meter_id == "BOOM":
            raise RuntimeError("secret-looking detail that must not be logged")
        return await super().run(job)


async def test_a_job_that_fails_inside_the_collector_is_dead_lettered_and_the_others_done(
    stack: StackEndpoints, topic_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    s = CollectorSettings(
        kafka_bootstrap=stack.kafka_bootstrap,
        kafka_enable_idempotence=stack.kafka_enable_idempotence,
        consumer_group=f"{topic_prefix}collector",
        exchange_timeout_s=1.0,
        kafka_session_timeout_ms=2000,
        kafka_heartbeat_interval_ms=500,
        topic_overrides={n: f"{topic_prefix}{n}" for n in TOPICS},
    )
    await ensure_topics(s, list(TOPICS))
    async with DlmsFleetSimulator(1, seed=8, authentication="low", password=PASSWORD) as sim:
        meter = sim.meters[0]
        url = f"tcp://127.0.0.1:{meter.port}"
        now = datetime.now(UTC)
        jobs = [
            ReadJob(
                job_id=uuid.uuid4().hex,
                meter_id=meter_id,
                link_id=url,
                protocol="dlms",
                url=url,
                profile="generic-dlms",
                options={"authentication": "low"},
                issued_at=now,
                deadline=now + timedelta(minutes=5),
            )
            for meter_id in ("BOOM", meter.meter_id)
        ]
        producer = make_producer(s)
        await producer.start()
        try:
            for job in jobs:
                await producer.send_and_wait(s.topic("ami.read-jobs"), job.model_dump_json().encode(), key=url.encode())
        finally:
            await producer.stop()
        reader = _BuggyReader(
            ProfileCatalog(),
            SecretStore(default={"password": Secret(PASSWORD)}),
            exchange_timeout=1.0,
            session_timeout=30,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(Collector(s, reader).run(stop))
        out = make_consumer(s, f"{topic_prefix}check", s.topic("ami.job-results"), s.topic("ami.dead-letter"))
        await out.start()
        results: list[JobResult] = []
        letters: list[DeadLetter] = []
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while (not results or not letters) and loop.time() < deadline:
                assert not task.done(), task.exception()
                for tp, recs in (await out.getmany(timeout_ms=300)).items():
                    for r in recs:
                        if tp.topic == s.topic("ami.job-results"):
                            results.append(JobResult.model_validate_json(r.value))
                        else:
                            letters.append(DeadLetter.model_validate_json(r.value))
            assert not task.done(), task.exception()
        finally:
            await out.stop()
            stop.set()
            await asyncio.wait_for(task, 30)
    [letter] = letters
    assert letter.reason == "collector failed on this job: RuntimeError"
    assert ReadJob.model_validate_json(base64.b64decode(letter.original_b64)).meter_id == "BOOM"
    assert [(r.meter_id, r.status) for r in results] == [(meter.meter_id, JobStatus.OK)]
    assert not any("secret-looking" in r.getMessage() or "secret-looking" in str(r.__dict__) for r in caplog.records)
