"""Schema snapshots per topic (issue 7, item 6): an incompatible change without a version bump fails.

The committed snapshots live in ``gxami_contracts/schemas/``; regenerate them after a compatible
change or a version bump with ``python -m gxami_contracts.snapshots --write``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
from pydantic import Field

from gxami_contracts import CATALOG, ReadingBatch, ReadingSeries, TopicSpec
from gxami_contracts.snapshots import (
    SNAPSHOT_DIR,
    WRITE_COMMAND,
    check_topic,
    incompatibilities,
    load_snapshot,
    main,
    render,
    wire_schema,
    write_snapshots,
)
from gxami_contracts.topics import READINGS


@pytest.mark.parametrize("topic", sorted(CATALOG))
def test_every_topic_matches_its_committed_snapshot(topic: str) -> None:
    result = check_topic(CATALOG[topic])
    assert result.state == "same", result.describe()


def test_every_snapshot_belongs_to_a_topic_and_is_written_as_the_tool_writes_it() -> None:
    assert sorted(p.stem for p in SNAPSHOT_DIR.glob("*.json")) == sorted(CATALOG)
    for topic in CATALOG:
        snapshot = load_snapshot(topic)
        assert snapshot is not None
        assert (SNAPSHOT_DIR / f"{topic}.json").read_text(encoding="utf-8") == render(snapshot)


def test_the_wire_schema_leaves_out_closed_objects_because_consumers_drop_unknown_fields() -> None:
    strict = ReadingBatch.model_json_schema()
    assert strict["additionalProperties"] is False  # the model refuses unknown fields where it is made
    schema = wire_schema(ReadingBatch)
    assert "additionalProperties" not in schema and "additionalProperties" not in schema["$defs"]["ReadingSeries"]
    options = wire_schema(CATALOG["ami.read-jobs"].model)["properties"]["options"]
    assert [v["maxLength"] for v in options["patternProperties"].values()] == [500]  # a map's values stay bounded


# --- the checker itself, on small schemas ------------------------------------------------------


def _obj(props: dict[str, Any], required: list[str], **more: Any) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": required, **more}


OLD = _obj(
    {
        "schema_version": {"const": 1, "default": 1, "type": "integer"},
        "meter_id": {"type": "string", "maxLength": 64, "title": "Meter Id"},
        "count": {"type": "integer", "minimum": 0},
        "note": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
        "series": {"type": "array", "items": {"$ref": "#/$defs/Series"}},
    },
    ["meter_id", "count", "series"],
    **{"$defs": {"Series": _obj({"values": {"type": "array", "items": {"type": "number"}}}, ["values"])}},
)


def _changed(edit: Any) -> dict[str, Any]:
    new = copy.deepcopy(OLD)
    edit(new)
    return new


def test_the_same_schema_and_words_only_changes_are_compatible() -> None:
    assert incompatibilities(OLD, OLD) == []

    def words(s: dict[str, Any]) -> None:
        s["properties"]["meter_id"]["title"] = "Meter"
        s["properties"]["meter_id"]["description"] = "the meter"
        s["$defs"]["Series"]["description"] = "one quantity"

    assert incompatibilities(OLD, _changed(words)) == []


def test_an_optional_field_added_is_compatible_at_the_top_and_nested() -> None:
    def add(s: dict[str, Any]) -> None:
        s["properties"]["firmware"] = {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}
        s["$defs"]["Series"]["properties"]["flags"] = {"type": "array", "items": {"type": "string"}, "default": []}

    assert incompatibilities(OLD, _changed(add)) == []


def test_a_renamed_definition_with_the_same_content_is_compatible() -> None:
    def rename(s: dict[str, Any]) -> None:
        s["$defs"]["ReadingSeries"] = s["$defs"].pop("Series")
        s["properties"]["series"]["items"] = {"$ref": "#/$defs/ReadingSeries"}

    assert incompatibilities(OLD, _changed(rename)) == []


def _set(path: list[Any], value: Any) -> Any:
    def edit(s: dict[str, Any]) -> None:
        node = s
        for step in path[:-1]:
            node = node[step]
        if value is _DELETE:
            del node[path[-1]]
        else:
            node[path[-1]] = value

    return edit


_DELETE = object()


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (_set(["properties", "count"], _DELETE), "count: field removed"),
        (_set(["properties", "count", "type"], "string"), 'count: type changed (type: "integer" -> "string")'),
        (
            _set(["properties", "note", "anyOf", 0], {"type": "integer"}),
            'note|0: type changed (type: "string" -> "integer")',
        ),
        (
            _set(["properties", "note", "anyOf"], [{"type": "string"}, {"type": "integer"}, {"type": "null"}]),
            "note: type changed (anyOf:",
        ),
        (_set(["required"], ["meter_id", "count", "series", "note"]), "note: now required"),
        (_set(["required"], ["meter_id", "series"]), "count: no longer required"),
        (_set(["properties", "meter_id", "maxLength"], 32), "meter_id: maxLength changed (64 -> 32)"),
        (_set(["properties", "meter_id", "maxLength"], 128), "meter_id: maxLength changed (64 -> 128)"),
        (_set(["properties", "meter_id", "pattern"], "^[A-Z]+$"), 'meter_id: constraint pattern added ("^[A-Z]+$")'),
        (_set(["properties", "count", "minimum"], _DELETE), "count: constraint minimum removed (was 0)"),
        (_set(["properties", "note", "default"], "-"), 'note: default changed (null -> "-")'),
        (
            _set(["$defs", "Series", "properties", "values", "items", "type"], "integer"),
            'series[].values[]: type changed (type: "number" -> "integer")',
        ),
        (_set(["$defs", "Series", "properties", "values"], _DELETE), "series[].values: field removed"),
    ],
)
def test_an_incompatible_change_is_found_and_said_where(edit: Any, expected: str) -> None:
    found = incompatibilities(OLD, _changed(edit))
    assert any(f.startswith(expected) for f in found), found


def test_a_required_field_added_is_incompatible() -> None:
    def add(s: dict[str, Any]) -> None:
        s["properties"]["tariff"] = {"type": "integer"}
        s["required"].append("tariff")

    assert incompatibilities(OLD, _changed(add)) == ["tariff: required field added"]


# --- real models against a snapshot folder ------------------------------------------------------


class _WithAnOptionalField(ReadingBatch):
    firmware: str | None = Field(default=None, max_length=32)


class _WithANewRequiredField(ReadingBatch):
    tariff: int


class _WithATypeChanged(ReadingBatch):
    job_id: int | None = None  # type: ignore[assignment]  # the incompatible change under test


class _WithATighterSeries(ReadingSeries):
    unit: str = Field(max_length=8)  # was 16


class _WithATighterNestedBound(ReadingBatch):
    series: list[_WithATighterSeries] = Field(max_length=1_000)  # type: ignore[assignment]


class _Bumped(ReadingBatch):
    schema_version: Literal[2] = 2  # type: ignore[assignment]
    max_wire_bytes: ClassVar[int] = 1 << 20
    tariff: int


def _readings_as(model: type[ReadingBatch]) -> TopicSpec:
    return TopicSpec(READINGS.name, model, READINGS.key, READINGS.partitions, READINGS.producers, READINGS.consumers)


@pytest.fixture
def snapshots(tmp_path: Path) -> Path:
    (tmp_path / f"{READINGS.name}.json").write_text((SNAPSHOT_DIR / f"{READINGS.name}.json").read_text())
    return tmp_path


def test_a_model_with_an_optional_field_added_is_compatible_and_can_be_written(snapshots: Path) -> None:
    spec = _readings_as(_WithAnOptionalField)
    result = check_topic(spec, snapshots)
    assert result.state == "compatible"
    assert WRITE_COMMAND in result.describe()
    assert write_snapshots({spec.name: spec}, snapshots) == []
    assert check_topic(spec, snapshots).state == "same"
    assert "firmware" in json.loads((snapshots / f"{spec.name}.json").read_text())["properties"]


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (_WithANewRequiredField, "tariff: required field added"),
        (_WithATypeChanged, "job_id|0: type changed"),
        (_WithATighterNestedBound, "series[].unit: maxLength changed (16 -> 8)"),
    ],
)
def test_a_model_with_an_incompatible_change_fails_and_is_not_written(
    snapshots: Path, model: type[ReadingBatch], expected: str
) -> None:
    spec = _readings_as(model)
    before = (snapshots / f"{spec.name}.json").read_text()
    result = check_topic(spec, snapshots)
    assert result.state == "incompatible"
    assert any(p.startswith(expected) for p in result.problems), result.problems
    assert "bump schema_version" in result.describe()
    assert [r.topic for r in write_snapshots({spec.name: spec}, snapshots)] == [spec.name]
    assert (snapshots / f"{spec.name}.json").read_text() == before
    assert write_snapshots({spec.name: spec}, snapshots, accept_incompatible=True) == []
    assert check_topic(spec, snapshots).state == "same"


def test_the_same_change_with_a_version_bump_only_asks_for_the_snapshot(snapshots: Path) -> None:
    spec = _readings_as(_Bumped)
    assert check_topic(spec, snapshots).state == "bumped"
    assert write_snapshots({spec.name: spec}, snapshots) == []
    assert check_topic(spec, snapshots).state == "same"


def test_the_command_line_checks_and_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--dir", str(tmp_path)]) == 1
    assert "has no snapshot" in capsys.readouterr().err
    assert main(["--write", "--dir", str(tmp_path)]) == 0
    assert main(["--dir", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{t}.json" for t in CATALOG)
    assert main([]) == 0  # the committed snapshots are current
