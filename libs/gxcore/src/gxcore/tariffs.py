"""Tariff calendars: the YAML file an operator writes, its JSON Schema, and the command body it becomes.

A file describes what a DLMS activity calendar (class 20) and special days table (class 11)
hold, in words rather than COSEM structures::

    name: TOU2                   # calendar_name (1..16 characters)
    activate_at: 2026-01-01T00:00:00Z   # when the passive calendar becomes active (aware time)
    activate_now: false          # or call activate_passive_calendar right after writing
    script: 0.0.10.0.100.255     # the tariffication script table the day actions run
    seasons:                     # each starts every year on its month-day
      - {name: year, start: "01-01", week: standard}
    weeks:
      - {name: standard, monday: workday, ..., saturday: weekend, sunday: weekend}
    days:
      - name: workday
        id: 1
        switches: [{at: "00:00", tariff: 2}, {at: "07:00", tariff: 1}, {at: "23:00", tariff: 2}]
    special_days:                # "MM-DD" every year, "YYYY-MM-DD" once
      - {index: 1, date: "01-01", day: weekend, name: New Year}

Switch times, season starts and special days are in the meter's own calendar and local time, as
the activity calendar runs them; ``activate_at`` is an instant (written as UTC, deviation 0).

:func:`load_tariff_file` reads one, reporting ``file:line: field: reason`` for each problem;
:func:`tariff_schema` is the published JSON Schema (``docs/schemas/tariff-calendar.schema.json``,
kept current by a test); :func:`calendar_body` / :func:`calendar_from_body` turn a calendar into the
JSON ``body`` of a ``tariff-calendar`` command and back.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from gxcore.errors import ConfigurationError

WEEKDAYS: Final = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
TARIFF_SCRIPTS: Final = "0.0.10.0.100.255"
MAX_PROBLEMS: Final = 50
_MONTH_DAY = re.compile(r"^(?:(\d{4})-)?(\d{2})-(\d{2})$")
_TIME = re.compile(r"^(\d{2}):(\d{2})(?::(\d{2}))?$")
_OBIS = re.compile(r"^\d{1,3}(\.\d{1,3}){5}$")


def _month_day(text: str) -> str:
    match = _MONTH_DAY.match(text)
    if match is None:
        raise ValueError("expected MM-DD (every year) or YYYY-MM-DD")
    year, month, day = match.groups()
    try:
        datetime(int(year or 2000), int(month), int(day), tzinfo=UTC)  # 2000 is a leap year: 02-29 is a date
    except ValueError:
        raise ValueError(f"{text!r} is not a calendar date") from None
    return text


def _time_of_day(text: str) -> str:
    match = _TIME.match(text)
    if match is None:
        raise ValueError("expected HH:MM or HH:MM:SS")
    hour, minute, second = (int(g or 0) for g in match.groups())
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError(f"{text!r} is not a time of day")
    return text


def _obis(text: str) -> str:
    if _OBIS.match(text) is None or any(int(p) > 255 for p in text.split(".")):
        raise ValueError("expected an OBIS code a.b.c.d.e.f")
    return text


Name = Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[\x21-\x7e]+( [\x21-\x7e]+)*$")]
MonthDay = Annotated[str, AfterValidator(_month_day), Field(json_schema_extra={"pattern": _MONTH_DAY.pattern})]
TimeOfDay = Annotated[str, AfterValidator(_time_of_day), Field(json_schema_extra={"pattern": _TIME.pattern})]
Obis = Annotated[str, AfterValidator(_obis), Field(json_schema_extra={"pattern": _OBIS.pattern})]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Switch(_Strict):
    """From ``at`` (time of day) on, the tariff (script selector) ``tariff`` applies."""

    at: TimeOfDay
    tariff: int = Field(ge=1, le=65535)


class DayProfile(_Strict):
    """One day type: its COSEM day_id and its tariff switches, in time order, the first at 00:00."""

    name: Name
    id: int = Field(ge=0, le=255)
    switches: list[Switch] = Field(min_length=1, max_length=32)

    @model_validator(mode="after")
    def _ordered(self) -> DayProfile:
        times = [_seconds(s.at) for s in self.switches]
        if times != sorted(set(times)):
            raise ValueError("switches must be in increasing time order, each time once")
        if times[0] != 0:
            raise ValueError("the first switch must be at 00:00 so the whole day has a tariff")
        return self


class WeekProfile(_Strict):
    """Which day type each weekday is."""

    name: Name
    monday: Name
    tuesday: Name
    wednesday: Name
    thursday: Name
    friday: Name
    saturday: Name
    sunday: Name

    def days(self) -> list[str]:
        return [getattr(self, d) for d in WEEKDAYS]


class Season(_Strict):
    """From ``start`` (month-day, every year) on, the week profile ``week`` applies."""

    name: Name
    start: MonthDay
    week: Name


class SpecialDay(_Strict):
    """A date whose day type overrides the week's: ``MM-DD`` every year or ``YYYY-MM-DD`` once."""

    index: int = Field(ge=0, le=65535)
    date: MonthDay
    day: Name
    name: str = Field(default="", max_length=64)


