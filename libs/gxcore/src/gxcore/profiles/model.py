"""Device profiles: which points to read from a device type and how to map them.

A profile is a declarative YAML file validated here. Each point names a canonical
quantity (OBIS-style, ``1-0:1.8.0``), its unit, what it is for (billing, diagnostics,
load-profile, events) and a protocol-specific ``source`` address; protocol-specific
details go in ``options`` and are checked by the protocol's driver.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gxcore.errors import ConfigurationError

QUANTITY_PATTERN = r"^[0-9]{1,3}-[0-9]{1,3}:[0-9A-Z]{1,3}\.[0-9A-Z]{1,3}\.[0-9]{1,3}(\.[0-9]{1,3})?$"

Purpose = Literal["billing", "diagnostics", "load-profile", "events", "instantaneous"]
OptionValue = str | int | float | bool | list[str] | list[int]


def _billing_only() -> list[Purpose]:
    return ["billing"]


class ProfilePoint(BaseModel):
    """One thing to read: where it is on the meter and what it means."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    quantity: Annotated[str, Field(pattern=QUANTITY_PATTERN, description="canonical OBIS-style name")]
    unit: str = Field(description="canonical unit after scaling, e.g. kWh, kW, V, A, m3, degC")
    source: str = Field(min_length=1, description="protocol-specific address of the value")
    purpose: list[Purpose] = Field(default_factory=_billing_only, min_length=1)
    scale: float = Field(default=1.0, description="value = raw * scale + offset (after the meter's scaler)")
    offset: float = 0.0
    description: str = ""
    options: dict[str, OptionValue] = Field(default_factory=dict)


class PushObject(BaseModel):
    """One element of a meter's push body, in push order (its push setup's object list).

    ``scaler`` and ``unit`` (the meter's unit symbol, e.g. ``Wh``) apply where the push carries
    a bare value; a value that describes itself keeps its own scaler and unit.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    obis: Annotated[str, Field(pattern=r"^[0-9]{1,3}[.-][0-9.:-]{5,}$", description="OBIS, 1.0.1.8.0.255 or 1-0:1.8.0")]
    class_id: int = Field(default=3, ge=1, le=0xFFFF)
    attribute: int = Field(default=2, ge=1, le=127)
    scaler: int = Field(default=0, ge=-128, le=127)
    unit: str = ""


class DeviceProfile(BaseModel):
    """What to read from one device type, over one protocol."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")]
    protocol: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")]
    description: str = ""
    manufacturer: str = ""
    model: str = ""
    parameters: dict[str, OptionValue] = Field(default_factory=dict)
    points: list[ProfilePoint] = Field(min_length=1)
    # Pushes (meters that push): what each element of the push body is, in push order, and
    # the logical name whose text names a plain push's meter (default: the serial number
    # 0.0.96.1.0.255, else the logical device name 0.0.42.0.0.255). Empty: the body describes itself.
    push_objects: list[PushObject] = Field(default_factory=list, max_length=1024)
    push_identity: Annotated[str | None, Field(pattern=r"^[0-9]{1,3}[.-][0-9.:-]{5,}$")] = None

    def points_for(self, purposes: frozenset[str]) -> list[ProfilePoint]:
        """Points whose purposes intersect ``purposes``."""
        return [p for p in self.points if purposes.intersection(p.purpose)]


# libyaml's safe loader (in PyYAML's wheels) builds the same objects about ten times faster than the
# pure-Python one; every service and CLI call loads the whole catalog at start.
_SAFE_LOADER: type[yaml.SafeLoader] | type[yaml.CSafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_profile(path: Path) -> DeviceProfile:
    """Read and validate one profile file; errors name the file and the field."""
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_SAFE_LOADER)  # noqa: S506 - a safe loader
    except OSError as exc:
        raise ConfigurationError(f"profile {path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigurationError(f"profile {path}:{where} is not valid YAML") from None
    try:
        return DeviceProfile.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ConfigurationError(f"profile {path}: {loc}: {first['msg']}") from None


BUILTIN_DIR = Path(__file__).parent / "data"


class ProfileCatalog:
    """Profiles by name, from the built-in folder and any extra folders (later ones win)."""

    def __init__(self, *folders: Path) -> None:
        self._profiles: dict[str, DeviceProfile] = {}
        for folder in (BUILTIN_DIR, *folders):
            for path in sorted(folder.glob("*.yaml")):
                profile = load_profile(path)
                self._profiles[profile.name] = profile

    def get(self, name: str) -> DeviceProfile:
        try:
            return self._profiles[name]
        except KeyError:
            raise ConfigurationError(
                f"unknown device profile {name!r} (known: {', '.join(sorted(self._profiles)) or 'none'})"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._profiles)


def json_schema() -> str:
    """The JSON Schema of a profile file, for editors."""
    return json.dumps(DeviceProfile.model_json_schema(), indent=2)
