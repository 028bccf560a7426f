"""Units as meters write them, conversion within one dimension, and a profile point's value rule.

Meters spell units their own way: M-Bus records say ``Wh``, ``J``, ``m³``, ``°C``; DSMR
telegrams ``kWh``, ``m3``, ``GJ``; IEC 62056-21 readouts ``kWh``, ``kvarh``. The drivers
that read self-describing protocols (M-Bus, wM-Bus, DSMR, IEC 62056-21) apply one rule
to every profile point (see :func:`point_value`)::

    value = convert(meter value, meter's unit -> meter_unit) * point.scale + point.offset

``meter_unit`` is the point option naming the unit ``scale`` is written for; it defaults
to the point's own ``unit``. So a generic heat profile saying ``unit: kWh`` reads a meter
counting in Wh and one counting in GJ alike, and a unit of another dimension fails
loudly (ProtocolError) instead of storing a value 1000x off. A value the meter sends
without a unit is taken as being in ``meter_unit``.
"""

from __future__ import annotations

from gxcore.errors import ConfigurationError, ProtocolError
from gxcore.profiles.model import ProfilePoint

# Spellings -> one canonical spelling (the one profiles use).
_ALIASES: dict[str, str] = {
    "m³": "m3",
    "m^3": "m3",
    "m³/h": "m3/h",
    "m³/min": "m3/min",
    "m³/s": "m3/s",
    "°C": "degC",
    "℃": "degC",
    "L": "l",
    "ft³": "ft3",
    "Bd": "baud",
}

# unit -> (dimension, factor to the dimension's base unit)
_UNITS: dict[str, tuple[str, float]] = {
    "Wh": ("energy", 1.0),
    "kWh": ("energy", 1e3),
    "MWh": ("energy", 1e6),
    "GWh": ("energy", 1e9),
    "J": ("energy", 1 / 3600),
    "kJ": ("energy", 1e3 / 3600),
    "MJ": ("energy", 1e6 / 3600),
    "GJ": ("energy", 1e9 / 3600),
    "varh": ("reactive-energy", 1.0),
    "kvarh": ("reactive-energy", 1e3),
    "Mvarh": ("reactive-energy", 1e6),
    "VAh": ("apparent-energy", 1.0),
    "kVAh": ("apparent-energy", 1e3),
    "W": ("power", 1.0),
    "kW": ("power", 1e3),
    "MW": ("power", 1e6),
    "J/h": ("power", 1 / 3600),
    "kJ/h": ("power", 1e3 / 3600),
    "MJ/h": ("power", 1e6 / 3600),
    "GJ/h": ("power", 1e9 / 3600),
    "var": ("reactive-power", 1.0),
    "kvar": ("reactive-power", 1e3),
    "VA": ("apparent-power", 1.0),
    "kVA": ("apparent-power", 1e3),
    "m3": ("volume", 1.0),
    "l": ("volume", 1e-3),
    "ft3": ("volume", 0.028316846592),
    "m3/h": ("volume-flow", 1.0),
    "m3/min": ("volume-flow", 60.0),
    "m3/s": ("volume-flow", 3600.0),
    "l/h": ("volume-flow", 1e-3),
    "l/min": ("volume-flow", 0.06),
    "kg": ("mass", 1.0),
    "t": ("mass", 1e3),
    "kg/h": ("mass-flow", 1.0),
    "t/h": ("mass-flow", 1e3),
    "V": ("voltage", 1.0),
    "kV": ("voltage", 1e3),
    "A": ("current", 1.0),
    "mA": ("current", 1e-3),
    "Hz": ("frequency", 1.0),
    "bar": ("pressure", 1.0),
    "mbar": ("pressure", 1e-3),
    "kPa": ("pressure", 1e-2),
    "s": ("time", 1.0),
    "min": ("time", 60.0),
    "h": ("time", 3600.0),
    "d": ("time", 86400.0),
    # Temperatures only convert to themselves: °C and K differ by an offset, and M-Bus
    # uses K for temperature differences only.
    "degC": ("temperature", 1.0),
    "K": ("temperature-difference", 1.0),
}


def canonical_unit(unit: str) -> str:
    """One spelling per unit: ``m³`` -> ``m3``, ``°C`` -> ``degC``; unknown units unchanged."""
    text = unit.strip()
    return _ALIASES.get(text, text)


def conversion_factor(from_unit: str, to_unit: str) -> float | None:
    """Multiply a value in ``from_unit`` by this to get ``to_unit``; None across dimensions."""
    source, target = canonical_unit(from_unit), canonical_unit(to_unit)
    if source == target:
        return 1.0
    a, b = _UNITS.get(source), _UNITS.get(target)
    if a is None or b is None or a[0] != b[0]:
        return None
    return a[1] / b[1]


def meter_unit(point: ProfilePoint) -> str:
    """The unit the point's ``scale`` is written for: option ``meter_unit``, else the point's unit."""
    value = point.options.get("meter_unit", point.unit)
    if not isinstance(value, str):
        raise ConfigurationError(f"point {point.quantity}: option meter_unit must be text, not {value!r}")
    return value


def in_meter_unit(point: ProfilePoint, value: float, unit: str | None) -> float:
    """A meter value in ``unit`` (None: the meter gave none) converted to the point's ``meter_unit``."""
    if not unit:
        return value
    wanted = meter_unit(point)
    factor = conversion_factor(unit, wanted)
    if factor is None:
        raise ProtocolError(
            f"point {point.quantity} ({point.source}): the meter reports {unit!r}, which does not convert to {wanted!r}"
        )
    return value * factor


def point_value(point: ProfilePoint, value: float, unit: str | None) -> float:
    """The point's value from a meter value in ``unit`` (None: the meter gave none); see the module doc."""
    return in_meter_unit(point, value, unit) * point.scale + point.offset
