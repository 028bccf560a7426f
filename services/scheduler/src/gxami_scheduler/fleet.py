"""Fleet files: the meter registry as YAML (``meters:`` list) or CSV (header row), validated whole.

One bad row refuses the whole file: ``FleetFileError`` lists every problem as
``file:line: field: reason`` so an operator can fix them in one pass.

Meters that push or dial in (``connection: push`` / ``dial-in``) are not polled: their
``address`` is informative (where they push to, or were last seen) and ``schedule`` is how
often they are expected to report. A listener recognises them by the identities given here:
``system_title`` (DLMS, 16 hex digits), ``serial`` (serial number or logical device name the
meter sends), ``wmbus_id``; a push meter needs at least one.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, get_args
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from gxami_contracts.fleet import Connection
from gxami_contracts.messages import MeterId
from gxami_scheduler.schedules import NAME_PATTERN, FleetGroup, NamedSchedule, NetworkSegment
from gxcore.errors import ConfigurationError
from gxcore.media.endpoint import Endpoint
from gxcore.profiles import ProfileCatalog
from gxcore.profiles.model import Purpose

MAX_FILE_BYTES = 64 << 20  # a million meters fit comfortably; anything larger is a mistake
MAX_PROBLEMS = 50  # reported per file; past that the file is clearly the wrong one
MIN_INTERVAL_S = 60
MAX_INTERVAL_S = 366 * 86400
DEFAULT_PURPOSES: tuple[str, ...] = ("billing", "load-profile")
KNOWN_PURPOSES = frozenset(get_args(Purpose))

_OPTION_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
# Option names that would carry a password or key. Substrings, plus the short DLMS key names.
_SECRET_WORDS = ("password", "passwd", "secret", "key", "token", "credential")
_SECRET_NAMES = frozenset({"pwd", "pin", "psk", "ak", "ek", "gak", "guek", "kek"})
_STORE_ADVICE = (
    "secrets do not belong in the fleet file; put passwords and keys in the collector's secret store"
    " (keyed by meter id)"
)
_REQUIRED = ("meter_id", "protocol", "address", "profile", "schedule")
# Identifiers are taken as written: YAML would read meter id 0012 as the number 10 (octal).
_TEXT_FIELDS = frozenset(
    {
        "meter_id",
        "protocol",
        "address",
        "profile",
        "group",
        "link_id",
        "connection",
        "system_title",
        "serial",
        "wmbus_id",
        "site",
        "segment",
        "node",
        "submeter_of",
    }
)
# A part of a Kafka topic name, as GXAMI_SITE of the collector (and the meters.site CHECK).
SITE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"
# Filled in by parse_fleet from the top-level maps; a row may not set them itself.
_RESOLVED_FIELDS = frozenset({"plan", "segment_limits"})
_TOP_LEVEL = ("meters", "schedules", "groups", "segments")
# A hierarchy path: site/building/floor..., each segment a plain name.
NODE_PATH = r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}(/[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}){0,7}$"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_INTERVAL = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class FleetProblem:
    """One thing wrong with one row."""

    line: int
    field: str
    reason: str


class FleetFileError(Exception):
    """A fleet file was refused; nothing of it was imported."""

    def __init__(self, path: str, problems: list[FleetProblem]) -> None:
        self.path = path
        self.problems = problems
        lines = [f"{path}:{p.line}: {p.field or '(row)'}: {p.reason}" for p in problems]
        if len(problems) >= MAX_PROBLEMS:
            lines.append(f"{path}: stopped after {MAX_PROBLEMS} problems")
        super().__init__("\n".join(lines))

    @property
    def line(self) -> int:
        return self.problems[0].line

    @property
    def field(self) -> str:
        return self.problems[0].field

    @property
    def reason(self) -> str:
        return self.problems[0].reason


def parse_interval(value: object) -> int:
    """Seconds from ``900``, ``"900"``, ``"900s"``, ``"15m"``, ``"1h"``, ``"1d"``; at least 60 s."""
    if isinstance(value, bool):
        raise ValueError("a read interval such as 15m, 1h or 900s is required")  # noqa: TRY004 - pydantic reports ValueError only
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str) and (m := _INTERVAL.match(value)):
        seconds = int(m.group(1)) * _UNITS[(m.group(2) or "s").lower()]
    else:
        raise ValueError("a read interval such as 15m, 1h or 900s is required")
    if seconds < MIN_INTERVAL_S:
        raise ValueError(f"read interval {seconds} s is shorter than the minimum of {MIN_INTERVAL_S} s")
    if seconds > MAX_INTERVAL_S:
        raise ValueError(f"read interval {seconds} s is longer than a year")
    return seconds


def looks_secret(name: str) -> bool:
    """True for option names that would carry a password or key."""
    low = name.lower()
    return low in _SECRET_NAMES or any(word in low for word in _SECRET_WORDS)


def _parse_options(value: object) -> object:
    """``key=value;key=value`` (CSV) or a mapping of scalars, to a str -> str mapping."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        out: dict[str, str] = {}
        for part in value.split(";"):
            if not part.strip():
                continue
            name, sep, val = part.partition("=")
            if not sep:
                raise ValueError(f"option {name.strip()!r} needs a value: write key=value;key=value")
            out[name.strip()] = val.strip()
        value = out
    if not isinstance(value, Mapping):
        raise ValueError("options must be a mapping (YAML) or key=value;key=value (CSV)")  # noqa: TRY004 - as above
    result: dict[str, str] = {}
    for name, val in value.items():
        if not isinstance(name, str) or not _OPTION_NAME.match(name):
            raise ValueError(f"option name {name!r} must be a letter then letters, digits, '_', '.', '-'")
        if looks_secret(name):
            raise ValueError(f"option {name!r} is refused: {_STORE_ADVICE}")
        if isinstance(val, bool):
            result[name] = "true" if val else "false"
        elif isinstance(val, str | int | float):
            result[name] = str(val)
        else:
            raise ValueError(f"option {name!r} must be one value: text, number or true/false")  # noqa: TRY004 - as above
    return result


