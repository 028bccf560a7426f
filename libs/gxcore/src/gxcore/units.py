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

Exactly: factors are fractions, scale and offset the decimals the profile writes (``0.001``),
so an integer register read with integer factors stays an ``int``, a decimal one becomes a
``Decimal`` keeping the meter's resolution, and no binary-float noise is ever added
(``38296251 Wh`` with ``scale: 0.001`` is ``Decimal("38296.251")``, not ``38296.251000000004``).
A conversion that does not end in decimals (J to Wh is 1/3600) rounds once to 28 digits.
Text, bytes, bits and booleans pass unchanged; scaling one is a ProtocolError.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from typing import overload

from gxcore.errors import ConfigurationError, ProtocolError
from gxcore.profiles.model import ProfilePoint
from gxcore.readings import MeterValue, Number, is_number

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
_UNITS: dict[str, tuple[str, Fraction]] = {
    "Wh": ("energy", Fraction(1)),
    "kWh": ("energy", Fraction("1e3")),
    "MWh": ("energy", Fraction("1e6")),
    "GWh": ("energy", Fraction("1e9")),
    "J": ("energy", Fraction("1") / 3600),
    "kJ": ("energy", Fraction("1e3") / 3600),
    "MJ": ("energy", Fraction("1e6") / 3600),
    "GJ": ("energy", Fraction("1e9") / 3600),
    "varh": ("reactive-energy", Fraction(1)),
    "kvarh": ("reactive-energy", Fraction("1e3")),
    "Mvarh": ("reactive-energy", Fraction("1e6")),
    "VAh": ("apparent-energy", Fraction(1)),
    "kVAh": ("apparent-energy", Fraction("1e3")),
    "W": ("power", Fraction(1)),
    "kW": ("power", Fraction("1e3")),
    "MW": ("power", Fraction("1e6")),
    "J/h": ("power", Fraction("1") / 3600),
    "kJ/h": ("power", Fraction("1e3") / 3600),
    "MJ/h": ("power", Fraction("1e6") / 3600),
    "GJ/h": ("power", Fraction("1e9") / 3600),
    "var": ("reactive-power", Fraction(1)),
    "kvar": ("reactive-power", Fraction("1e3")),
    "VA": ("apparent-power", Fraction(1)),
    "kVA": ("apparent-power", Fraction("1e3")),
    "m3": ("volume", Fraction(1)),
    "l": ("volume", Fraction("1e-3")),
    "ft3": ("volume", Fraction("0.028316846592")),
    "m3/h": ("volume-flow", Fraction(1)),
    "m3/min": ("volume-flow", Fraction("60.0")),
    "m3/s": ("volume-flow", Fraction("3600.0")),
    "l/h": ("volume-flow", Fraction("1e-3")),
    "l/min": ("volume-flow", Fraction("0.06")),
    "kg": ("mass", Fraction(1)),
    "t": ("mass", Fraction("1e3")),
    "kg/h": ("mass-flow", Fraction(1)),
    "t/h": ("mass-flow", Fraction("1e3")),
    "V": ("voltage", Fraction(1)),
    "kV": ("voltage", Fraction("1e3")),
    "A": ("current", Fraction(1)),
    "mA": ("current", Fraction("1e-3")),
    "Hz": ("frequency", Fraction(1)),
    "bar": ("pressure", Fraction(1)),
    "mbar": ("pressure", Fraction("1e-3")),
    "kPa": ("pressure", Fraction("1e-2")),
    "s": ("time", Fraction(1)),
    "min": ("time", Fraction("60.0")),
    "h": ("time", Fraction("3600.0")),
    "d": ("time", Fraction("86400.0")),
    # Temperatures only convert to themselves: °C and K differ by an offset, and M-Bus
    # uses K for temperature differences only.
    "degC": ("temperature", Fraction(1)),
    "K": ("temperature-difference", Fraction(1)),
}


def canonical_unit(unit: str) -> str:
    """One spelling per unit: ``m³`` -> ``m3``, ``°C`` -> ``degC``; unknown units unchanged."""
    text = unit.strip()
    return _ALIASES.get(text, text)


def conversion_factor(from_unit: str, to_unit: str) -> Fraction | None:
    """Multiply a value in ``from_unit`` by this (exact) to get ``to_unit``; None across dimensions."""
    source, target = canonical_unit(from_unit), canonical_unit(to_unit)
    if source == target:
        return Fraction(1)
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


def _decimal(value: Decimal | float) -> Decimal:
    """A float as the shortest decimal that reads back as it (``0.001``, not its binary expansion)."""
    if isinstance(value, Decimal):
        return value
    return Decimal(int(value)) if value.is_integer() else Decimal(repr(value))


def _terminates(fraction: Fraction) -> bool:
    """True when ``fraction`` is a finite decimal (its denominator has no prime factors but 2 and 5)."""
    d = fraction.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    return d == 1


def _times(value: Number, factor: Fraction) -> Number:
    """``value * factor`` exactly: int * integral factor is an int; otherwise a Decimal keeping the
    value's decimals (Wh -> kWh turns ``38296000`` into ``38296.000``)."""
    if factor == 1:
        return value
    if isinstance(value, int) and factor.denominator == 1:
        return value * factor.numerator
    number = Decimal(value) if isinstance(value, int) else _decimal(value)
    if _terminates(factor):
        return number * (Decimal(factor.numerator) / Decimal(factor.denominator))
    return number * factor.numerator / factor.denominator


@overload
def in_meter_unit(point: ProfilePoint, value: int | Decimal, unit: str | None) -> int | Decimal: ...
@overload
def in_meter_unit(point: ProfilePoint, value: Number, unit: str | None) -> Number: ...
def in_meter_unit(point: ProfilePoint, value: Number, unit: str | None) -> Number:
    """A meter value in ``unit`` (None: the meter gave none) converted to the point's ``meter_unit``, exactly
    (an int or a Decimal never becomes a float)."""
    if not unit:
        return value
    wanted = meter_unit(point)
    factor = conversion_factor(unit, wanted)
    if factor is None:
        raise ProtocolError(
            f"point {point.quantity} ({point.source}): the meter reports {unit!r}, which does not convert to {wanted!r}"
        )
    return _times(value, factor)


def scaled(point: ProfilePoint, value: Number) -> Number:
    """``value * point.scale + point.offset`` exactly (scale and offset as the decimals the profile wrote)."""
    if point.scale != 1:
        scale = _decimal(point.scale)
        if isinstance(value, int) and scale == scale.to_integral_value():
            value = value * int(scale)
        else:
            value = (Decimal(value) if isinstance(value, int) else _decimal(value)) * scale
    if point.offset != 0:
        offset = _decimal(point.offset)
        if isinstance(value, int) and offset == offset.to_integral_value():
            value = value + int(offset)
        else:
            value = (Decimal(value) if isinstance(value, int) else _decimal(value)) + offset
    return value


def point_value(point: ProfilePoint, value: MeterValue, unit: str | None) -> MeterValue:
    """The point's value from a meter value in ``unit`` (None: the meter gave none); see the module doc."""
    if not is_number(value):
        if point.scale != 1 or point.offset != 0:
            raise ProtocolError(
                f"point {point.quantity} ({point.source}): a {type(value).__name__} value cannot be scaled"
                " (scale and offset apply to numbers only)"
            )
        return value
    assert isinstance(value, int | Decimal | float)  # is_number
    return scaled(point, in_meter_unit(point, value, unit))
