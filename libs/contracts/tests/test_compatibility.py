"""Forward compatibility (issue 7, item 6): a consumer reads what a newer producer of its major version sends.

Strict where a message is made (a misspelt field in producer code fails), lenient about unknown
fields where it is read off the wire, and a different major version refused with a reason.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from importlib.resources import files
from typing import Any

import pytest
from pydantic import ValidationError

from gxami_contracts import CATALOG, DeadLetter, JobResult, JobStatus, Message, ReadingBatch, ReadingSeries


def _example(topic: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(files("gxami_contracts").joinpath("examples", f"{topic}.json").read_text())
    return out


@pytest.mark.parametrize("topic", sorted(CATALOG))
def test_a_field_added_by_a_newer_producer_is_dropped_where_the_message_is_read(topic: str) -> None:
    model = CATALOG[topic].model
    example = _example(topic)
    newer = {**example, "added_in_a_newer_producer": {"any": ["json", 1, None]}}
    read = model.from_wire(json.dumps(newer))
    assert read == model.from_wire(json.dumps(example))
    assert "added_in_a_newer_producer" not in read.model_dump()
    # where a message is made, the same field is a mistake and refused, naming it
    with pytest.raises(ValidationError, match="added_in_a_newer_producer"):
        model.model_validate(newer)
    with pytest.raises(ValidationError, match="added_in_a_newer_producer"):
        model.model_validate_json(json.dumps(newer))


def test_a_field_added_inside_a_reading_series_is_dropped_too() -> None:
    batch = _example("ami.readings")
    batch["series"][0]["quality_flags"] = ["estimated", "estimated"]
    read = ReadingBatch.from_wire(json.dumps(batch).encode())
    assert read.series[0] == ReadingSeries.model_validate(
        {k: v for k, v in batch["series"][0].items() if k != "quality_flags"}
    )
    with pytest.raises(ValidationError, match=r"series\.0\.quality_flags"):
        ReadingBatch.model_validate(batch)


def test_a_misspelt_field_in_producer_code_fails() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(ValidationError, match="reading_count"):
        JobResult(  # type: ignore[call-arg]  # the misspelling is the point
            job_id="j",
            meter_id="M1",
            link_id="l",
            status=JobStatus.OK,
            attempt=1,
            started_at=now,
            finished_at=now,
            readings_count=1,
            reading_count=1,
        )
    with pytest.raises(ValidationError, match="unit_"):
        ReadingSeries(quantity="1-0:1.8.0", unit="kWh", ts=[], values=[], unit_="Wh")  # type: ignore[call-arg]


@pytest.mark.parametrize("topic", sorted(CATALOG))
def test_a_newer_major_version_is_refused_with_a_reason_that_says_so(topic: str) -> None:
    model: type[Message] = CATALOG[topic].model
    newer = max(model.schema_versions()) + 1
    raw = json.dumps({**_example(topic), "schema_version": newer, "added_in_version_2": 1})
    with pytest.raises(ValidationError) as info:
        model.from_wire(raw)
    errors = info.value.errors(include_input=False)
    assert [(e["loc"], e["type"]) for e in errors] == [(("schema_version",), "schema_version")]
    known = ", ".join(map(str, model.schema_versions()))
    assert errors[0]["msg"] == (
        f"{model.__name__} reads schema version {known}, not {newer}: a newer major version needs an upgraded consumer"
    )


@pytest.mark.parametrize("version", ["1", 1.5, None, [1], "x" * 100])
def test_a_version_that_is_not_a_known_integer_is_refused_without_echoing_much(version: object) -> None:
    raw = json.dumps({**_example("ami.readings"), "schema_version": version})
    with pytest.raises(ValidationError) as info:
        ReadingBatch.from_wire(raw)
    (error,) = info.value.errors(include_input=False)
    assert error["loc"] == ("schema_version",)
    assert error["msg"].startswith("ReadingBatch reads schema version 1, not a ")
    assert "xxxxx" not in error["msg"]


def test_dead_letters_are_written_at_version_2_and_read_at_1_and_2_only() -> None:
    assert DeadLetter.schema_versions() == (1, 2)
    v2 = _example("ami.dead-letter")
    assert DeadLetter.from_wire(json.dumps({**v2, "added_later": True})).schema_version == 2
    v1 = {k: v for k, v in v2.items() if k not in {"original_size", "original_sha256", "original_truncated"}}
    assert DeadLetter.from_wire(json.dumps({**v1, "schema_version": 1})).schema_version == 1
    with pytest.raises(ValidationError, match="DeadLetter reads schema version 1, 2, not 3"):
        DeadLetter.from_wire(json.dumps({**v2, "schema_version": 3}))
