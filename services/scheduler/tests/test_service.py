"""The running service: fleet API over HTTP, the tick loop and results consumer against the real broker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer

from gxami_contracts import DEAD_LETTER, DeadLetter, JobResult, JobStatus, ReadJob
from gxami_contracts.topics import JOB_RESULTS, READ_JOBS
from gxami_meterlab.devstack import StackEndpoints
from gxami_meterlab.devstack_procs import free_port
from gxami_runtime.auth import Authenticator, PoolTokens, revoke_token
from gxami_runtime.http import OpsServer
from gxami_runtime.kafka import DeadLetters, Publisher, ensure_topics, make_consumer, make_producer
from gxami_scheduler.api import FleetApi
from gxami_scheduler.app import Scheduler, serve
from gxami_scheduler.fleet import parse_fleet
from gxami_scheduler.metrics import SchedulerMetrics
from gxami_scheduler.registry import import_fleet
from gxami_scheduler.settings import SchedulerSettings
from gxcore.profiles import ProfileCatalog

from .conftest import T0

FLEET = """\
meter_id,protocol,address,profile,schedule,enabled
e1,dlms,tcp://10.0.0.1:4059,em-dlms,15m,true
e2,dlms,tcp://10.0.0.1:4059,em-dlms,15m,true
e3,modbus,serial:///dev/ttyUSB0?baud=9600,em-modbus,1h,true
off,dlms,tcp://10.0.0.2:4059,em-dlms,15m,false
"""
TIMEOUT = aiohttp.ClientTimeout(total=10)


async def _eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


@pytest_asyncio.fixture(loop_scope="function")
async def fleet_db(db: asyncpg.Connection, profiles: ProfileCatalog) -> AsyncIterator[asyncpg.Connection]:
    await import_fleet(db, parse_fleet("f.csv", FLEET, profiles), T0)
    yield db


async def test_fleet_api(fleet_db: asyncpg.Connection, database_url: str, tokens: dict[str, dict[str, str]]) -> None:
    now = T0 + timedelta(hours=1)
    await fleet_db.execute("UPDATE meter_schedule SET next_due_at = $1", now + timedelta(hours=1))
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    metrics = SchedulerMetrics()
    ops = OpsServer("127.0.0.1", 0, registry=metrics.registry, auth=Authenticator(PoolTokens(pool)))
    FleetApi(pool, lambda: now).install(ops.app)
    port = await ops.start()
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT, headers=tokens["operator"]) as http:
            async with http.get(f"{base}/meters", params={"limit": "3"}) as resp:
                assert resp.status == 200
                page = await resp.json()
            assert [m["meter_id"] for m in page["meters"]] == ["e1", "e2", "e3"]
            assert page["next"] == "e3"
            async with http.get(f"{base}/meters", params={"after": page["next"]}) as resp:
                rest = await resp.json()
            assert ([m["meter_id"] for m in rest["meters"]], rest["next"]) == (["off"], None)
            async with http.get(f"{base}/meters", params={"limit": "0"}) as resp:
                assert resp.status == 400
            async with http.get(f"{base}/meters/e3") as resp:
                e3 = await resp.json()
            assert (e3["protocol"], e3["link_id"], e3["interval_s"]) == ("modbus", "serial:///dev/ttyUSB0", 3600)
            assert e3["purposes"] == ["billing", "load-profile"]
            async with http.get(f"{base}/meters/nope") as resp:
                assert resp.status == 404
            async with http.post(f"{base}/meters/e1/read") as resp:
                assert resp.status == 202
                assert await resp.json() == {"meter_id": "e1", "status": "queued"}
            async with http.post(f"{base}/meters/nope/read") as resp:
                assert resp.status == 404
            async with http.post(f"{base}/meters/off/read") as resp:
                assert resp.status == 409
            async with http.get(f"{base}/metrics") as resp:
                text = await resp.text()
            assert "gxami_scheduler_meters_due 0.0" in text
            assert 'gxami_scheduler_job_results_total{status="error"} 0.0' in text
    finally:
        await ops.stop()
        await pool.close()
    assert await fleet_db.fetchval("SELECT next_due_at FROM meter_schedule WHERE meter_id = 'e1'") == now


async def test_service_fleet_api_needs_a_token_and_the_operator_role_to_write(
    stack_env: StackEndpoints,
    fleet_db: asyncpg.Connection,
    database_url: str,
    topic_prefix: str,
    tokens: dict[str, dict[str, str]],
) -> None:
    port = free_port()
    settings = _settings(stack_env, database_url, topic_prefix, http_port=port, http_auth_cache_s=1.0)
    stop = asyncio.Event()
    service = asyncio.create_task(serve(settings, stop))
    base = f"http://127.0.0.1:{port}"
    viewer, operator = tokens["viewer"], tokens["operator"]
    try:
        await _eventually(lambda: _ready(port))
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
            for method, path in (("GET", "/meters"), ("GET", "/meters/e1"), ("POST", "/meters/e1/read")):
                async with http.request(method, base + path) as resp:
                    assert resp.status == 401, path
                    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
                    assert "error" in await resp.json()
            async with http.get(f"{base}/meters/e1", headers=viewer) as resp:
                assert resp.status == 200
                assert (await resp.json())["meter_id"] == "e1"
            async with http.post(f"{base}/meters/e1/read", headers=viewer) as resp:
                assert resp.status == 403
                assert await resp.json() == {"error": "token 'test-viewer' has the viewer role; this needs operator"}
            async with http.post(f"{base}/meters/e1/read", headers=operator) as resp:
                assert resp.status == 202
                assert (await resp.json())["meter_id"] == "e1"  # queued, or in flight already: the ticks run
            assert await revoke_token(fleet_db, "test-operator")
            revoked_at = time.monotonic()

            async def refused() -> bool:
                async with http.get(f"{base}/meters", headers=operator) as resp:
                    return resp.status == 401

            await _eventually(refused, timeout=10)
            assert time.monotonic() - revoked_at < settings.http_auth_cache_s + 5  # the cache delay, not longer
            async with http.get(f"{base}/health") as resp:
                assert resp.status == 200  # open
    finally:
        stop.set()
        await asyncio.wait_for(service, timeout=15)


class _BrokenSender:
    async def send_many(self, logical_topic: str, items: object) -> None:
        raise OSError("broker gone")


async def test_failed_publish_releases_the_claim(fleet_db: asyncpg.Connection, database_url: str) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    metrics = SchedulerMetrics()
    later = T0 + timedelta(minutes=1)
    try:
        scheduler = Scheduler(SchedulerSettings(), pool, _BrokenSender(), metrics, clock=lambda: later)
        with pytest.raises(OSError, match="broker gone"):
            await scheduler.tick()
    finally:
        await pool.close()
    assert await fleet_db.fetchval("SELECT count(*) FROM meter_schedule WHERE in_flight_job IS NOT NULL") == 0
    assert metrics.publish_failures._value.get() == 1
    assert metrics.meters_due._value.get() == 3


@pytest.fixture
def stack_env(stack: StackEndpoints, monkeypatch: pytest.MonkeyPatch) -> StackEndpoints:
    """The stack's GXAMI_* settings in the environment (whatever the stack says its clients need)."""
    for key, value in stack.env().items():
        monkeypatch.setenv(key, value)
    return stack


