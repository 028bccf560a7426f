"""Tariff files: the published schema is current, the example loads, bad files say where and why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gxcore.errors import ConfigurationError
from gxcore.tariffs import (
    TariffFileError,
    calendar_body,
    calendar_from_body,
    load_tariff_file,
    parse_tariff,
    tariff_schema,
)

ROOT = Path(__file__).resolve().parents[3]
SCHEMA = ROOT / "docs" / "schemas" / "tariff-calendar.schema.json"
EXAMPLE = ROOT / "docs" / "examples" / "tariff-day-night.yaml"


def test_the_published_schema_is_the_models() -> None:
    published = json.loads(SCHEMA.read_text(encoding="utf-8"))
    assert published == tariff_schema(), (
        "docs/schemas/tariff-calendar.schema.json is stale: regenerate it from gxcore.tariffs.tariff_schema()"
    )
    assert set(published["required"]) == {"name", "seasons", "weeks", "days"}


def test_the_example_loads_and_round_trips_through_a_command_body() -> None:
    calendar = load_tariff_file(EXAMPLE)
    assert calendar.name == "DAYNIGHT-2026"
    assert [s.at for s in calendar.days[0].switches] == ["00:00", "07:00", "23:00"]
    body = calendar_body(calendar)
    assert json.loads(json.dumps(body)) == body  # plain JSON, as MeterCommand.body carries it
    assert calendar_from_body(body) == calendar


BAD = """\
name: TOU
activate_now: true
seasons:
  - {name: all, start: "02-30", week: std}
weeks:
  - name: std
    monday: work
    tuesday: work
    wednesday: work
    thursday: work
    friday: work
    saturday: work
    sunday: work
days:
  - name: work
    id: 1
    switches:
      - {at: "07:00", tariff: 1}
      - {at: "25:00", tariff: 2}
special_days:
  - {index: 1, date: "12-25", day: work, colour: red}
"""


def test_a_bad_file_lists_every_problem_with_its_line() -> None:
    with pytest.raises(TariffFileError) as failed:
        parse_tariff(BAD, "bad.yaml")
    text = str(failed.value)
    lines = {p.line: p for p in failed.value.problems}
    assert "bad.yaml:4: seasons.0.start:" in text and "not a calendar date" in lines[4].reason
    assert lines[19].field == "days.0.switches.1.at" and "not a time of day" in lines[19].reason
    assert lines[21].field == "special_days.0.colour" and "Extra inputs" in lines[21].reason


@pytest.mark.parametrize(
    ("text", "where", "why"),
    [
        ("name: [unclosed\n", "bad.yaml:2", "not valid YAML"),
        ("- a list\n", "bad.yaml:1", "expected a mapping"),
        (BAD.replace('"02-30"', '"01-01"').replace('"25:00"', '"23:00"').replace(", colour: red", "").replace(
            '"07:00", tariff: 1', '"00:00", tariff: 1').replace("activate_now: true", "activate_now: false"),
         "bad.yaml:1", "give activate_at, or activate_now"),
        (BAD.replace('"02-30"', '"01-01"').replace('"25:00"', '"23:00"').replace(", colour: red", ""),
         "bad.yaml:15", "first switch must be at 00:00"),
    ],
)  # fmt: skip
def test_bad_files_name_the_line(text: str, where: str, why: str) -> None:
    with pytest.raises(TariffFileError, match=why) as failed:
        parse_tariff(text, "bad.yaml")
    assert str(failed.value).startswith(where)


def test_a_bad_body_names_the_field() -> None:
    body = calendar_body(load_tariff_file(EXAMPLE))
    body["weeks"][0]["monday"] = "holiday"
    with pytest.raises(ConfigurationError, match="week winter-week names unknown days: holiday"):
        calendar_from_body(body)
