"""Ingest: readings per second from Kafka to committed rows, against a plain binary COPY of the same rows.

One ``python -m gxami_ingest`` process (the service as deployed, deduplicating merge on)
consumes ``N`` readings that were produced to a fresh topic beforehand, for meters
registered in a fresh database. Its rate is taken from its own counter of inserted
readings (``/metrics``, polled every 20 ms): from the first committed batch to the last,
so process start, migration and the consumer-group join are not in the figure (they
are reported beside it as ``start_s``). The row count is checked to be exactly ``N``
afterwards.

The limit: ``asyncpg``'s ``copy_records_to_table`` of the same ``N`` rows, in one
transaction, into the readings table of another fresh database of the same schema,
timed after the ingest process has stopped. The issue wants ingest at >= 0.5 of it.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg

from bench.figures import Figure, RunContext, Size
from bench.stack import BenchStack, ServiceProcess
from gxami_contracts import ReadingBatch, ReadingValue
from gxami_ingest.writer import STAGING_COLUMNS, ReadingRow
from gxami_meterlab.devstack import StackEndpoints
from gxami_meterlab.devstack_procs import free_port
from gxami_runtime.kafka import ensure_topics, make_producer
from gxami_runtime.settings import ServiceSettings
from gxami_store import PartitionKeeper, migrate, storage_kind

QUANTITIES = ("1-0:1.8.0", "1-0:2.8.0")
STEP = timedelta(minutes=15)
POLL_S = 0.02


@dataclass(frozen=True, slots=True)
class Fleet:
    """``meters`` meters, each sending ``messages`` batches of ``intervals`` 15-minute rows of two registers."""

    meters: int
    messages: int
    intervals: int

    @classmethod
    def for_size(cls, size: Size) -> Fleet:
        # default: 1,000 meters x 8 batches x 100 readings = 800,000 readings; full: 2M
        return cls(size.pick(250, 1_000, 2_500), size.pick(2, 8, 8), 50)

    @property
    def readings(self) -> int:
        return self.meters * self.messages * self.intervals * len(QUANTITIES)

    def meter_id(self, m: int) -> str:
        return f"BENCH{m:06d}"

    def origin(self) -> datetime:
        """First interval: recent enough for ingest's "too far back" check, whole quarter-hours."""
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        now -= timedelta(minutes=now.minute % 15)
        return now - STEP * (self.messages * self.intervals + 4)

    def batches(self, origin: datetime) -> list[ReadingBatch]:
        out = []
        for k in range(self.messages):  # oldest first for every meter, as collectors send them
            for m in range(self.meters):
                first = k * self.intervals
                readings = [
                    ReadingValue(quantity=q, ts=origin + STEP * i, value=1000.0 + m + 0.25 * i + 500.0 * n, unit="kWh")
                    for i in range(first, first + self.intervals)
                    for n, q in enumerate(QUANTITIES)
                ]
                out.append(
                    ReadingBatch.of(
                        batch_id=f"b{k}-{m}",
                        meter_id=self.meter_id(m),
                        job_id=f"bench-{k}-{m}",
                        collected_at=origin + STEP * (first + self.intervals),
                        readings=readings,
                    )
                )
        return out


def rows_of(batches: list[ReadingBatch]) -> list[ReadingRow]:
    """The rows ingest stores for these batches (gxami_ingest.validation.check_batch's mapping)."""
    return [
        (b.meter_id, r.quantity, r.ts, r.value, r.unit, r.status or 0, b.job_id or b.batch_id)
        for b in batches
        for r in b.readings()
    ]


async def _prepare_database(dsn: str, fleet: Fleet, instants: list[datetime]) -> None:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await migrate(conn)
        keeper = PartitionKeeper()
        await keeper.load(conn, await storage_kind(conn))
        await keeper.ensure(conn, instants)
        await conn.executemany(
            "INSERT INTO meters (meter_id, protocol, url, link_id, profile, interval_s)"
            " VALUES ($1, $2, $3, $4, $5, 900)",
            [
                (fleet.meter_id(m), "dlms", f"tcp://bench:{m}", f"tcp://bench:{m}", "generic-dlms")
                for m in range(fleet.meters)
            ],
        )
    finally:
        await conn.close()