def _settings(stack: StackEndpoints, database_url: str, prefix: str, **extra: object) -> SchedulerSettings:
    return SchedulerSettings(
        kafka_bootstrap=stack.kafka_bootstrap,
        database_url=database_url,
        topic_overrides={t: prefix + t for t in (READ_JOBS.name, JOB_RESULTS.name, DEAD_LETTER)},
        tick_seconds=0.1,
        job_timeout_s=60,
        results_group=prefix + "scheduler",
        **extra,
    )


async def test_service_emits_jobs_and_applies_results(
    stack_env: StackEndpoints, fleet_db: asyncpg.Connection, database_url: str, topic_prefix: str, profile_dir: Path
) -> None:
    port = free_port()
    settings = _settings(stack_env, database_url, topic_prefix, http_port=port, profile_dirs=[profile_dir])
    stop = asyncio.Event()
    service = asyncio.create_task(serve(settings, stop))
    consumer = _reader(settings, READ_JOBS.name)
    dead = _reader(settings, DEAD_LETTER)
    producer = make_producer(settings)
    try:
        await _eventually(lambda: _ready(port))
        await consumer.start()
        await dead.start()
        await producer.start()
        jobs: dict[str, tuple[bytes, ReadJob]] = {}
        deadline = time.monotonic() + 20
        while len(jobs) < 3 and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for r in records:
                    job = ReadJob.model_validate_json(r.value)
                    jobs[job.meter_id] = (r.key, job)
        assert set(jobs) == {"e1", "e2", "e3"}  # the disabled meter is never emitted
        assert jobs["e1"][0] == b"tcp://10.0.0.1:4059"  # keyed by link
        assert jobs["e3"][0] == b"serial:///dev/ttyUSB0"
        now = datetime.now(UTC)
        publisher = Publisher(producer, settings)
        for meter_id, status in (("e1", JobStatus.OK), ("e2", JobStatus.ERROR)):
            job = jobs[meter_id][1]
            result = JobResult(
                job_id=job.job_id,
                meter_id=meter_id,
                link_id=job.link_id,
                status=status,
                attempt=1,
                started_at=now,
                finished_at=now,
                readings_count=1,
                error_kind=None if status is JobStatus.OK else "MeterTimeoutError",
            )
            await publisher.send(JOB_RESULTS.name, meter_id, result)
        await producer.send_and_wait(settings.topic(JOB_RESULTS.name), b"{not json", key=b"e3")

        async def applied() -> bool:
            rows = await fleet_db.fetch(
                "SELECT meter_id FROM meter_schedule WHERE in_flight_job IS NULL AND meter_id IN ('e1', 'e2')"
            )
            return len(rows) == 2

        await _eventually(applied)
        e1 = await fleet_db.fetchrow("SELECT * FROM meter_schedule WHERE meter_id = 'e1'")
        e2 = await fleet_db.fetchrow("SELECT * FROM meter_schedule WHERE meter_id = 'e2'")
        assert e1 is not None
        assert e2 is not None
        assert e1["consecutive_failures"] == 0
        assert e1["last_success_at"] is not None
        assert int(e1["next_due_at"].timestamp()) % 900 == 0
        assert e2["consecutive_failures"] == 1
        assert e2["last_error_kind"] == "MeterTimeoutError"

        letters: list[DeadLetter] = []
        deadline = time.monotonic() + 15
        while not letters and time.monotonic() < deadline:
            for records in (await dead.getmany(timeout_ms=200)).values():
                letters += [DeadLetter.model_validate_json(r.value) for r in records]
        assert letters
        assert letters[0].consumer == "scheduler"
        assert letters[0].key == "e3"

        async with aiohttp.ClientSession(timeout=TIMEOUT) as http, http.get(f"http://127.0.0.1:{port}/metrics") as resp:
            text = await resp.text()
        assert "gxami_scheduler_jobs_emitted_total 3.0" in text
        assert 'gxami_scheduler_job_results_total{status="ok"} 1.0' in text
        assert 'gxami_scheduler_job_results_total{status="error"} 1.0' in text
        assert "gxami_scheduler_tick_seconds_count" in text
    finally:
        stop.set()
        await asyncio.wait_for(service, timeout=15)  # returns normally: a clean stop
        await consumer.stop()
        await dead.stop()
        await producer.stop()


