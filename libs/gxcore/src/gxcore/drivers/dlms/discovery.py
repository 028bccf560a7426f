"""Association view discovery: what a meter holds (0-0:40.0.0 object_list), as a device profile.

The object list is parsed by :func:`parse_object_list`; :func:`discover_profile` then
reads what each useful object says about itself and writes one point per value:

* Register (3), Extended register (4), Demand register (5): scaler_unit gives the meter's
  unit; the point takes the canonical unit of that dimension (Wh -> kWh, W -> kW, var ->
  kvar, ...) and the driver converts. The purpose follows OBIS value group D: 8 (energy),
  6 (maximum demand), 2/3 (cumulative maximum) -> billing; 7 (instantaneous) ->
  instantaneous and diagnostics; anything else -> diagnostics.
* Profile generic (7) with capture objects: a register column becomes a ``load-profile``
  point (option ``profile``), an event code column (0-x:96.11.n) an ``events`` point.

Objects the client may not read are left out and reported as notes, never guessed at.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from gxcore.drivers.dlms.reader import DlmsSession
from gxcore.errors import ProtocolError
from gxcore.profiles.model import DeviceProfile, OptionValue, ProfilePoint
from gxcore.protocols.dlms.events import is_event_code
from gxcore.protocols.dlms.obis import obis_from_bytes, parse_obis, reduced
from gxcore.protocols.dlms.parameters import CLASS_PROFILE_GENERIC
from gxcore.protocols.dlms.profile import CaptureObject, parse_capture_objects
from gxcore.units import canonical_unit

ASSOCIATION: Final = "0.0.40.0.0.255"
DEVICE_NAME: Final = "0.0.42.0.0.255"
VALUE_CLASSES: Final = frozenset({3, 4, 5})
# The unit a profile point uses for each meter unit: the usual one of its dimension.
CANONICAL_UNITS: Final[dict[str, str]] = {
    "Wh": "kWh",
    "W": "kW",
    "varh": "kvarh",
    "var": "kvar",
    "VAh": "kVAh",
    "VA": "kVA",
}
_NAME: Final = re.compile(r"[^a-z0-9._-]+")


@dataclass(frozen=True, slots=True)
class CosemObjectInfo:
    """One object of an association view and what this client may do with it."""

    class_id: int
    version: int
    obis: str
    readable: frozenset[int]
    writable: frozenset[int]
    methods: frozenset[int]


def parse_object_list(value: object) -> tuple[CosemObjectInfo, ...]:
    """Decode an Association LN's object_list (array of {class_id, version, logical_name, access_rights})."""
    if not isinstance(value, list):
        raise ProtocolError("object list is not an array")
    out: list[CosemObjectInfo] = []
    for pos, item in enumerate(value):
        if not (isinstance(item, list) and len(item) == 4):
            raise ProtocolError(f"object list entry {pos} is not a structure of 4")
        class_id, version, ln, rights = item
        if not (isinstance(class_id, int) and isinstance(version, int) and isinstance(ln, bytes | bytearray)):
            raise ProtocolError(f"object list entry {pos} has no class id, version or logical name")
        readable, writable, methods = _rights(rights)
        out.append(CosemObjectInfo(class_id, version, obis_from_bytes(ln), readable, writable, methods))
    return tuple(out)


def _rights(rights: object) -> tuple[frozenset[int], frozenset[int], frozenset[int]]:
    """Readable and writable attributes, callable methods; absent rights mean "ask and see"."""
    readable: set[int] = set()
    writable: set[int] = set()
    methods: set[int] = set()
    if not (isinstance(rights, list) and len(rights) >= 1 and isinstance(rights[0], list)):
        return frozenset(range(1, 33)), frozenset(), frozenset()
    for entry in rights[0]:
        if isinstance(entry, list) and len(entry) >= 2 and isinstance(entry[0], int) and isinstance(entry[1], int):
            if entry[1] & 1:
                readable.add(entry[0])
            if entry[1] & 2:
                writable.add(entry[0])
    if len(rights) > 1 and isinstance(rights[1], list):
        for entry in rights[1]:
            if isinstance(entry, list) and len(entry) >= 2 and isinstance(entry[0], int) and entry[1]:
                methods.add(entry[0])
    return frozenset(readable), frozenset(writable), frozenset(methods)


async def read_object_list(session: DlmsSession, association: str = ASSOCIATION) -> tuple[CosemObjectInfo, ...]:
    """The association view of the current association."""
    return parse_object_list(await session.get(15, association, 2))


def purpose_of(obis: str) -> list[str]:
    """Profile purposes for a value by its OBIS value group D (see the module doc)."""
    _a, _b, _c, d, _e, _f = parse_obis(obis)
    if d in (2, 3, 6, 8):
        return ["billing"]
    if d == 7:
        return ["instantaneous", "diagnostics"]
    return ["diagnostics"]


def point_unit(meter_unit: str) -> str:
    """The unit a discovered point uses for a meter unit (the meter's own when it has no usual one)."""
    return CANONICAL_UNITS.get(meter_unit, canonical_unit(meter_unit))


