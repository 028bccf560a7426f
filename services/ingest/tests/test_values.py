"""Typed values through ingest into PostgreSQL: integers and exact decimals in readings, text,
bytes, bit-strings and booleans in register_values, queryable by BI, and never seen by VEE."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest

from gxami_contracts import ReadingBatch, ReadingSeries, TextSeries
from gxami_ingest.validation import check_batch
from gxami_ingest.vee import VeeSettings, run_vee
from gxami_ingest.writer import write_readings
from gxami_store import PartitionKeeper, migrate, storage_kind

pytestmark = pytest.mark.integration


async def _ready(dsn: str) -> tuple[asyncpg.Connection, PartitionKeeper]:
    conn = await asyncpg.connect(dsn)
    await migrate(conn)
    keeper = PartitionKeeper()
    await keeper.load(conn, await storage_kind(conn))
    return conn, keeper


def _wire_batch(now: datetime, name: str = "SIM00100000", batch_id: str = "job-1") -> ReadingBatch:
    """A batch as the collector makes it (services/collector/tests/test_batches.py: from gxcore readings)
    and as ingest reads it off the wire."""
    at = now - timedelta(minutes=5)
    batch = ReadingBatch(
        batch_id=batch_id,
        meter_id="TV1",
        job_id=batch_id,
        collected_at=now,
        series=[
            ReadingSeries(quantity="1-0:1.8.0", unit="kWh", ts=[at], values=[float(Decimal("38296.251"))]),
            ReadingSeries(quantity="1-0:1.8.1", unit="Wh", ts=[at], values=[38296251]),
        ],
        text_series=[
            TextSeries(quantity="0-0:42.0.0", unit="", kind="text", ts=[at], values=[name]),
            TextSeries(quantity="0-0:96.1.0", unit="", kind="bytes", ts=[at], values=["00ff10"]),
            TextSeries(quantity="0-0:97.97.0", unit="", kind="bits", ts=[at], values=["00010000"], status=[3]),
            TextSeries(quantity="0-0:96.3.10", unit="", kind="bool", ts=[at], values=["false"]),
        ],
    )
    return ReadingBatch.from_wire(batch.model_dump_json())


async def test_numbers_and_text_values_are_stored_exactly_and_queryable(database_url: str) -> None:
    conn, keeper = await _ready(database_url)
    now = datetime.now(UTC).replace(microsecond=0)
    kw = {"now": now, "max_future": timedelta(minutes=5), "max_past": timedelta(days=31)}
    try:
        batch = _wire_batch(now)
        assert batch.series[1].values == [38296251] and type(batch.series[1].values[0]) is int
        rows = check_batch(batch, known_meters={"TV1"}, **kw)  # type: ignore[arg-type]
        assert (len(rows), len(rows.values), rows.total) == (2, 4, 6)
        stats = await write_readings(conn, rows, keeper, rows.values)
        assert (stats.offered, stats.inserted, stats.duplicates) == (6, 6, 0)
        numbers = await conn.fetch(
            "SELECT quantity, value, value::text AS shown, status, job_id FROM readings WHERE meter_id = 'TV1'"
            " ORDER BY quantity"
        )
        assert [tuple(r) for r in numbers] == [
            ("1-0:1.8.0", 38296.251, "38296.251", 0, "job-1"),  # no 38296.251000000004
            ("1-0:1.8.1", 38296251.0, "38296251", 0, "job-1"),
        ]
        typed = await conn.fetch(
            "SELECT quantity, kind, text_value, bytes_value, bool_value, bits_value::text AS bits, status"
            " FROM register_values_typed WHERE meter_id = 'TV1' AND kind <> 'number' ORDER BY quantity"
        )
        assert [tuple(r) for r in typed] == [
            ("0-0:42.0.0", "text", "SIM00100000", None, None, None, 0),
            ("0-0:96.1.0", "bytes", "00ff10", b"\x00\xff\x10", None, None, 0),
            ("0-0:96.3.10", "bool", "false", None, False, None, 0),
            ("0-0:97.97.0", "bits", "00010000", None, None, "00010000", 3),
        ]
        # redelivered: a no-op; the name again but different: kept as a revision, the first stays
        again = await write_readings(conn, rows, keeper, rows.values)
        assert (again.inserted, again.duplicates, again.revisions) == (0, 6, 0)
        renamed = check_batch(_wire_batch(now, name="RENAMED", batch_id="job-2"), known_meters={"TV1"}, **kw)  # type: ignore[arg-type]
        third = await write_readings(conn, renamed, keeper, renamed.values)
        assert (third.inserted, third.duplicates, third.revisions) == (0, 5, 1)
        assert (
            await conn.fetchval(
                "SELECT text_value FROM meter_register_values WHERE meter_id = 'TV1' AND quantity = '0-0:42.0.0'"
            )
            == "SIM00100000"
        )
        revision = await conn.fetchrow("SELECT value, job_id FROM register_value_revisions WHERE meter_id = 'TV1'")
        assert revision is not None and tuple(revision) == ("RENAMED", "job-2")
        # VEE passes over the numbers only; the text values are untouched by its rules
        await run_vee(conn, settings=VeeSettings(), since=now - timedelta(days=1))
        assert await conn.fetchval("SELECT count(*) FROM register_values WHERE meter_id = 'TV1'") == 4
    finally:
        await conn.close()
