"""The write path against a real PostgreSQL: COPY + merge, dedupe, revisions, partitions."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from gxami_contracts import ReadingBatch, ReadingValue
from gxami_ingest.validation import BatchRejectedError, check_batch
from gxami_ingest.writer import write_readings
from gxami_store import PartitionKeeper, migrate, storage_kind
from gxami_store.partitions import existing_partitions

T0 = datetime(2026, 11, 1, tzinfo=UTC)

pytestmark = pytest.mark.integration


async def _ready(dsn: str) -> tuple[asyncpg.Connection, PartitionKeeper]:
    conn = await asyncpg.connect(dsn)
    await migrate(conn)
    keeper = PartitionKeeper()
    await keeper.load(conn, await storage_kind(conn))
    return conn, keeper


def _rows(n: int, value: float = 1.0, start: datetime = T0) -> list[tuple]:  # type: ignore[type-arg]
    return [("M1", "1-0:1.8.0", start + timedelta(minutes=15 * i), value + i, "kWh", 0, "job-1") for i in range(n)]


async def test_redelivery_is_a_no_op_and_differences_become_revisions(database_url: str) -> None:
    conn, keeper = await _ready(database_url)
    try:
        first = await write_readings(conn, _rows(100), keeper)
        assert (first.inserted, first.duplicates, first.revisions) == (100, 0, 0)
        again = await write_readings(conn, _rows(100), keeper)
        assert (again.inserted, again.duplicates, again.revisions) == (0, 100, 0)
        changed = _rows(100)
        changed[5] = (*changed[5][:3], 999.0, *changed[5][4:])
        third = await write_readings(conn, changed, keeper)
        assert (third.inserted, third.duplicates, third.revisions) == (0, 99, 1)
        # the stored value is untouched; the different one is kept as a revision
        stored = await conn.fetchval("SELECT value FROM readings WHERE ts = $1", T0 + timedelta(minutes=75))
        assert stored == 6.0
        assert await conn.fetchval("SELECT value FROM reading_revisions") == 999.0
        # the same revision redelivered is not counted twice
        fourth = await write_readings(conn, changed, keeper)
        assert fourth.revisions == 0
        assert await conn.fetchval("SELECT count(*) FROM readings") == 100
    finally:
        await conn.close()


async def test_partitions_are_created_for_any_month_the_data_needs(database_url: str) -> None:
    conn, keeper = await _ready(database_url)
    try:
        if await storage_kind(conn) != "partitioned":
            pytest.fail("the local stack is plain PostgreSQL: expected native partitioning")
        old = datetime(2024, 2, 29, 23, 45, tzinfo=UTC)
        await write_readings(conn, _rows(4, start=old), keeper)
        names = {p.name for p in await existing_partitions(conn)}
        # daily partitions by default: the two days the readings straddle, and the day after
        assert {"readings_p20240229_20240301", "readings_p20240301_20240302", "readings_p20240302_20240303"} <= names
        assert await conn.fetchval("SELECT count(*) FROM readings") == 4
        # a second keeper (another pod) sees the existing partitions and does not fail
        other = PartitionKeeper()
        await other.load(conn, "partitioned")
        await write_readings(conn, _rows(4, start=old), other)
    finally:
        await conn.close()


def _batch(meter: str, ts: datetime, value: float = 1.0) -> ReadingBatch:
    return ReadingBatch.of(
        batch_id="b1",
        meter_id=meter,
        job_id="j1",
        collected_at=ts,
        readings=[ReadingValue(quantity="1-0:1.8.0", ts=ts, value=value, unit="kWh")],
    )


def test_validation_names_meter_and_reading() -> None:
    now = datetime(2026, 11, 26, tzinfo=UTC)
    kw = {"now": now, "max_future": timedelta(days=1), "max_past": timedelta(days=3650)}
    assert len(check_batch(_batch("M1", now), known_meters={"M1"}, **kw)) == 1  # type: ignore[arg-type]
    with pytest.raises(BatchRejectedError, match="unknown meter 'M2'"):
        check_batch(_batch("M2", now), known_meters={"M1"}, **kw)  # type: ignore[arg-type]
    with pytest.raises(BatchRejectedError, match=r"meter M1: series\[0\] \(1-0:1.8.0\) ts\[0\] is stamped in the fut"):
        check_batch(_batch("M1", now + timedelta(days=2)), known_meters={"M1"}, **kw)  # type: ignore[arg-type]
    # the culprit is named by series and position; good series before it do not hide it
    two = ReadingBatch.of(
        batch_id="b2",
        meter_id="M1",
        collected_at=now,
        readings=[
            ReadingValue(quantity="1-0:1.8.0", ts=now, value=1.0, unit="kWh"),
            *(
                ReadingValue(quantity="1-0:32.7.0", ts=now + timedelta(days=i), value=230.0, unit="V", status=i)
                for i in range(3)
            ),
        ],
    )
    with pytest.raises(BatchRejectedError, match=r"series\[1\] \(1-0:32.7.0\) ts\[2\] is stamped in the future"):
        check_batch(two, known_meters={"M1"}, **kw)  # type: ignore[arg-type]
    # the rows are the readings, with the status word (0 where the meter gave none) and the source
    ok = ReadingBatch.of(batch_id="b2", meter_id="M1", collected_at=now, readings=two.readings()[:3])
    rows = check_batch(ok, known_meters={"M1"}, **kw)  # type: ignore[arg-type]
    assert rows == [
        ("M1", "1-0:1.8.0", now, 1.0, "kWh", 0, "b2"),
        ("M1", "1-0:32.7.0", now, 230.0, "V", 0, "b2"),
        ("M1", "1-0:32.7.0", now + timedelta(days=1), 230.0, "V", 1, "b2"),
    ]
    with pytest.raises(BatchRejectedError, match="too far back"):
        check_batch(_batch("M1", datetime(1999, 1, 1, tzinfo=UTC)), known_meters={"M1"}, **kw)  # type: ignore[arg-type]
    assert math.isfinite(check_batch(_batch("M1", now), known_meters={"M1"}, **kw)[0][3])  # type: ignore[arg-type]


def test_nothing_older_than_the_retention_is_accepted() -> None:
    from gxami_ingest.settings import IngestSettings

    assert IngestSettings(max_past_days=3660).max_past == timedelta(days=3660)
    # retention drops what is older: accepting it would recreate a partition only to drop it again
    assert IngestSettings(max_past_days=3660, retention_days=400).max_past == timedelta(days=400)
    assert IngestSettings(max_past_days=30, retention_days=400).max_past == timedelta(days=30)