class TariffCalendar(_Strict):
    """A whole tariff calendar (see the module doc)."""

    name: Name
    activate_at: datetime | None = None
    activate_now: bool = False
    script: Obis = TARIFF_SCRIPTS
    seasons: list[Season] = Field(min_length=1, max_length=12)
    weeks: list[WeekProfile] = Field(min_length=1, max_length=12)
    days: list[DayProfile] = Field(min_length=1, max_length=32)
    special_days: list[SpecialDay] = Field(default_factory=list, max_length=255)

    @model_validator(mode="after")
    def _consistent(self) -> TariffCalendar:
        if self.activate_at is not None and self.activate_at.tzinfo is None:
            raise ValueError("activate_at must carry a time zone (e.g. 2026-01-01T00:00:00Z)")
        if self.activate_at is None and not self.activate_now:
            raise ValueError("give activate_at, or activate_now: true")
        for what, names in (
            ("season", [s.name for s in self.seasons]),
            ("week", [w.name for w in self.weeks]),
            ("day", [d.name for d in self.days]),
        ):
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(f"{what} names given twice: {', '.join(twice)}")
        ids = [d.id for d in self.days]
        if len(ids) != len(set(ids)):
            raise ValueError("day ids given twice")
        days = {d.name for d in self.days}
        weeks = {w.name for w in self.weeks}
        for week in self.weeks:
            unknown = sorted(set(week.days()) - days)
            if unknown:
                raise ValueError(f"week {week.name} names unknown days: {', '.join(unknown)}")
        for season in self.seasons:
            if season.week not in weeks:
                raise ValueError(f"season {season.name} names unknown week {season.week}")
        indexes = [s.index for s in self.special_days]
        if len(indexes) != len(set(indexes)):
            raise ValueError("special day indexes given twice")
        for special in self.special_days:
            if special.day not in days:
                raise ValueError(f"special day {special.index} names unknown day {special.day}")
        return self

    def day_id(self, name: str) -> int:
        return next(d.id for d in self.days if d.name == name)


def _seconds(text: str) -> int:
    match = _TIME.match(text)
    if match is None:
        raise ValueError(text)
    hour, minute, second = (int(g or 0) for g in match.groups())
    return hour * 3600 + minute * 60 + second


def tariff_schema() -> dict[str, Any]:
    """The JSON Schema of a tariff file (what ``docs/schemas/tariff-calendar.schema.json`` holds)."""
    schema = TariffCalendar.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://gxami.example/schemas/tariff-calendar.schema.json"
    schema["title"] = "gxami tariff calendar"
    return schema


def calendar_body(calendar: TariffCalendar) -> dict[str, Any]:
    """The JSON ``body`` of a tariff-calendar command."""
    return calendar.model_dump(mode="json")


def calendar_from_body(body: Mapping[str, object] | None, where: str = "tariff-calendar body") -> TariffCalendar:
    """A command body back into a calendar; ConfigurationError names the first bad field."""
    try:
        return TariffCalendar.model_validate(body or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "(body)"
        raise ConfigurationError(f"{where}: {loc}: {first['msg']}") from None


@dataclass(frozen=True, slots=True)
class TariffProblem:
    line: int
    field: str
    reason: str


class TariffFileError(ConfigurationError):
    """A tariff file that cannot be used; every problem found, each with its line."""

    def __init__(self, path: str, problems: list[TariffProblem]) -> None:
        self.path = path
        self.problems = problems
        lines = [f"{path}:{p.line}: {p.field or '(file)'}: {p.reason}" for p in problems]
        super().__init__("\n".join(lines))


def load_tariff_file(path: Path) -> TariffCalendar:
    """Read and check one tariff file; :class:`TariffFileError` lists every problem with its line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"tariff file {path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise TariffFileError(str(path), [TariffProblem(1, "", "not UTF-8 text")]) from None
    return parse_tariff(text, str(path))


def parse_tariff(text: str, path: str = "<tariff>") -> TariffCalendar:
    """Parse tariff YAML text (``path`` only names it in errors)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise TariffFileError(
            path, [TariffProblem(line, "", f"not valid YAML: {exc.problem or exc.context}")]
        ) from None
    except yaml.YAMLError as exc:
        raise TariffFileError(path, [TariffProblem(1, "", f"not valid YAML: {exc}")]) from None
    if node is None or not isinstance(data, dict):
        raise TariffFileError(path, [TariffProblem(1, "", "expected a mapping (name:, seasons:, weeks:, days:)")])
    try:
        return TariffCalendar.model_validate(data)
    except ValidationError as exc:
        problems = [
            TariffProblem(_line(node, list(err["loc"])), ".".join(str(p) for p in err["loc"]), _reason(err))
            for err in exc.errors()[:MAX_PROBLEMS]
        ]
        raise TariffFileError(path, sorted(problems, key=lambda p: p.line)) from None


def _reason(err: Mapping[str, Any]) -> str:
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def _line(node: yaml.Node, loc: list[int | str]) -> int:
    """The line of the deepest node ``loc`` reaches (1-based)."""
    line = node.start_mark.line + 1
    for step in loc:
        if isinstance(node, yaml.MappingNode):
            found = next((v for k, v in node.value if k.value == step), None)
            if found is None:
                return line
            key = next(k for k, v in node.value if k.value == step)
            node, line = found, key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            node = node.value[step]
            line = node.start_mark.line + 1
        else:
            return line
    return line