@dataclass(frozen=True, slots=True)
class Discovery:
    """A discovered profile and what was left out of it (one line per object, reason given)."""

    profile: DeviceProfile
    objects: tuple[CosemObjectInfo, ...]
    notes: tuple[str, ...]


async def discover_profile(
    session: DlmsSession, *, name: str | None = None, parameters: dict[str, OptionValue] | None = None
) -> Discovery:
    """Read the association view and each value's scaler/unit; build a DeviceProfile for protocol ``dlms``."""
    objects = await read_object_list(session)
    notes: list[str] = []
    points: list[ProfilePoint] = []
    units: dict[str, str] = {}
    for info in objects:
        if info.class_id not in VALUE_CLASSES:
            continue
        try:
            _scaler, unit = await session.scaler_unit(info.obis, info.class_id)
        except ProtocolError as exc:
            if session.broken:
                raise
            notes.append(f"{info.class_id}/{info.obis}: left out ({exc.reason})")
            continue
        units[info.obis] = unit
        points.append(_value_point(info.class_id, info.obis, unit, purpose_of(info.obis), {}))
    for info in objects:
        if info.class_id == CLASS_PROFILE_GENERIC:
            points.extend(await _profile_points(session, info, units, notes))
    device = await _device_name(session, objects)
    profile_name = name or _profile_name(device or f"{session.host}-{session.port}")
    try:
        profile = DeviceProfile(
            name=profile_name,
            protocol="dlms",
            manufacturer=device[:3] if device and device[:3].isalpha() else "",
            description=f"Discovered from the association view of {device or session.host}",
            parameters=dict(parameters or {}),
            points=points,
        )
    except ValueError as exc:  # pydantic's ValidationError: no point, or a name that does not fit
        raise ProtocolError(f"the meter's objects do not make a valid profile ({type(exc).__name__})") from None
    return Discovery(profile, objects, tuple(notes))


def _value_point(
    class_id: int, obis: str, meter_unit: str, purpose: list[str], options: dict[str, OptionValue]
) -> ProfilePoint:
    described = {3: "register", 4: "extended register", 5: "demand register (last average)"}.get(class_id, "value")
    return ProfilePoint(
        quantity=reduced(obis),
        unit=point_unit(meter_unit),  # the driver converts the meter's unit to this one
        source=f"{class_id}/{obis}",
        purpose=purpose,  # type: ignore[arg-type]  # values from purpose_of are Purpose literals
        description=f"{described}, meter unit {meter_unit or 'none'}",
        options=options,
    )


async def _profile_points(
    session: DlmsSession, info: CosemObjectInfo, units: dict[str, str], notes: list[str]
) -> list[ProfilePoint]:
    try:
        columns = parse_capture_objects(await session.get(CLASS_PROFILE_GENERIC, info.obis, 3))
    except ProtocolError as exc:
        if session.broken:
            raise
        notes.append(f"7/{info.obis}: capture objects not readable ({exc.reason})")
        return []
    out: list[ProfilePoint] = []
    for column in columns:
        point = await _column_point(session, info.obis, column, units, notes)
        if point is not None:
            out.append(point)
    if not out:
        notes.append(f"7/{info.obis}: captures no register value or event code")
    return out


async def _column_point(
    session: DlmsSession, profile: str, column: CaptureObject, units: dict[str, str], notes: list[str]
) -> ProfilePoint | None:
    if column.attribute != 2 or column.is_clock or column.is_status:
        return None
    if column.class_id == 1 and is_event_code(column.obis):
        return ProfilePoint(
            quantity=reduced(column.obis),
            unit="",
            source=f"1/{column.obis}",
            purpose=["events"],
            description=f"event code of the log {reduced(profile)}",
            options={"profile": profile},
        )
    if column.class_id not in (3, 4):
        return None
    unit = units.get(column.obis)
    if unit is None:
        try:
            _scaler, unit = await session.scaler_unit(column.obis, column.class_id)
        except ProtocolError as exc:
            if session.broken:
                raise
            notes.append(f"7/{profile}: column {column.obis} left out ({exc.reason})")
            return None
    point = _value_point(column.class_id, column.obis, unit, ["load-profile"], {"profile": profile})
    return point.model_copy(update={"description": f"{point.description}, captured by {reduced(profile)}"})


async def _device_name(session: DlmsSession, objects: tuple[CosemObjectInfo, ...]) -> str | None:
    """The logical device name (0-0:42.0.0) as text, when listed and readable."""
    if not any(o.obis == DEVICE_NAME for o in objects):
        return None
    try:
        raw = await session.get(1, DEVICE_NAME, 2)
    except ProtocolError:
        if session.broken:
            raise
        return None
    if isinstance(raw, bytes | bytearray):
        return bytes(raw).decode("ascii", "replace")
    return str(raw) if isinstance(raw, str) else None


def _profile_name(text: str) -> str:
    cleaned = _NAME.sub("-", text.lower()).strip("-._") or "meter"
    return f"discovered-{cleaned}"[:64]
