"""Named schedules and network segments of the fleet file: when each run of a meter falls, and its class.

A schedule is either an ``interval`` (absolute time: a 15-minute read every 900 s, whatever the
clock on the wall says) or a ``cron`` expression evaluated in the schedule's ``timezone`` (the
meter's local time: ``0 0 * * *`` is local midnight, 23 h or 25 h apart across DST changes).
Interval runs are spread over their interval by a stable per-meter offset (a hash of meter id and
schedule name, see ``planner.spread``) so that replicas, restarts and previews agree. A ``window``
(local ``HH:MM-HH:MM``, may wrap past midnight) keeps runs inside it: a run that would fall
outside moves to the first run at or after the next window start.

Priority classes, highest first: command, on-demand, billing, interval, back-fill. The claim
query orders by the class (``PriorityClass`` value, larger first), so when the claim limit binds
a higher class takes the slots a lower one would have had.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from enum import IntEnum
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from gxami_scheduler.planner import spread
from gxcore.profiles.model import Purpose

# A window that no run of the schedule can ever hit would loop forever; past this many skipped
# runs the schedule is refused at the first run it is asked for.
_MAX_SKIPS = 10_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_NAME = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"


class PriorityClass(IntEnum):
    """Claim order: a larger value is claimed first."""

    BACKFILL = 10
    INTERVAL = 20
    BILLING = 30
    ON_DEMAND = 40
    COMMAND = 50

    @property
    def label(self) -> str:
        return _LABELS[self]

    @classmethod
    def parse(cls, value: object) -> PriorityClass:
        """From its fleet-file name (``billing``, ``back-fill``, ...) or its number."""
        if isinstance(value, PriorityClass):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(value)
        if isinstance(value, str) and value.strip().lower() in _BY_LABEL:
            return _BY_LABEL[value.strip().lower()]
        raise ValueError(f"priority must be one of {', '.join(_BY_LABEL)}")


_LABELS = {
    PriorityClass.BACKFILL: "back-fill",
    PriorityClass.INTERVAL: "interval",
    PriorityClass.BILLING: "billing",
    PriorityClass.ON_DEMAND: "on-demand",
    PriorityClass.COMMAND: "command",
}
_BY_LABEL = {label: cls for cls, label in _LABELS.items()}


@dataclass(frozen=True, slots=True)
class LocalWindow:
    """Local wall-clock hours a schedule may run in; ``end`` before ``start`` wraps past midnight."""

    start: time
    end: time

    @classmethod
    def parse(cls, value: object) -> LocalWindow:
        if isinstance(value, LocalWindow):
            return value
        m = _WINDOW.match(value) if isinstance(value, str) else None
        if m is None:
            raise ValueError("window must be local HH:MM-HH:MM, e.g. 01:00-05:00")
        h1, m1, h2, m2 = (int(g) for g in m.groups())
        if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2 != 0):
            raise ValueError("window hours are 00:00 to 24:00")
        start = time(h1, m1)
        end = time(0, 0) if h2 == 24 else time(h2, m2)
        if start == end:
            raise ValueError("window start and end are the same; leave the window out for all day")
        return cls(start, end)

    def contains(self, local: datetime) -> bool:
        t = local.time()
        if self.start < self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end

    def next_start(self, local: datetime) -> datetime:
        """The first window start strictly after ``local`` (aware, in the same zone)."""
        tz = local.tzinfo
        day = local.date()
        for offset in (0, 1, 2):
            candidate = datetime.combine(day + timedelta(days=offset), self.start, tz)
            # A start inside a DST gap resolves to the instant after the gap (fold=0 maps forward).
            candidate = candidate.astimezone(UTC).astimezone(tz)
            if candidate > local:
                return candidate
        raise AssertionError("unreachable: a window starts every day")

    def __str__(self) -> str:
        end = "24:00" if self.end == time(0, 0) and self.start != time(0, 0) else self.end.strftime("%H:%M")
        return f"{self.start.strftime('%H:%M')}-{end}"


def _parse_interval(value: object) -> object:
    from gxami_scheduler.fleet import parse_interval  # fleet imports this module

    return None if value is None else parse_interval(value)


def _parse_purposes(value: object) -> object:
    if isinstance(value, str):
        return [p for p in re.split(r"[;,\s]+", value) if p]
    return value


class NamedSchedule(BaseModel):
    """One entry of the fleet file's ``schedules:`` map."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    interval: Annotated[int | None, BeforeValidator(_parse_interval)] = None
    cron: str | None = Field(default=None, max_length=200)
    timezone: str = Field(default="UTC", max_length=64)
    purposes: Annotated[list[Purpose], BeforeValidator(_parse_purposes)] = Field(min_length=1)
    window: Annotated[LocalWindow | None, BeforeValidator(lambda v: None if v is None else LocalWindow.parse(v))] = None
    priority: Annotated[PriorityClass, BeforeValidator(PriorityClass.parse)] = PriorityClass.INTERVAL

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, expr: str | None) -> str | None:
        if expr is not None and not croniter.is_valid(expr):
            raise ValueError(f"cron expression {expr!r} is not valid (five fields: minute hour day month weekday)")
        return expr

    @field_validator("timezone")
    @classmethod
    def _valid_zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r} (an IANA name such as Europe/Berlin)") from None
        return name

    @field_validator("priority")
    @classmethod
    def _not_command(cls, priority: PriorityClass) -> PriorityClass:
        if priority >= PriorityClass.ON_DEMAND:
            raise ValueError("a schedule's priority is billing, interval or back-fill (not command or on-demand)")
        return priority

    @model_validator(mode="after")
    def _one_kind(self) -> NamedSchedule:
        if (self.interval is None) == (self.cron is None):
            raise ValueError("a schedule needs exactly one of interval (e.g. 15m) or cron (e.g. '0 0 * * *')")
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def to_json(self) -> dict[str, Any]:
        """The form kept in the registry (``meters.options``) and read back by ``from_json``."""
        return {
            "interval": self.interval,
            "cron": self.cron,
            "timezone": self.timezone,
            "purposes": list(self.purposes),
            "window": str(self.window) if self.window else None,
            "priority": self.priority.label,
        }

    def next_run(self, name: str, meter_id: str, after: datetime) -> datetime:
        """The first run of this schedule for ``meter_id`` strictly after ``after`` (UTC)."""
        at = self._next_raw(name, meter_id, after)
        if self.window is None:
            return at
        zone = self.zone
        for _ in range(_MAX_SKIPS):
            local = at.astimezone(zone)
            if self.window.contains(local):
                return at
            # The first run at or after the next window start.
            at = self._next_raw(name, meter_id, self.window.next_start(local) - timedelta(microseconds=1))
        raise ValueError(f"schedule {name!r}: no run falls inside its window {self.window}")

    def _next_raw(self, name: str, meter_id: str, after: datetime) -> datetime:
        if self.interval is not None:
            # Whole microseconds, so that the run after a run is exactly one interval later (no float drift).
            step = self.interval * 1_000_000
            offset = math.floor(spread(meter_id, f"schedule:{name}") * step)
            t = (after - _EPOCH) // timedelta(microseconds=1) - offset
            return _EPOCH + timedelta(microseconds=(t // step + 1) * step + offset)
        assert self.cron is not None  # _one_kind guarantees it; narrows for mypy
        local_after = after.astimezone(self.zone)
        nxt: datetime = croniter(self.cron, local_after).get_next(datetime)
        return nxt.astimezone(UTC)


def schedule_from_json(data: Mapping[str, Any]) -> NamedSchedule:
    return NamedSchedule.model_validate({k: v for k, v in data.items() if v is not None})


@dataclass(frozen=True, slots=True)
class PlannedRun:
    """One run of a meter: when, what to read, and its claim class."""

    at: datetime
    meter_id: str
    schedules: tuple[str, ...]
    purposes: tuple[str, ...]
    priority: PriorityClass


@dataclass(frozen=True, slots=True)
class MeterPlan:
    """The named schedules that apply to one meter (from its group, or its own override)."""

    schedules: Mapping[str, NamedSchedule]

    def next_run(self, meter_id: str, after: datetime) -> PlannedRun:
        """The meter's next run after ``after``; schedules falling on the same instant are merged into one job."""
        if not self.schedules:
            raise ValueError("a meter plan needs at least one schedule")
        times = {name: s.next_run(name, meter_id, after) for name, s in self.schedules.items()}
        at = min(times.values())
        names = tuple(sorted(n for n, t in times.items() if t == at))
        purposes: dict[str, None] = {}
        for n in names:
            purposes.update(dict.fromkeys(self.schedules[n].purposes))
        priority = max(self.schedules[n].priority for n in names)
        return PlannedRun(at, meter_id, names, tuple(purposes), priority)

    def runs(self, meter_id: str, start: datetime, end: datetime) -> Iterator[PlannedRun]:
        """Every run after ``start`` up to and including ``end``."""
        at = start
        while True:
            run = self.next_run(meter_id, at)
            if run.at > end:
                return
            yield run
            at = run.at

    def to_json(self) -> dict[str, Any]:
        return {name: s.to_json() for name, s in sorted(self.schedules.items())}

    @classmethod
    def from_json(cls, data: object) -> MeterPlan | None:
        if not isinstance(data, Mapping) or not data:
            return None
        return cls({str(n): schedule_from_json(s) for n, s in data.items() if isinstance(s, Mapping)})


SegmentKind = Literal["apn", "cell", "concentrator", "head-end"]


class NetworkSegment(BaseModel):
    """One entry of the fleet file's ``segments:`` map: a shared network part and its limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: SegmentKind
    max_sessions: int = Field(ge=1, le=100_000, description="sessions open at once over the segment")
    max_new_per_s: float = Field(default=0, ge=0, le=10_000, description="new connections per second; 0: no limit")

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "max_sessions": self.max_sessions, "max_new_per_s": self.max_new_per_s}


class FleetGroup(BaseModel):
    """One entry of the fleet file's ``groups:`` map: the schedules and segment its meters get."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schedules: Annotated[list[str], BeforeValidator(_parse_purposes)] = Field(default_factory=list)
    segment: str | None = Field(default=None, pattern=_NAME)


NAME_PATTERN = _NAME
