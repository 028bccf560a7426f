"""A job's readings too many for one message go as several that each fit, with every reading kept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gxami_collector.batches import READING_BATCH_BYTES, fitting_batches
from gxami_contracts import ReadingBatch, ReadingValue
from gxami_runtime.kafka import MAX_REQUEST_BYTES

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _batch(per_quantity: dict[str, int], *, status: bool = False, batch_id: str = "j" * 64) -> ReadingBatch:
    readings = [
        ReadingValue(
            quantity=q,
            ts=T0 + timedelta(minutes=i),
            value=i * 0.001 + 1e6,
            unit="kWh",
            status=(i % 7) if status else None,
        )
        for q, n in per_quantity.items()
        for i in range(n)
    ]
    return ReadingBatch.of(batch_id=batch_id, meter_id="M1", job_id="job-1", collected_at=T0, readings=readings)


def _key(r: ReadingValue) -> tuple[str, datetime, float, str, int | None]:
    return (r.quantity, r.ts, r.value, r.unit, r.status)


def test_a_60_day_one_minute_back_fill_goes_as_parts_that_fit_with_every_reading() -> None:
    batch = _batch({"1-0:1.8.0": 86_400, "1-0:2.8.0": 3}, status=True)
    whole = len(batch.model_dump_json())
    assert whole > MAX_REQUEST_BYTES  # one message would be refused by the producer (the old behaviour)
    parts = fitting_batches(batch)
    assert len(parts) > 1
    for p in parts:
        wire = p.model_dump_json().encode()
        assert len(wire) <= READING_BATCH_BYTES
        again = ReadingBatch.from_wire(wire)  # what the consumer reads back: valid, same meter and job
        assert (again.meter_id, again.job_id, again.collected_at) == ("M1", "job-1", T0)
        assert len(again.batch_id) <= 64
    assert len({p.batch_id for p in parts}) == len(parts)
    got = sorted(_key(r) for p in parts for r in p.readings())
    assert got == sorted(_key(r) for r in batch.readings())


def test_many_series_of_one_reading_are_split_by_series() -> None:
    batch = _batch({f"1-0:{k}.8.0": 1 for k in range(1, 900)})
    parts = fitting_batches(batch, max_bytes=20_000)
    assert len(parts) > 1 and all(len(p.model_dump_json()) <= 20_000 for p in parts)
    assert sorted(_key(r) for p in parts for r in p.readings()) == sorted(_key(r) for r in batch.readings())


def test_a_batch_that_fits_is_sent_as_it_is() -> None:
    batch = _batch({"1-0:1.8.0": 96})
    assert fitting_batches(batch) == [batch]
