"""A job result the database refuses for its data is dead-lettered; the results behind it are applied (issue 14).

On the old code the results consumer re-read the failing batch forever, so no later result
moved any meter's schedule.
"""

from __future__ import annotations

import asyncio
import base64
import time
from datetime import UTC, datetime

import asyncpg
import pytest

from gxami_contracts import DEAD_LETTER, DeadLetter, JobResult, JobStatus
from gxami_contracts.topics import JOB_RESULTS, READ_JOBS
from gxami_meterlab.devstack import StackEndpoints
from gxami_runtime.kafka import DeadLetters, Publisher, ensure_topics, make_consumer, make_producer
from gxami_scheduler.app import Scheduler
from gxami_scheduler.metrics import SchedulerMetrics
from gxami_scheduler.settings import SchedulerSettings

pytestmark = pytest.mark.integration


async def test_a_result_the_database_refuses_is_dead_lettered_and_the_rest_applied(
    stack: StackEndpoints, db: asyncpg.Connection, database_url: str, topic_prefix: str
) -> None:
    # A rule the contract knows nothing about, so only the database can refuse the result.
    await db.execute("ALTER TABLE job_results ADD CONSTRAINT test_no_poison CHECK (error_kind <> 'poison')")
    settings = SchedulerSettings(
        kafka_bootstrap=stack.kafka_bootstrap,
        kafka_enable_idempotence=stack.kafka_enable_idempotence,
        kafka_session_timeout_ms=2000,
        kafka_heartbeat_interval_ms=500,
        database_url=database_url,
        topic_overrides={t: topic_prefix + t for t in (READ_JOBS.name, JOB_RESULTS.name, DEAD_LETTER)},
        results_group=topic_prefix + "scheduler",
    )
    await ensure_topics(settings, [JOB_RESULTS.name, DEAD_LETTER])
    now = datetime.now(UTC)
    producer = make_producer(settings)
    await producer.start()
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    consumer = make_consumer(settings, settings.results_group, settings.topic(JOB_RESULTS.name))
    letters = make_consumer(settings, topic_prefix + "dlq-reader", settings.topic(DEAD_LETTER))
    stop = asyncio.Event()
    task: asyncio.Task[None] | None = None
    try:
        publisher = Publisher(producer, settings)
        for n in range(5):
            result = JobResult(
                job_id=f"j{n}",
                meter_id="e1",
                link_id="l",
                status=JobStatus.ERROR,
                attempt=1,
                started_at=now,
                finished_at=now,
                readings_count=0,
                error_kind="poison" if n == 2 else "timeout",
            )
            await publisher.send(JOB_RESULTS.name, "e1", result)
        scheduler = Scheduler(settings, pool, publisher, SchedulerMetrics())
        scheduler.results_retry_s = 0.1
        task = asyncio.create_task(scheduler.run_results(consumer, DeadLetters(publisher, "scheduler"), stop))
        await letters.start()
        got: list[DeadLetter] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert not task.done(), task.exception()
            for recs in (await letters.getmany(timeout_ms=300)).values():
                got.extend(DeadLetter.model_validate_json(r.value) for r in recs)
            if got and await db.fetchval("SELECT count(*) FROM job_results") == 4:
                break
        stored = [r["job_id"] for r in await db.fetch("SELECT job_id FROM job_results ORDER BY job_id")]
        assert stored == ["j0", "j1", "j3", "j4"]
        [letter] = got
        assert letter.consumer == "scheduler" and letter.source_topic == settings.topic(JOB_RESULTS.name)
        assert "CheckViolationError (SQLSTATE 23514)" in letter.reason and "test_no_poison" in letter.reason
        assert JobResult.model_validate_json(base64.b64decode(letter.original_b64)).job_id == "j2"
    finally:
        stop.set()
        if task is not None:
            await asyncio.wait_for(task, timeout=15)
        await letters.stop()
        await consumer.stop()
        await pool.close()
        await producer.stop()
