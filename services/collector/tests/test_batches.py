"""A job's readings too many for one message go as several that each fit, with every reading kept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from gxami_collector.batches import READING_BATCH_BYTES, fitting_batches, reading_batch
from gxami_contracts import ReadingBatch, ReadingValue, TextSeries
from gxami_runtime.kafka import MAX_REQUEST_BYTES
from gxcore.readings import BitString, Reading

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


def test_a_jobs_readings_become_typed_series_once_with_refusals_named() -> None:
    readings = [
        Reading("1-0:1.8.0", 38296251, "Wh", T0),
        Reading("1-0:1.8.0", 38296252, "Wh", T0 + timedelta(minutes=1), status=8),
        Reading("1-0:1.8.0", Decimal("38296.251"), "kWh", T0),
        Reading("1-0:32.7.0", float("nan"), "V", T0),  # refused alone
        Reading("1-0:32.7.0", 230.5, "V", T0 + timedelta(minutes=1)),
        Reading("0-0:42.0.0", "SIM00100000", "", T0),
        Reading("0-0:96.1.0", b"\x00\xff", "", T0),
        Reading("0-0:97.97.0", BitString("0101"), "", T0),
        Reading("0-0:96.3.10", True, "", T0),
    ]
    batch, refused = reading_batch(readings, batch_id="j", meter_id="M1", job_id="j", collected_at=T0)
    assert batch is not None
    assert [(r.quantity, r.value) for r, _ in refused] == [("1-0:32.7.0", readings[3].value)]
    assert [(s.quantity, s.unit, s.values, s.status) for s in batch.series] == [
        ("1-0:1.8.0", "Wh", [38296251, 38296252], [0, 8]),
        ("1-0:1.8.0", "kWh", [38296.251], None),
        ("1-0:32.7.0", "V", [230.5], None),
    ]
    assert all(type(v) is int for v in batch.series[0].values)
    assert [(s.quantity, s.kind, s.values) for s in batch.text_series] == [
        ("0-0:42.0.0", "text", ["SIM00100000"]),
        ("0-0:96.1.0", "bytes", ["00ff"]),
        ("0-0:97.97.0", "bits", ["0101"]),
        ("0-0:96.3.10", "bool", ["true"]),
    ]
    wire = batch.model_dump_json()
    assert '"values":[38296251,38296252]' in wire and '"values":[38296.251]' in wire
    assert batch.count == 8
    none, refused_all = reading_batch(readings[3:4], batch_id="j", meter_id="M1", job_id="j", collected_at=T0)
    assert none is None and len(refused_all) == 1 and "finite" in refused_all[0][1]
    odd = [Reading("1-0:1.8.0", Decimal("sNaN"), "kWh", T0), Reading("1-0:1.8.0", T0, "kWh", T0)]  # type: ignore[arg-type]  # a plug-in's wrong type
    none, refused_odd = reading_batch(odd, batch_id="j", meter_id="M1", job_id="j", collected_at=T0)
    assert none is None
    assert (refused_odd[0][0].value, refused_odd[0][1]) == (T0, "a datetime is not a reading value")
    assert "finite" in refused_odd[1][1]


def test_text_series_are_split_with_the_numbers_and_none_is_lost() -> None:
    batch = _batch({"1-0:1.8.0": 30_000})
    names = TextSeries(quantity="0-0:42.0.0", unit="", kind="text", ts=[T0], values=["x" * 4000])
    big = batch.model_copy(update={"text_series": [names]})
    parts = fitting_batches(big, max_bytes=200_000)
    assert len(parts) > 1
    assert sum(p.count for p in parts) == big.count
    assert [s for p in parts for s in p.text_series] == [names]
