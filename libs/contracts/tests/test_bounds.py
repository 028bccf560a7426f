"""The contract holds every field to what its database column can store (issue 14).

Each case here passed the old contract and then stopped a consumer for good in the database:
int4 overflow in COPY, NUL characters PostgreSQL refuses, instants Python cannot move to UTC.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from importlib.resources import files
from typing import Any

import pytest
from pydantic import ValidationError

from gxami_contracts import DeadLetter, JobResult, MeterCommand, MeterEvent, ReadingBatch, ReadJob
from gxami_contracts.messages import INT4_MAX, INT4_MIN


def _example(topic: str) -> dict[str, Any]:
    raw = files("gxami_contracts").joinpath("examples", f"{topic}.json").read_text()
    out: dict[str, Any] = json.loads(raw)
    return out


def _readings(**series: Any) -> bytes:
    batch = _example("ami.readings")
    batch["series"][0].update(series)
    return json.dumps(batch).encode()


@pytest.mark.parametrize("status", [INT4_MIN, INT4_MAX])
def test_status_words_at_the_int4_limits_pass(status: int) -> None:
    batch = ReadingBatch.model_validate_json(_readings(status=[status, 0]))
    assert batch.series[0].status == [status, 0]


@pytest.mark.parametrize("status", [INT4_MAX + 1, INT4_MIN - 1, 2**63])
def test_status_words_beyond_int4_are_refused_naming_the_reading(status: int) -> None:
    with pytest.raises(ValidationError) as info:
        ReadingBatch.model_validate_json(_readings(status=[0, status]))
    assert [e["loc"] for e in info.value.errors()] == [("series", 0, "status", 1)]


@pytest.mark.parametrize(
    ("topic", "path", "value"),
    [
        ("ami.readings", ("series", 0, "unit"), "k\u0000Wh"),
        ("ami.readings", ("job_id",), "j\u0000"),
        ("ami.readings", ("batch_id",), "\u0000"),
        ("ami.job-results", ("error_message",), "no reply\u0000"),
        ("ami.job-results", ("error_kind",), "time\u0000out"),
        ("ami.job-results", ("job_id",), "x\u0000"),
        ("ami.read-jobs", ("url",), "tcp://x:1\u0000"),
        ("ami.read-jobs", ("options", "client_address"), "1\u00006"),
        ("ami.events", ("kind",), "power\u0000down"),
        ("ami.events", ("event_id",), "ev\u0000"),
        ("ami.events", ("data", "source"), "0-0:99\u0000"),
        ("ami.commands", ("requested_by",), "alice\u0000"),
    ],
)
def test_nul_never_reaches_a_text_column(topic: str, path: tuple[Any, ...], value: str) -> None:
    msg = _example(topic)
    target = msg
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    from gxami_contracts import CATALOG

    with pytest.raises(ValidationError) as info:
        CATALOG[topic].model.model_validate_json(json.dumps(msg))
    assert any(e["loc"][: len(path)] == path for e in info.value.errors()), info.value.errors()


def test_nul_in_an_event_data_key_is_refused() -> None:
    event = _example("ami.events")
    event["data"] = {"a\u0000": 1}
    with pytest.raises(ValidationError):
        MeterEvent.model_validate(event)


@pytest.mark.parametrize(
    ("field", "value"),
    [("attempt", INT4_MAX + 1), ("readings_count", INT4_MAX + 1), ("events_count", -1), ("attempt", 0)],
)
def test_job_result_counts_fit_int4(field: str, value: int) -> None:
    result = _example("ami.job-results")
    result[field] = value
    with pytest.raises(ValidationError, match=field):
        JobResult.model_validate(result)
    result[field] = INT4_MAX
    assert getattr(JobResult.model_validate(result), field) == INT4_MAX


def test_event_data_is_bounded_and_finite() -> None:
    event = _example("ami.events")
    ok = MeterEvent.model_validate({**event, "data": {"big": 2**63 - 1, "tiny": -0.0, "huge": 1e308, "t": True}})
    assert ok.data == {"big": 2**63 - 1, "tiny": -0.0, "huge": 1e308, "t": True}
    assert ok.data["t"] is True
    for data in ({"n": float("nan")}, {"n": float("inf")}, {f"k{i}": i for i in range(65)}, {"s": "x" * 2001}):
        with pytest.raises(ValidationError):
            MeterEvent.model_validate({**event, "data": data})


@pytest.mark.parametrize(
    "ts", ["0001-01-01T00:00:00Z", "0001-01-02T00:30:00+01:00", "9999-12-31T00:00:00Z", "9999-12-30T00:00:00-01:00"]
)
def test_instants_stay_inside_what_python_moves_to_utc(ts: str) -> None:
    with pytest.raises(ValidationError, match=r"ts\.0"):
        ReadingBatch.model_validate_json(_readings(ts=[ts, "2026-11-26T00:05:01Z"]))


def test_instants_at_the_bounds_pass_and_convert_to_utc() -> None:
    batch = ReadingBatch.model_validate_json(
        _readings(ts=["0001-01-02T00:00:00Z", "9999-12-30T00:00:00+00:00"], values=[1.0, 2.0], status=[0, 0])
    )
    assert [t.astimezone(UTC).year for t in batch.series[0].ts] == [1, 9999]


def test_read_jobs_and_commands_bound_their_size_before_parsing() -> None:
    assert ReadJob.max_wire_bytes == MeterCommand.max_wire_bytes == 64 * 1024
    assert ReadingBatch.max_wire_bytes == 1 << 20
    job = _example("ami.read-jobs")
    job["options"] = {f"o{i}": "x" for i in range(65)}
    with pytest.raises(ValidationError, match="options"):
        ReadJob.model_validate(job)


def test_dead_letters_version_2_carry_size_and_digest_and_version_1_is_still_read() -> None:
    v2 = _example("ami.dead-letter")
    letter = DeadLetter.model_validate(v2)
    original = base64.b64decode(letter.original_b64)
    assert letter.schema_version == 2 and not letter.original_truncated
    assert (letter.original_size, letter.original_sha256) == (len(original), hashlib.sha256(original).hexdigest())
    with pytest.raises(ValidationError, match="original_size and original_sha256"):
        DeadLetter.model_validate({**v2, "original_size": None})
    v1 = {k: v for k, v in v2.items() if not k.startswith("original_") or k == "original_b64"}
    old = DeadLetter.model_validate({**v1, "schema_version": 1})
    assert old.original_size is None and not old.original_truncated
    with pytest.raises(ValidationError, match="version 1"):
        DeadLetter.model_validate({**v1, "schema_version": 1, "original_truncated": True})
    assert DeadLetter.model_validate_json(letter.model_dump_json()) == letter
    assert datetime.fromisoformat("2026-11-26T00:05:04+00:00") == letter.failed_at
