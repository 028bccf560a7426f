import json
import re
from datetime import UTC, datetime, timedelta
from importlib.resources import files

import pytest
from pydantic import ValidationError

from gxami_contracts import CATALOG, DEAD_LETTER, ReadingBatch, ReadingValue


@pytest.mark.parametrize("topic", sorted(CATALOG))
def test_every_topic_has_a_valid_example(topic: str) -> None:
    spec = CATALOG[topic]
    raw = files("gxami_contracts").joinpath("examples", f"{topic}.json").read_text()
    msg = spec.model.model_validate_json(raw)
    # round trip: what we write is what we read
    assert spec.model.model_validate_json(msg.model_dump_json()) == msg
    assert msg.schema_version == spec.model.model_fields["schema_version"].default


def test_catalog_names_dead_letter_for_every_consumed_topic() -> None:
    for spec in CATALOG.values():
        if spec.name != DEAD_LETTER:
            assert spec.dead_letter == DEAD_LETTER
        assert spec.partitions >= 1


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_are_refused(bad: float) -> None:
    with pytest.raises(ValidationError, match="finite"):
        ReadingValue(quantity="1-0:1.8.0", ts="2026-01-01T00:00:00Z", value=bad, unit="kWh")  # type: ignore[arg-type]
    raw = (
        '{"batch_id": "b", "meter_id": "M1", "collected_at": "2026-01-01T00:00:00Z", "series": [{"quantity":'
        f' "1-0:1.8.0", "unit": "kWh", "ts": ["2026-01-01T00:00:00Z"], "values": [{json.dumps(bad)}]}}]}}'
    )
    with pytest.raises(ValidationError, match="finite"):
        ReadingBatch.model_validate_json(raw)


def test_a_series_whose_arrays_differ_in_length_is_refused_with_the_quantity() -> None:
    base = json.loads(files("gxami_contracts").joinpath("examples", "ami.readings.json").read_text())
    base["series"][0]["values"].pop()
    with pytest.raises(ValidationError, match=re.escape("1-0:1.8.0: ts has 2 entries but values 1, status 2")):
        ReadingBatch.model_validate(base)


def test_batches_group_single_readings_into_series_and_give_them_back() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    readings = [
        ReadingValue(quantity="1-0:1.8.0", ts=t0, value=1.0, unit="kWh"),
        ReadingValue(quantity="1-0:32.7.0", ts=t0, value=230.1, unit="V", status=4),
        ReadingValue(quantity="1-0:1.8.0", ts=t0 + timedelta(minutes=15), value=1.5, unit="kWh"),
        ReadingValue(quantity="1-0:1.8.0", ts=t0, value=1000.0, unit="Wh"),  # another unit: another series
    ]
    batch = ReadingBatch.of(batch_id="b", meter_id="M1", collected_at=t0, readings=readings)
    assert [(s.quantity, s.unit, len(s.ts)) for s in batch.series] == [
        ("1-0:1.8.0", "kWh", 2),
        ("1-0:32.7.0", "V", 1),
        ("1-0:1.8.0", "Wh", 1),
    ]
    assert batch.series[0].status is None and batch.series[1].status == [4]
    assert batch.count == 4
    again = ReadingBatch.model_validate_json(batch.model_dump_json())
    assert sorted(again.readings(), key=repr) == sorted(readings, key=repr)


def test_naive_timestamps_are_refused_and_unknown_fields_only_where_a_message_is_made() -> None:
    base = json.loads(files("gxami_contracts").joinpath("examples", "ami.readings.json").read_text())
    naive = json.loads(json.dumps(base))
    naive["series"][0]["ts"][0] = "2026-11-26T00:05:01"
    with pytest.raises(ValidationError):
        ReadingBatch.model_validate(naive)
    with pytest.raises(ValidationError):
        ReadingBatch.from_wire(json.dumps(naive))
    extra = json.loads(json.dumps(base))
    extra["surprise"] = 1
    with pytest.raises(ValidationError, match="surprise"):
        ReadingBatch.model_validate(extra)
    # read off the wire, a field from a newer producer is dropped (tests/test_compatibility.py has the rest)
    assert ReadingBatch.from_wire(json.dumps(extra)) == ReadingBatch.model_validate(base)