def _parse_purposes(value: object) -> object:
    if value is None or value == "":
        return list(DEFAULT_PURPOSES)
    if isinstance(value, str):
        return [p for p in re.split(r"[;,\s]+", value) if p]
    return value


def _default_purposes() -> list[Purpose]:
    return ["billing", "load-profile"]


Interval = Annotated[int, BeforeValidator(parse_interval)]


class FleetMeter(BaseModel):
    """One meter of the fleet, as written in the file and checked."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    meter_id: MeterId
    protocol: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=32)
    address: str = Field(min_length=1, max_length=500)
    profile: str = Field(min_length=1, max_length=100)
    group: str = Field(default="", max_length=100)
    schedule: Interval
    link_id: str | None = Field(default=None, max_length=200)
    options: Annotated[dict[str, str], BeforeValidator(_parse_options)] = Field(default_factory=dict)
    purposes: Annotated[list[Purpose], BeforeValidator(_parse_purposes)] = Field(
        default_factory=_default_purposes, min_length=1
    )
    enabled: bool = True
    connection: Connection = "poll"
    system_title: str | None = Field(default=None, pattern=r"^[0-9A-Fa-f]{16}$")
    serial: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[^\x00]*$")
    wmbus_id: str | None = Field(default=None, pattern=r"^[0-9A-Za-z]{1,32}$")
    # The edge site whose collector reads the meter: its jobs go to ``ami.read-jobs.<site>``.
    site: str | None = Field(default=None, pattern=SITE_PATTERN)
    # Names from the top-level `schedules:` map; replaces the group's schedules for this meter.
    schedules: Annotated[list[str], BeforeValidator(_parse_purposes)] = Field(default_factory=list)
    segment: str | None = Field(default=None, pattern=NAME_PATTERN)
    # Resolved by parse_fleet (meter override, else its group's); empty: the plain `schedule` interval.
    plan: dict[str, NamedSchedule] = Field(default_factory=dict)
    segment_limits: NetworkSegment | None = None
    # Where the meter sits in the site -> building -> feeder/floor tree, e.g. site-a/building-1/floor-2.
    node: str | None = Field(default=None, pattern=NODE_PATH)
    # The main meter this one is a submeter of (the residual, main minus submeters, is reported).
    submeter_of: MeterId | None = None

    @field_validator("system_title")
    @classmethod
    def _lower_title(cls, title: str | None) -> str | None:
        return title.lower() if title else None  # drivers report it in lower-case hex

    @field_validator("wmbus_id")
    @classmethod
    def _upper_wmbus_id(cls, ident: str | None) -> str | None:
        return ident.upper() if ident else None  # receivers report manufacturer and hex ID digits in upper case

    @model_validator(mode="after")
    def _identified(self) -> FleetMeter:
        if self.connection == "push" and not (self.system_title or self.serial or self.wmbus_id):
            raise ValueError("a meter with connection: push needs system_title, serial or wmbus_id to be recognised")
        if self.submeter_of == self.meter_id:
            raise ValueError("a meter cannot be a submeter of itself")
        return self

    @property
    def polled(self) -> bool:
        """True when the scheduler reads the meter at its address (not a meter that pushes or dials in)."""
        return self.connection == "poll"

    @field_validator("address")
    @classmethod
    def _valid_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if "@" in parts.netloc:
            # Do not echo it: the user part may hold a password.
            raise ValueError(f"meter URL must not carry user or password; {_STORE_ADVICE}")
        for name, _ in parse_qsl(parts.query):
            if looks_secret(name):
                raise ValueError(f"meter URL parameter {name!r} is refused: {_STORE_ADVICE}")
        try:
            Endpoint.parse(url)
        except ConfigurationError as exc:
            raise ValueError(exc.reason) from None
        return url

    @field_validator("purposes")
    @classmethod
    def _unique_purposes(cls, purposes: list[str]) -> list[str]:
        return list(dict.fromkeys(purposes))

    @property
    def interval_s(self) -> int:
        """The read interval in seconds."""
        return self.schedule

    @property
    def link(self) -> str:
        """The link id jobs are keyed by: as given, else derived from the address."""
        return self.link_id or default_link_id(self.address)


def default_link_id(url: str) -> str:
    """The shared link a meter is reached over: the endpoint for tcp/udp, the device for serial.

    tcp/udp: scheme://host:port, so meters behind one gateway address share a link; serial: the
    URL without its query (``serial:///dev/ttyUSB0``), so all meters on one RS-485 bus share it.
    """
    parts = urlsplit(url)
    if parts.scheme in {"tcp", "udp"}:
        return urlunsplit((parts.scheme, parts.netloc, "", "", ""))
    if parts.scheme == "serial":
        return url.split("?", 1)[0].split("#", 1)[0]
    return url


@dataclass(slots=True)
class FleetPlanMaps:
    """The top-level ``schedules:``, ``groups:`` and ``segments:`` maps of a YAML fleet file."""

    schedules: dict[str, NamedSchedule] = field(default_factory=dict)
    groups: dict[str, FleetGroup] = field(default_factory=dict)
    segments: dict[str, NetworkSegment] = field(default_factory=dict)


@dataclass(slots=True)
class _Row:
    line: int
    data: Any
    field_lines: dict[str, int] = field(default_factory=dict)


class _Problems:
    def __init__(self, path: str) -> None:
        self.path = path
        self.items: list[FleetProblem] = []

    def add(self, line: int, field_name: str, reason: str) -> None:
        if len(self.items) < MAX_PROBLEMS:
            self.items.append(FleetProblem(line, field_name, reason))

    def refuse(self) -> FleetFileError:
        return FleetFileError(self.path, sorted(self.items, key=lambda p: p.line))


def _field_problems(exc: ValidationError) -> Iterator[tuple[str, str]]:
    for err in exc.errors(include_input=False):
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        yield loc, msg


def _yaml_rows(path: str, text: str, problems: _Problems, maps: FleetPlanMaps) -> list[_Row]:
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)  # already checks the characters, so inside the try
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problems.add(mark.line + 1 if mark else 1, "", f"not valid YAML: {exc.problem or exc.context}")
        raise problems.refuse() from None
    except yaml.reader.ReaderError as exc:
        char = f" (#x{exc.character:04x})" if isinstance(exc.character, int) else ""
        problems.add(text.count("\n", 0, exc.position) + 1, "", f"not valid YAML: {exc.reason}{char}")
        raise problems.refuse() from None
    except yaml.YAMLError as exc:
        problems.add(1, "", f"not valid YAML: {type(exc).__name__}")
        raise problems.refuse() from None
    finally:
        if loader is not None:
            loader.dispose()
    if not isinstance(root, yaml.MappingNode) or not isinstance(data, dict):
        problems.add(1, "", "expected a mapping with a top-level 'meters:' list")
        raise problems.refuse()
    meters_node: yaml.Node | None = None
    seen: set[str] = set()
    for key_node, value_node in root.value:
        key = str(key_node.value)
        if key not in _TOP_LEVEL:
            problems.add(key_node.start_mark.line + 1, key, f"unknown top-level key (known: {', '.join(_TOP_LEVEL)})")
            continue
        if key in seen:
            problems.add(key_node.start_mark.line + 1, key, "given twice")
            continue
        seen.add(key)
        if key == "meters":
            meters_node = value_node
        else:
            _plan_map(key, value_node, data[key], problems, maps)
    if meters_node is None or not isinstance(meters_node, yaml.SequenceNode):
        line = meters_node.start_mark.line + 1 if meters_node is not None else 1
        problems.add(line, "meters", "expected a list of meters under 'meters:'")
        raise problems.refuse()
    rows = []
    for item_node, item in zip(meters_node.value, data["meters"], strict=True):
        row = _Row(item_node.start_mark.line + 1, item)
        if isinstance(item_node, yaml.MappingNode):
            for key_node, value_node in item_node.value:
                name = str(key_node.value)
                if name in row.field_lines:
                    problems.add(
                        key_node.start_mark.line + 1,
                        name,
                        f"given twice in one meter (first at line {row.field_lines[name]})",
                    )
                row.field_lines[name] = value_node.start_mark.line + 1
                if name in _TEXT_FIELDS and isinstance(value_node, yaml.ScalarNode) and isinstance(item, dict):
                    item[name] = None if value_node.tag.endswith(":null") else value_node.value
        rows.append(row)
    return rows


def _plan_map(key: str, node: yaml.Node, value: object, problems: _Problems, maps: FleetPlanMaps) -> None:
    """Validate one of the top-level name -> definition maps into ``maps``."""
    if not isinstance(node, yaml.MappingNode) or not isinstance(value, dict):
        problems.add(node.start_mark.line + 1, key, f"expected a mapping of names under '{key}:'")
        return
    models: dict[str, type[NamedSchedule] | type[FleetGroup] | type[NetworkSegment]] = {
        "schedules": NamedSchedule,
        "groups": FleetGroup,
        "segments": NetworkSegment,
    }
    model = models[key]
    target: dict[str, Any] = getattr(maps, key)
    for name_node, item_node in node.value:
        name = str(name_node.value)
        line = name_node.start_mark.line + 1
        if key != "groups" and not re.match(NAME_PATTERN, name):
            problems.add(line, f"{key}.{name}", "a name is a letter then letters, digits, '_', '.', '-'")
            continue
        try:
            target[name] = model.model_validate(
                value[name_node.value] if value.get(name_node.value) is not None else {}
            )
        except ValidationError as exc:
            for loc, msg in _field_problems(exc):
                problems.add(item_node.start_mark.line + 1, f"{key}.{name}.{loc}" if loc else f"{key}.{name}", msg)


def _resolve_plan(meter: FleetMeter, maps: FleetPlanMaps) -> tuple[FleetMeter | None, str, str]:
    """The meter with its schedules and segment looked up; or None and the field and reason of a problem."""
    group = maps.groups.get(meter.group)
    names = meter.schedules or (group.schedules if group else [])
    for name in names:
        if name not in maps.schedules:
            return None, "schedules", f"unknown schedule {name!r} (not in the top-level 'schedules:' map)"
    segment = meter.segment or (group.segment if group else None)
    if segment is not None and segment not in maps.segments:
        return None, "segment", f"unknown segment {segment!r} (not in the top-level 'segments:' map)"
    if not names and segment is None:
        return meter, "", ""
    update: dict[str, object] = {"plan": {n: maps.schedules[n] for n in names}, "segment": segment}
    update["segment_limits"] = maps.segments[segment] if segment is not None else None
    return meter.model_copy(update=update), "", ""


def _csv_rows(text: str, problems: _Problems) -> list[_Row]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    rows: list[_Row] = []
    try:
        while True:
            start = reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                break
            if not cells or all(not c.strip() for c in cells) or cells[0].lstrip().startswith("#"):
                continue
            if header is None:
                header = [c.strip().lower() for c in cells]
                _check_header(header, start, problems)
                if problems.items:
                    return rows
                continue
            if len(cells) != len(header):
                problems.add(start, "", f"has {len(cells)} cells, the header has {len(header)}")
                continue
            data = {h: c for h, c in zip(header, cells, strict=True) if c.strip() != ""}
            rows.append(_Row(start, data, dict.fromkeys(header, start)))
    except csv.Error as exc:
        problems.add(reader.line_num, "", f"not valid CSV: {exc}")
    if header is None:
        problems.add(1, "", "empty file; expected a header row such as meter_id,protocol,address,...")
    return rows


def _check_header(header: list[str], line: int, problems: _Problems) -> None:
    known = set(FleetMeter.model_fields) - _RESOLVED_FIELDS
    for dup in sorted({h for h in header if header.count(h) > 1}):
        problems.add(line, dup, "column given twice in the header")
    for name in header:
        if name not in known:
            problems.add(line, name, f"unknown column (known: {', '.join(sorted(known))})")
    for name in _REQUIRED:
        if name not in header:
            problems.add(line, name, "required column missing from the header")


def parse_fleet(path: str, text: str, profiles: ProfileCatalog | None = None) -> list[FleetMeter]:
    """Validate a whole fleet file; raise FleetFileError listing every problem, or return all meters."""
    problems = _Problems(path)
    suffix = Path(path).suffix.lower()
    maps = FleetPlanMaps()
    if suffix in {".yaml", ".yml"}:
        rows = _yaml_rows(path, text, problems, maps)
    elif suffix == ".csv":
        rows = _csv_rows(text, problems)
    else:
        problems.add(1, "", "unknown file type: name it .yaml, .yml or .csv")
        raise problems.refuse()
    meters: list[FleetMeter] = []
    first_line: dict[str, int] = {}
    for row in rows:
        if not isinstance(row.data, dict):
            problems.add(row.line, "", "each meter must be a mapping of fields")
            continue
        resolved_given = sorted(_RESOLVED_FIELDS & set(row.data))
        if resolved_given:
            for name in resolved_given:
                problems.add(row.field_lines.get(name, row.line), name, "unknown field")
            continue
        try:
            meter = FleetMeter.model_validate(row.data)
        except ValidationError as exc:
            for loc, msg in _field_problems(exc):
                problems.add(row.field_lines.get(loc.split(".")[0], row.line), loc, msg)
            continue
        if meter.meter_id in first_line:
            problems.add(
                row.field_lines.get("meter_id", row.line),
                "meter_id",
                f"duplicate meter id {meter.meter_id!r} (first at line {first_line[meter.meter_id]})",
            )
            continue
        first_line[meter.meter_id] = row.field_lines.get("meter_id", row.line)
        resolved, bad_field, reason = _resolve_plan(meter, maps)
        if resolved is None:
            problems.add(row.field_lines.get(bad_field, row.line), bad_field, reason)
            continue
        meter = resolved
        if profiles is not None:
            profile_reason = _profile_problem(meter, profiles)
            if profile_reason:
                problems.add(row.field_lines.get("profile", row.line), "profile", profile_reason)
                continue
        meters.append(meter)
    known = {m.meter_id for m in meters}
    for row_meter in meters:
        if row_meter.submeter_of is not None and row_meter.submeter_of not in known:
            line = first_line[row_meter.meter_id]
            problems.add(line, "submeter_of", f"main meter {row_meter.submeter_of!r} is not in the fleet file")
    if problems.items:
        raise problems.refuse()
    return meters


def _profile_problem(meter: FleetMeter, profiles: ProfileCatalog) -> str | None:
    try:
        profile = profiles.get(meter.profile)
    except ConfigurationError as exc:
        return exc.reason
    if profile.protocol != meter.protocol:
        return f"profile {profile.name!r} is for protocol {profile.protocol!r}, the meter speaks {meter.protocol!r}"
    return None


def read_fleet_file(path: Path, profiles: ProfileCatalog | None = None) -> list[FleetMeter]:
    """Read and validate a fleet file from disk."""
    problems = _Problems(str(path))
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            problems.add(1, "", f"file is {size} bytes, more than the {MAX_FILE_BYTES} allowed")
            raise problems.refuse()
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        problems.add(1, "", f"cannot read the file ({exc.strerror})")
        raise problems.refuse() from None
    except UnicodeDecodeError as exc:
        problems.add(text_line_of(path, exc.start), "", "not UTF-8 text")
        raise problems.refuse() from None
    return parse_fleet(str(path), text, profiles)


def text_line_of(path: Path, byte_offset: int) -> int:
    """Line number (1-based) of a byte offset in a file, for encoding errors."""
    with path.open("rb") as fh:
        return fh.read(byte_offset).count(b"\n") + 1