def _reader(settings: SchedulerSettings, logical: str) -> AIOKafkaConsumer:
    """A group-less consumer from the start of a topic (no group join to wait for)."""
    return AIOKafkaConsumer(
        settings.topic(logical),
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )


async def _ready(port: int) -> bool:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as http,
            http.get(f"http://127.0.0.1:{port}/ready") as resp,
        ):
            return resp.status == 200 and bool((await resp.json())["ready"])
    except (aiohttp.ClientError, TimeoutError):
        return False


class _FlakyPool:
    """A pool whose first acquire fails as if the database were restarting."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self.failures = 0

    def acquire(self) -> object:
        if self.failures == 0:
            self.failures += 1
            raise OSError("connection refused (database restarting)")
        return self._pool.acquire()


async def test_results_batch_failing_on_the_database_is_read_again(
    stack_env: StackEndpoints, fleet_db: asyncpg.Connection, database_url: str, topic_prefix: str
) -> None:
    settings = _settings(stack_env, database_url, topic_prefix)
    await ensure_topics(settings, [JOB_RESULTS.name, DEAD_LETTER])
    producer = make_producer(settings)
    await producer.start()
    now = datetime.now(UTC)
    try:
        publisher = Publisher(producer, settings)
        for n in range(3):
            result = JobResult(
                job_id=f"j{n}",
                meter_id="e1",
                link_id="l",
                status=JobStatus.OK,
                attempt=1,
                started_at=now,
                finished_at=now,
                readings_count=1,
            )
            await publisher.send(JOB_RESULTS.name, "e1", result)
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        flaky = _FlakyPool(pool)
        scheduler = Scheduler(settings, flaky, publisher, SchedulerMetrics())  # type: ignore[arg-type]  # test double
        scheduler.results_retry_s = 0.1
        consumer = make_consumer(settings, settings.results_group, settings.topic(JOB_RESULTS.name))
        stop = asyncio.Event()
        task = asyncio.create_task(scheduler.run_results(consumer, DeadLetters(publisher, "scheduler"), stop))
        try:

            async def all_stored() -> bool:
                return await fleet_db.fetchval("SELECT count(*) FROM job_results") == 3

            await _eventually(all_stored, timeout=20)
            assert flaky.failures == 1
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=15)
            await consumer.stop()
            await pool.close()
    finally:
        await producer.stop()
