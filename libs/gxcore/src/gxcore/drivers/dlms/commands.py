"""The DLMS driver's commands: a :class:`~gxcore.drivers.api.DriverCommand` run in one association, read back.

Relay kinds (``disconnect``, ``reconnect``, ``arm-reconnect``, ``relay-state``) and clock kinds
(``clock-sync``, ``clock-set``) go through :func:`~gxcore.drivers.dlms.control.run_command`;
``set-attribute`` writes one profile point marked ``writable: true``. Every result is what the
meter reports afterwards: the relay state read back, the clock before and after, the written
attribute read again.

``set-attribute`` takes ``command.point`` as the point's quantity or its source
(``class/obis/attribute``, ``class/obis`` or ``obis``) and ``command.value`` in the point's
unit as read: the profile's scale and offset and the unit conversion are undone, then the
meter's scaler; a value finer than the meter's resolution is a ConfigurationError, as is a
type the attribute does not hold (the current value's A-XDR type is read first and kept).
Numbers and booleans only.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Final

from gxcore.drivers.api import CommandResult, CommandValue, DriverCommand
from gxcore.drivers.dlms.control import DISCONNECT_CONTROL, SHIFT_LIMIT, DlmsCommand, run_command
from gxcore.drivers.dlms.reader import DlmsSession
from gxcore.errors import ConfigurationError, ProtocolError
from gxcore.profiles.model import DeviceProfile
from gxcore.protocols.dlms.association import integer
from gxcore.protocols.dlms.obis import dotted
from gxcore.protocols.dlms.parameters import CLASS_REGISTER
from gxcore.readings import Reading
from gxcore.units import point_value

if TYPE_CHECKING:
    from gxcore.drivers.dlms.driver import DlmsPoint

_RELAY: Final[dict[str, DlmsCommand]] = {
    "disconnect": "disconnect",
    "reconnect": "reconnect",
    "arm-reconnect": "arm-reconnect",
    "relay-state": "read-supply",
}
_CLOCK: Final[dict[str, DlmsCommand]] = {"clock-sync": "clock-sync", "clock-set": "clock-set"}
# gurux DataType codes of the integer types and their ranges.
_INTEGERS: Final = {
    15: (-(2**7), 2**7 - 1),
    16: (-(2**15), 2**15 - 1),
    5: (-(2**31), 2**31 - 1),
    20: (-(2**63), 2**63 - 1),
    17: (0, 2**8 - 1),
    18: (0, 2**16 - 1),
    6: (0, 2**32 - 1),
    21: (0, 2**64 - 1),
    22: (0, 2**8 - 1),  # enum
}
_BOOLEAN, _FLOATS = 3, frozenset({23, 24})
RELAY_QUANTITY: Final = "relay-state"


async def execute_command(
    session: DlmsSession,
    profile: DeviceProfile,
    points: list[DlmsPoint],
    command: DriverCommand,
    *,
    meter_id: str,
    clock: Callable[[], datetime],
) -> CommandResult:
    """Run ``command`` over the unopened ``session`` (see the module doc)."""
    kind = command.kind
    if kind in _RELAY:
        control = _control_obis(command.point)
        done = await run_command(session, _RELAY[kind], clock=clock, disconnect_control=control)
        supply = done.supply
        if supply is None:
            raise ProtocolError(f"meter {meter_id}: {kind} read no relay state back")
        reading = Reading(
            RELAY_QUANTITY,
            float(supply.control_state),
            "",
            clock(),
            extra={"source": control, "state": supply.name, "output_state": int(supply.output_state)},
        )
        return CommandResult(command, state=supply.name, readings=[reading])
    if kind in _CLOCK:
        if kind == "clock-set" and command.clock is None:
            raise ConfigurationError(f"meter {meter_id}: clock-set needs DriverCommand.clock")
        limit = profile.parameters.get("clock_max_shift_s")
        max_shift = None if limit is None else max(1, min(SHIFT_LIMIT, integer(limit, "clock_max_shift_s")))
        done = await run_command(session, _CLOCK[kind], clock=clock, at=command.clock, max_shift_s=max_shift)
        detail = f"shift_time {done.shifted_s:+d} s" if done.shifted_s is not None else ""
        return CommandResult(
            command, meter_time_before=done.meter_time_before, meter_time_after=done.meter_time_after, detail=detail
        )
    if kind == "set-attribute":
        point = writable_point(profile, points, command.point, meter_id)
        async with session:
            reading = await _write(session, point, command.value, meter_id)
        return CommandResult(command, readings=[reading], detail=f"SET {point.value.class_id}/{point.value.obis}")
    raise ConfigurationError(f"meter {meter_id}: the dlms driver cannot run {kind!r}")


def _control_obis(point: str | None) -> str:
    """The disconnect control a relay command addresses: ``command.point`` (``[70/]obis``) or the IDIS default."""
    if point is None:
        return DISCONNECT_CONTROL
    class_text, _, obis = point.rpartition("/")
    if class_text not in ("", "70"):
        raise ConfigurationError(f"relay commands address a disconnect control (class 70), not {point!r}")
    try:
        return dotted(obis)
    except ValueError as exc:
        raise ConfigurationError(f"{point!r} is not an OBIS code ({exc})") from None


def writable_point(profile: DeviceProfile, points: list[DlmsPoint], key: str | None, meter_id: str) -> DlmsPoint:
    """The one profile point ``key`` names (quantity or source); ConfigurationError unless it is writable."""
    if not key:
        raise ConfigurationError(f"meter {meter_id}: set-attribute needs a point (quantity or class/obis/attribute)")
    matches = [p for p in points if p.point.quantity == key]
    if not matches:
        wanted = _source_key(key)
        matches = [p for p in points if wanted is not None and _key_of(p) == wanted]
    if len(matches) > 1:
        matches = [p for p in matches if p.profile is None]  # a value point, not a profile's column of it
    if len(matches) != 1:
        found = "no point" if not matches else f"{len(matches)} points"
        raise ConfigurationError(f"meter {meter_id}: profile {profile.name} has {found} for {key!r}")
    point = matches[0]
    if point.point.options.get("writable") is not True or point.profile is not None:
        raise ConfigurationError(
            f"meter {meter_id}: point {point.point.quantity} of profile {profile.name} is not writable"
            " (mark a value point `writable: true`)"
        )
    return point


def _key_of(point: DlmsPoint) -> tuple[int, str, int]:
    value = point.value
    return value.class_id, dotted(value.obis), value.value_attribute


def _source_key(key: str) -> tuple[int, str, int] | None:
    parts = key.split("/")
    try:
        if len(parts) == 3:
            return int(parts[0]), dotted(parts[1]), int(parts[2])
        if len(parts) == 2:
            class_id = int(parts[0])
            return class_id, dotted(parts[1]), 3 if class_id == 5 else 2
        return CLASS_REGISTER, dotted(parts[0]), 2
    except ValueError:
        return None


async def _write(session: DlmsSession, point: DlmsPoint, value: CommandValue, meter_id: str) -> Reading:
    """Write ``value`` (in the point's unit) to the point's value attribute and read it back."""
    cosem = point.value
    attribute = cosem.value_attribute
    _current, data_type = await session.get_typed(cosem.class_id, cosem.obis, attribute)
    scaler, unit = await session.scaler_unit(cosem.obis, cosem.class_id)
    raw = _raw(point, value, scaler, unit, data_type, meter_id)
    await session.set(cosem.class_id, cosem.obis, attribute, raw, data_type)
    got = await session.read_register(cosem)
    return point.reading(got.value, got.unit, got.captured or await session.read_clock(), got.status)


def _raw(point: DlmsPoint, value: CommandValue, scaler: int, unit: str, data_type: int, meter_id: str) -> object:
    """The attribute's value on the wire for ``value`` in the point's unit (see the module doc)."""
    where = f"meter {meter_id}: point {point.point.quantity}"
    if data_type == _BOOLEAN:
        if not isinstance(value, bool):
            raise ConfigurationError(f"{where} holds a boolean, not {type(value).__name__}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ConfigurationError(f"{where}: a number is written, not {type(value).__name__}")
    if data_type not in _INTEGERS and data_type not in _FLOATS:
        raise ConfigurationError(f"{where}: the meter holds A-XDR type {data_type}, which is not written")
    # point_value is affine in the meter's value (unit factor, then scale and offset): invert it exactly.
    at_zero = Decimal(str(point_value(point.point, 0.0, unit)))
    slope = Decimal(str(point_value(point.point, 1.0, unit))) - at_zero
    if slope == 0:
        raise ConfigurationError(f"{where}: scale 0 cannot be written")
    try:
        meter = ((Decimal(str(value)) - at_zero) / slope).scaleb(-scaler)
    except InvalidOperation:
        raise ConfigurationError(f"{where}: {value!r} is not a finite number") from None
    if data_type in _FLOATS:
        return float(meter)
    whole = meter.to_integral_value()
    if abs(meter - whole) > Decimal("1e-9") * max(Decimal(1), abs(meter)):
        raise ConfigurationError(f"{where}: {value} is finer than the meter's resolution (scaler {scaler})")
    low, high = _INTEGERS[data_type]
    if not low <= int(whole) <= high:
        raise ConfigurationError(f"{where}: {value} is outside what the meter's attribute holds")
    return int(whole)
