import json
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
    assert msg.schema_version == 1


def test_catalog_names_dead_letter_for_every_consumed_topic() -> None:
    for spec in CATALOG.values():
        if spec.name != DEAD_LETTER:
            assert spec.dead_letter == DEAD_LETTER
        assert spec.partitions >= 1


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_are_refused(bad: float) -> None:
    with pytest.raises(ValidationError, match="finite"):
        ReadingValue(quantity="1-0:1.8.0", ts="2026-01-01T00:00:00Z", value=bad, unit="kWh")  # type: ignore[arg-type]


def test_naive_timestamps_and_unknown_fields_are_refused() -> None:
    base = json.loads(files("gxami_contracts").joinpath("examples", "ami.readings.json").read_text())
    naive = json.loads(json.dumps(base))
    naive["readings"][0]["ts"] = "2026-11-26T00:05:01"
    with pytest.raises(ValidationError):
        ReadingBatch.model_validate(naive)
    extra = json.loads(json.dumps(base))
    extra["surprise"] = 1
    with pytest.raises(ValidationError, match="surprise"):
        ReadingBatch.model_validate(extra)
