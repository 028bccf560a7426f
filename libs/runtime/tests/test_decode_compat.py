"""What every consumer decodes (issue 7, item 6): a newer producer's added field is read, a newer major is not."""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

from aiokafka import ConsumerRecord

from gxami_contracts import JobResult, ReadingBatch, ReadJob
from gxami_runtime.kafka import decode_batch


def _example(topic: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(files("gxami_contracts").joinpath("examples", f"{topic}.json").read_text())
    return out


def _record(message: dict[str, Any], offset: int) -> ConsumerRecord[bytes, bytes]:
    value = json.dumps(message).encode()
    return ConsumerRecord("ami.readings", 0, offset, 0, 0, b"M1", value, None, 0, len(value), ())


def test_a_batch_with_fields_from_a_newer_producer_is_decoded_not_dead_lettered() -> None:
    batch = _example("ami.readings")
    newer = json.loads(json.dumps(batch))
    newer["firmware"] = "2.1"
    newer["series"][1]["quality"] = ["estimated"]
    good, bad = decode_batch(ReadingBatch, [_record(batch, 1), _record(newer, 2)])
    assert bad == []
    assert [d.record.offset for d in good] == [1, 2]
    assert good[0].message == good[1].message


def test_a_newer_major_version_is_dead_lettered_with_a_reason_naming_both_versions() -> None:
    v2 = {**_example("ami.readings"), "schema_version": 2}
    typo_in_producer = {**_example("ami.readings"), "meter_id": ""}
    good, bad = decode_batch(ReadingBatch, [_record(v2, 7), _record(typo_in_producer, 8)])
    assert good == []
    assert [(rec.offset, reason) for rec, reason in bad] == [
        (
            7,
            "schema: schema_version: ReadingBatch reads schema version 1, not 2: "
            "a newer major version needs an upgraded consumer",
        ),
        (8, "schema: meter_id: String should have at least 1 character"),
    ]


def test_jobs_and_results_from_newer_producers_are_read_too() -> None:
    for model, topic in ((ReadJob, "ami.read-jobs"), (JobResult, "ami.job-results")):
        good, bad = decode_batch(model, [_record({**_example(topic), "priority": 3}, 0)])
        assert (len(good), bad) == (1, [])
