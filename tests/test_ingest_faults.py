"""Ingest under faults, as a separate process: SIGKILL at random moments, and a database outage.
Afterwards the table must hold every reading exactly once."""

from __future__ import annotations

import asyncio
import json
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from gxami_contracts import ReadingBatch, ReadingValue
from gxami_meterlab.cli_procs import ServiceProcess, gxami_argv, service_env
from gxami_meterlab.devstack import DevStack, StackEndpoints
from gxami_meterlab.devstack_procs import free_port
from gxami_runtime.kafka import ensure_topics, make_producer
from gxami_runtime.settings import ServiceSettings
from gxami_store import migrate

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

T0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=120)
PER_BATCH = 100


def _value(meter: int, i: int) -> float:
    return meter * 1_000_000 + i * 0.25


def _batches(meters: int, per_meter: int, start_batch: int = 0) -> list[tuple[str, ReadingBatch]]:
    out = []
    for m in range(meters):
        mid = f"M{m:04d}"
        for b in range(start_batch, start_batch + per_meter // PER_BATCH):
            readings = [
                ReadingValue(quantity="1-0:1.8.0", ts=T0 + timedelta(minutes=15 * i), value=_value(m, i), unit="kWh")
                for i in range(b * PER_BATCH, (b + 1) * PER_BATCH)
            ]
            out.append(
                (
                    mid,
                    ReadingBatch.of(
                        batch_id=f"{mid}-{b}", meter_id=mid, job_id=f"{mid}-{b}", collected_at=T0, readings=readings
                    ),
                )
            )
    return out


async def _prepare(dsn: str, settings: ServiceSettings, meters: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        await conn.executemany(
            "INSERT INTO meters (meter_id, protocol, url, link_id, profile, interval_s) VALUES ($1,'dlms','tcp://x:1','l','p',900)",
            [(f"M{m:04d}",) for m in range(meters)],
        )
    finally:
        await conn.close()
    await ensure_topics(settings, ["ami.readings", "ami.dead-letter"])


async def _produce(settings: ServiceSettings, items: list[tuple[str, ReadingBatch]]) -> None:
    producer = make_producer(settings)
    await producer.start()
    try:
        futures = [
            await producer.send(settings.topic("ami.readings"), b.model_dump_json().encode(), key=k.encode())
            for k, b in items
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _stats(dsn: str) -> tuple[int, int, float, int]:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        rec = await conn.fetchrow(
            "SELECT count(*) AS n, count(DISTINCT (meter_id, ts)) AS d, coalesce(sum(value), 0) AS s,"
            " (SELECT count(*) FROM reading_revisions) AS r FROM readings"
        )
        assert rec is not None
        return int(rec["n"]), int(rec["d"]), float(rec["s"]), int(rec["r"])
    finally:
        await conn.close()


def _count(dsn: str) -> int:
    try:
        return asyncio.run(_stats(dsn))[0]
    except (OSError, asyncpg.PostgresError):
        return -1


def _expected_sum(meters: int, per_meter: int) -> float:
    return sum(_value(m, i) for m in range(meters) for i in range(per_meter))


def _env(endpoints: StackEndpoints, dsn: str, prefix: str) -> dict[str, str]:
    return {
        **endpoints.env(),
        "GXAMI_DATABASE_URL": dsn,
        "GXAMI_CONSUMER_GROUP": f"{prefix}ingest",
        "GXAMI_TOPIC_OVERRIDES": json.dumps({"ami.readings": f"{prefix}readings", "ami.dead-letter": f"{prefix}dlq"}),
        "GXAMI_BATCH_MAX_READINGS": "2000",
        "GXAMI_BATCH_MAX_AGE_MS": "100",
        "GXAMI_DB_RETRY_MAX_S": "2",
    }


def _settings(env: dict[str, str]) -> ServiceSettings:
    return ServiceSettings(
        kafka_bootstrap=env["GXAMI_KAFKA_BOOTSTRAP"],
        kafka_enable_idempotence=False,
        topic_overrides=json.loads(env["GXAMI_TOPIC_OVERRIDES"]),
    )


def test_twenty_sigkills_during_200k_readings_lose_and_double_nothing(
    stack: StackEndpoints, database_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    meters, per_meter = 20, 10_000  # 200,000 readings
    env = _env(stack, database_url, topic_prefix)
    asyncio.run(_prepare(database_url, _settings(env), meters))
    asyncio.run(_produce(_settings(env), _batches(meters, per_meter)))
    rng = random.Random(20)

    def spawn() -> ServiceProcess:
        p = ServiceProcess(
            "ingest", gxami_argv("ingest"), service_env(env, free_port(), "ingest"), tmp_path / "ingest.log"
        )
        p.start()
        return p

    ingest = spawn()
    try:
        for _ in range(20):
            before = _count(database_url)
            deadline = time.monotonic() + 60
            while _count(database_url) <= before and before < meters * per_meter:
                assert time.monotonic() < deadline, (tmp_path / "ingest.log").read_text()[-2000:]
                assert ingest.alive(), (tmp_path / "ingest.log").read_text()[-2000:]
                time.sleep(0.05)
            time.sleep(rng.uniform(0, 0.4))  # a random moment mid-stream
            ingest.kill()
            ingest = spawn()
        deadline = time.monotonic() + 180
        while _count(database_url) < meters * per_meter:
            assert time.monotonic() < deadline, f"stuck at {_count(database_url)} rows"
            assert ingest.alive(), (tmp_path / "ingest.log").read_text()[-2000:]
            time.sleep(0.2)
        time.sleep(1.0)  # anything doubled would show up now
        n, distinct, total, revisions = asyncio.run(_stats(database_url))
    finally:
        ingest.stop()
    assert n == distinct == meters * per_meter
    assert revisions == 0
    assert total == pytest.approx(_expected_sum(meters, per_meter), rel=1e-12)


def test_database_outage_of_60_seconds_mid_stream_loses_nothing(topic_prefix: str, tmp_path: Path) -> None:
    meters, per_meter = 10, 2_000
    with DevStack(tmp_path / "stack") as own:
        env = _env(own.endpoints, own.database_url, topic_prefix)
        settings = _settings(env)
        asyncio.run(_prepare(own.database_url, settings, meters))
        asyncio.run(_produce(settings, _batches(meters, per_meter // 2)))
        ingest = ServiceProcess(
            "ingest", gxami_argv("ingest"), service_env(env, free_port(), "ingest"), tmp_path / "ingest.log"
        )
        ingest.start()
        try:
            deadline = time.monotonic() + 60
            while _count(own.database_url) < meters * per_meter // 2:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            own.stop_database()
            # the second half arrives while the database is down
            asyncio.run(_produce(settings, _batches(meters, per_meter // 2, start_batch=per_meter // 2 // PER_BATCH)))
            time.sleep(60)
            assert ingest.alive(), "ingest must wait for the database, not exit"
            own.start_database()
            deadline = time.monotonic() + 90
            while _count(own.database_url) < meters * per_meter:
                assert time.monotonic() < deadline, f"stuck at {_count(own.database_url)}"
                assert ingest.alive()
                time.sleep(0.2)
            n, distinct, total, revisions = asyncio.run(_stats(own.database_url))
            code = ingest.stop()
        finally:
            ingest.stop()
    assert n == distinct == meters * per_meter
    assert revisions == 0
    assert total == pytest.approx(_expected_sum(meters, per_meter), rel=1e-12)
    assert code == 0
    assert "database unavailable; retrying" in (tmp_path / "ingest.log").read_text()


def test_two_replicas_in_one_group_with_kills_store_everything_once(
    stack: StackEndpoints, database_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    """Rebalances hand meters from one replica to the other mid-batch: no deadlock, nothing doubled."""
    meters, per_meter = 12, 5_000  # 60,000 readings
    env = _env(stack, database_url, topic_prefix)
    asyncio.run(_prepare(database_url, _settings(env), meters))
    asyncio.run(_produce(_settings(env), _batches(meters, per_meter)))
    rng = random.Random(2)

    def spawn(name: str) -> ServiceProcess:
        p = ServiceProcess(name, gxami_argv("ingest"), service_env(env, free_port(), name), tmp_path / f"{name}.log")
        p.start()
        return p

    replicas = {"a": spawn("ingest-a"), "b": spawn("ingest-b")}
    try:
        for i in range(6):
            before = _count(database_url)
            deadline = time.monotonic() + 60
            while _count(database_url) <= before and before < meters * per_meter:
                assert time.monotonic() < deadline, "no progress with two replicas"
                time.sleep(0.05)
            time.sleep(rng.uniform(0, 0.3))
            victim = "ab"[i % 2]
            replicas[victim].kill()
            replicas[victim] = spawn(f"ingest-{victim}")
        deadline = time.monotonic() + 180
        while _count(database_url) < meters * per_meter:
            assert time.monotonic() < deadline, f"stuck at {_count(database_url)} rows"
            time.sleep(0.2)
        time.sleep(1.0)
        n, distinct, total, revisions = asyncio.run(_stats(database_url))
        logs = "".join((tmp_path / f"ingest-{k}.log").read_text() for k in "ab")
    finally:
        for p in replicas.values():
            p.stop()
    assert n == distinct == meters * per_meter
    assert revisions == 0
    assert total == pytest.approx(_expected_sum(meters, per_meter), rel=1e-12)
    assert "Traceback" not in logs