async def _produce(endpoints: StackEndpoints, topic: str, batches: list[ReadingBatch]) -> None:
    settings = ServiceSettings(
        kafka_bootstrap=endpoints.kafka_bootstrap, kafka_enable_idempotence=endpoints.kafka_enable_idempotence
    )
    producer = make_producer(settings)
    await producer.start()
    try:
        for start in range(0, len(batches), 500):
            futures = [
                await producer.send(topic, b.model_dump_json().encode(), key=b.meter_id.encode())
                for b in batches[start : start + 500]
            ]
            await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _inserted(http: aiohttp.ClientSession, port: int) -> float | None:
    """The service's inserted-readings counter, or None while it does not answer."""
    try:
        async with http.get(f"http://127.0.0.1:{port}/metrics", timeout=aiohttp.ClientTimeout(total=2)) as resp:
            text = await resp.text()
    except (aiohttp.ClientError, TimeoutError, OSError):
        return None
    for line in text.splitlines():
        if line.startswith('gxami_ingest_readings_total{outcome="inserted"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@dataclass(frozen=True, slots=True)
class IngestRun:
    steady_rate: float
    start_s: float
    total_s: float
    batches_seen: int


async def _run_ingest(ctx: RunContext, stack: BenchStack, dsn: str, topic: str, expected: int) -> IngestRun:
    endpoints = stack.endpoints()
    port = free_port("127.0.0.1")
    env = {
        **_base_env(),
        **endpoints.env(),
        "GXAMI_DATABASE_URL": dsn,
        "GXAMI_TOPIC_OVERRIDES": json.dumps({"ami.readings": topic, "ami.dead-letter": f"{topic}.dlq"}),
        "GXAMI_CONSUMER_GROUP": f"{topic}.ingest",
        "GXAMI_HTTP_PORT": str(port),
        "GXAMI_LOG_LEVEL": "WARNING",
        "GXAMI_INSTANCE": "bench",
    }
    started = time.perf_counter()
    service = ServiceProcess("gxami_ingest", env, stack.scratch("ingest") / f"{topic}.log")
    samples: list[tuple[float, float]] = []
    deadline = started + max(120.0, expected / 1_000)
    try:
        async with aiohttp.ClientSession() as http:
            while True:
                if not service.running():
                    raise RuntimeError(f"ingest exited with {service.proc.returncode}:\n{service.tail()}")
                if time.perf_counter() > deadline:
                    raise RuntimeError(
                        f"ingest stored {samples[-1][1] if samples else 0:.0f} of {expected} readings"
                        f" before the deadline:\n{service.tail()}"
                    )
                count = await _inserted(http, port)
                if count is not None and count > 0:
                    samples.append((time.perf_counter(), count))
                    if count >= expected:
                        break
                await asyncio.sleep(POLL_S)
    finally:
        code = await asyncio.to_thread(service.stop)
        if code not in (0, -15):
            ctx.note(f"ingest exited with {code}; log tail:\n{service.tail()}")
    (t_first, c_first), (t_last, c_last) = samples[0], samples[-1]
    steps = len({c for _, c in samples})
    if c_last <= c_first or steps < 2:
        raise RuntimeError(f"ingest stored everything in one batch ({c_last:.0f} readings); make the fleet larger")
    return IngestRun((c_last - c_first) / (t_last - t_first), t_first - started, t_last - started, steps)


def _base_env() -> dict[str, str]:
    """This process's environment without GXAMI_* settings: the service gets only the bench's."""
    return {k: v for k, v in os.environ.items() if not k.startswith("GXAMI_")}


async def _copy_rate(dsn: str, rows: list[ReadingRow], fleet: Fleet, instants: list[datetime]) -> float:
    await _prepare_database(dsn, fleet, instants)
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        start = time.perf_counter()
        async with conn.transaction():
            await conn.execute("SET LOCAL synchronous_commit = on")
            await conn.copy_records_to_table("readings", records=rows, columns=STAGING_COLUMNS)
        elapsed = time.perf_counter() - start
        stored = int(await conn.fetchval("SELECT count(*) FROM readings"))
    finally:
        await conn.close()
    if stored != len(rows):
        raise RuntimeError(f"COPY stored {stored} of {len(rows)} rows")
    return len(rows) / elapsed


async def _ingest_figure(ctx: RunContext) -> Figure:
    stack = ctx.stack()
    endpoints = stack.endpoints()
    fleet = Fleet.for_size(ctx.size)
    origin = fleet.origin()
    instants = [origin, origin + STEP * fleet.messages * fleet.intervals]
    ctx.note(f"ingest: building {fleet.readings} readings in {fleet.meters * fleet.messages} batches")
    batches = await asyncio.to_thread(fleet.batches, origin)
    rows = rows_of(batches)
    topic = f"bench.{uuid.uuid4().hex[:8]}.readings"
    settings = ServiceSettings(
        kafka_bootstrap=endpoints.kafka_bootstrap,
        kafka_enable_idempotence=endpoints.kafka_enable_idempotence,
        topic_overrides={"ami.readings": topic, "ami.dead-letter": f"{topic}.dlq"},
    )
    await ensure_topics(settings, ["ami.readings", "ami.dead-letter"])
    ctx.note(f"ingest: producing to {topic}")
    await _produce(endpoints, topic, batches)
    del batches
    async with stack.database("ingest") as dsn:
        await _prepare_database(dsn, fleet, instants)
        ctx.note("ingest: running python -m gxami_ingest until every reading is committed")
        run = await _run_ingest(ctx, stack, dsn, topic, fleet.readings)
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            stored = int(await conn.fetchval("SELECT count(*) FROM readings"))
            buffers = str(await conn.fetchval("SHOW shared_buffers"))
        finally:
            await conn.close()
        if stored != fleet.readings:
            raise RuntimeError(f"ingest committed {stored} rows for {fleet.readings} readings")
    async with stack.database("copy") as dsn:
        ctx.note("ingest: timing a plain binary COPY of the same rows")
        copy = await _copy_rate(dsn, rows, fleet, instants)
    return Figure(
        "ingest_kafka_to_rows",
        run.steady_rate,
        "readings/s",
        copy,
        "higher",
        {
            "peer": "asyncpg copy_records_to_table of the same rows into a fresh readings table, one transaction",
            "readings": fleet.readings,
            "readings_per_message": fleet.intervals * len(QUANTITIES),
            "commits_seen": run.batches_seen,
            "start_s": round(run.start_s, 2),
            "total_s": round(run.total_s, 2),
            "dedup": "merge on (meter_id, quantity, ts)",
            "shared_buffers": buffers,
            "wanted_ratio": 0.5,
        },
    )


def run(ctx: RunContext) -> Iterator[Figure]:
    yield asyncio.run(_ingest_figure(ctx))
