"""Value information field tables of EN 13757-3: primary VIF, extension tables FB and FD, VIFE.

Every entry gives a description, a unit and a power-of-ten exponent: the physical
value is ``raw * 10**exponent`` in ``unit``. Units are the base units the standard
names (Wh, J, m³, kg, W, J/h, m³/h, °C, K, bar, V, A, Hz); durations keep their own
unit (s, min, h, d, month, year) rather than being converted, so the number on the
wire stays visible. ``kind`` names the physical quantity for the canonical mapping in
:mod:`gxcore.protocols.mbus.quantities`; ``value_type`` tells dates and bit fields from numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

TIME_UNITS = ("s", "min", "h", "d")
LONG_TIME_UNITS = ("h", "d", "month", "year")


@dataclass(frozen=True, slots=True)
class VifInfo:
    """Meaning of one VIF code."""

    description: str
    unit: str = ""
    exponent: int = 0
    kind: str = ""
    value_type: str = "number"  # number | date | datetime | flags | text | id


def _range(base: int, code: int, size: int) -> int | None:
    return code - base if base <= code < base + size else None


def primary_vif(code: int) -> VifInfo:
    """Meaning of a primary VIF (extension bit ignored); 0x7B-0x7F are handled by the caller."""
    c = code & 0x7F
    table: list[tuple[int, int, str, str, int, str]] = [
        # base, size, description, unit, exponent offset, kind
        (0x00, 8, "Energy", "Wh", -3, "energy"),
        (0x08, 8, "Energy", "J", 0, "energy"),
        (0x10, 8, "Volume", "m³", -6, "volume"),
        (0x18, 8, "Mass", "kg", -3, "mass"),
        (0x28, 8, "Power", "W", -3, "power"),
        (0x30, 8, "Power", "J/h", 0, "power"),
        (0x38, 8, "Volume flow", "m³/h", -6, "volume_flow"),
        (0x40, 8, "Volume flow", "m³/min", -7, "volume_flow"),
        (0x48, 8, "Volume flow", "m³/s", -9, "volume_flow"),
        (0x50, 8, "Mass flow", "kg/h", -3, "mass_flow"),
        (0x58, 4, "Flow temperature", "°C", -3, "flow_temperature"),
        (0x5C, 4, "Return temperature", "°C", -3, "return_temperature"),
        (0x60, 4, "Temperature difference", "K", -3, "temperature_difference"),
        (0x64, 4, "External temperature", "°C", -3, "external_temperature"),
        (0x68, 4, "Pressure", "bar", -3, "pressure"),
    ]
    for base, size, description, unit, offset, kind in table:
        n = _range(base, c, size)
        if n is not None:
            return VifInfo(description, unit, n + offset, kind)
    durations = {0x20: "On time", 0x24: "Operating time", 0x70: "Averaging duration", 0x74: "Actuality duration"}
    for base, description in durations.items():
        n = _range(base, c, 4)
        if n is not None:
            return VifInfo(description, TIME_UNITS[n], 0, "duration")
    singles = {
        0x6C: VifInfo("Time point (date)", value_type="date", kind="date"),
        0x6D: VifInfo("Time point (date & time)", value_type="datetime", kind="datetime"),
        0x6E: VifInfo("Units for H.C.A.", "HCA", 0, "hca"),
        0x6F: VifInfo("Reserved VIF 0x6F"),
        0x78: VifInfo("Fabrication No", value_type="id"),
        0x79: VifInfo("Enhanced identification", value_type="id"),
        0x7A: VifInfo("Bus address", value_type="id"),
        0x7E: VifInfo("Any VIF"),
    }
    return singles.get(c, VifInfo(f"Reserved VIF 0x{c:02X}"))


def fd_vif(code: int) -> VifInfo:
    """Meaning of a VIFE from the first extension table (after VIF 0xFD)."""
    c = code & 0x7F
    n = _range(0x00, c, 4)
    if n is not None:
        return VifInfo("Credit", "currency", n - 3, "credit")
    n = _range(0x04, c, 4)
    if n is not None:
        return VifInfo("Debit", "currency", n - 3, "debit")
    n = _range(0x40, c, 16)
    if n is not None:
        return VifInfo("Voltage", "V", n - 9, "voltage")
    n = _range(0x50, c, 16)
    if n is not None:
        return VifInfo("Current", "A", n - 12, "current")
    for base, description, units in (
        (0x24, "Storage interval", TIME_UNITS),
        (0x2C, "Duration since last readout", TIME_UNITS),
        (0x34, "Period of tariff", TIME_UNITS),
        (0x68, "Duration since last cumulation", LONG_TIME_UNITS),
        (0x6C, "Operating time battery", LONG_TIME_UNITS),
    ):
        n = _range(base, c, 4)
        if n is not None:
            return VifInfo(description, units[n], 0, "duration")
    n = _range(0x31, c, 3)
    if n is not None:
        return VifInfo("Duration of tariff", TIME_UNITS[n + 1], 0, "duration")
    singles = {
        0x08: VifInfo("Access number", value_type="id"),
        0x09: VifInfo("Medium", value_type="id"),
        0x0A: VifInfo("Manufacturer", value_type="id"),
        0x0B: VifInfo("Parameter set identification", value_type="id"),
        0x0C: VifInfo("Model/version", value_type="id"),
        0x0D: VifInfo("Hardware version", value_type="id"),
        0x0E: VifInfo("Firmware version", value_type="id"),
        0x0F: VifInfo("Software version", value_type="id"),
        0x10: VifInfo("Customer location", value_type="text"),
        0x11: VifInfo("Customer", value_type="text"),
        0x12: VifInfo("Access code user", value_type="id"),
        0x13: VifInfo("Access code operator", value_type="id"),
        0x14: VifInfo("Access code system operator", value_type="id"),
        0x15: VifInfo("Access code developer", value_type="id"),
        0x16: VifInfo("Password", value_type="id"),
        0x17: VifInfo("Error flags", value_type="flags"),
        0x18: VifInfo("Error mask", value_type="flags"),
        0x1A: VifInfo("Digital output", value_type="flags"),
        0x1B: VifInfo("Digital input", value_type="flags"),
        0x1C: VifInfo("Baud rate", "Bd"),
        0x1D: VifInfo("Response delay time", "bit times"),
        0x1E: VifInfo("Retry"),
        0x1F: VifInfo("Remote control", value_type="flags"),
        0x20: VifInfo("First storage number for cyclic storage"),
        0x21: VifInfo("Last storage number for cyclic storage"),
        0x22: VifInfo("Size of storage block"),
        0x28: VifInfo("Storage interval", "month", 0, "duration"),
        0x29: VifInfo("Storage interval", "year", 0, "duration"),
        0x30: VifInfo("Start date/time of tariff", value_type="datetime"),
        0x38: VifInfo("Period of tariff", "month", 0, "duration"),
        0x39: VifInfo("Period of tariff", "year", 0, "duration"),
        0x3A: VifInfo("Dimensionless"),
        0x60: VifInfo("Reset counter"),
        0x61: VifInfo("Cumulation counter"),
        0x62: VifInfo("Control signal", value_type="flags"),
        0x63: VifInfo("Day of week"),
        0x64: VifInfo("Week number"),
        0x65: VifInfo("Time point of day change"),
        0x66: VifInfo("State of parameter activation", value_type="flags"),
        0x67: VifInfo("Special supplier information"),
        0x70: VifInfo("Date and time of battery change", value_type="datetime"),
        0x71: VifInfo("RF level", "dBm"),
        0x72: VifInfo("Daylight saving", value_type="flags"),
        0x73: VifInfo("Listening window management", value_type="flags"),
        0x74: VifInfo("Remaining battery life time", "d", 0, "duration"),
        0x75: VifInfo("Number of times the meter was stopped"),
        0x76: VifInfo("Manufacturer specific data container", value_type="id"),
    }
    return singles.get(c, VifInfo(f"Reserved VIF FD 0x{c:02X}"))


def fb_vif(code: int) -> VifInfo:
    """Meaning of a VIFE from the second extension table (after VIF 0xFB)."""
    c = code & 0x7F
    table: list[tuple[int, int, str, str, int, str]] = [
        (0x00, 2, "Energy", "Wh", 5, "energy"),  # 10^(n-1) MWh
        (0x02, 2, "Reactive energy", "varh", 3, "reactive_energy"),  # 10^(n) kvarh
        (0x08, 2, "Energy", "J", 8, "energy"),  # 10^(n-1) GJ
        (0x10, 2, "Volume", "m³", 2, "volume"),
        (0x14, 4, "Reactive power", "var", 0, "reactive_power"),  # 10^(nn-3) kvar
        (0x18, 2, "Mass", "kg", 5, "mass"),  # 10^(n+2) t
        (0x1A, 2, "Relative humidity", "%", -1, "humidity"),
        (0x28, 2, "Power", "W", 5, "power"),  # 10^(n-1) MW
        (0x2C, 4, "Frequency", "Hz", -3, "frequency"),
        (0x30, 2, "Power", "J/h", 8, "power"),  # 10^(n-1) GJ/h
        (0x34, 4, "Apparent power", "VA", 0, "apparent_power"),  # 10^(nn-3) kVA
        (0x58, 4, "Flow temperature", "°F", -3, ""),
        (0x5C, 4, "Return temperature", "°F", -3, ""),
        (0x60, 4, "Temperature difference", "°F", -3, ""),
        (0x64, 4, "External temperature", "°F", -3, ""),
        (0x70, 4, "Cold/warm temperature limit", "°F", -3, ""),
        (0x74, 4, "Cold/warm temperature limit", "°C", -3, ""),
        (0x78, 8, "Cumulative count max power", "W", -3, ""),
    ]
    for base, size, description, unit, offset, kind in table:
        n = _range(base, c, size)
        if n is not None:
            return VifInfo(description, unit, n + offset, kind)
    singles = {
        0x20: VifInfo("Volume", "ft³", 0),
        0x21: VifInfo("Volume", "ft³", -1),
        0x2A: VifInfo("Phase U-U", "°", -1),
        0x2B: VifInfo("Phase U-I", "°", -1),
    }
    return singles.get(c, VifInfo(f"Reserved VIF FB 0x{c:02X}"))


RECORD_ERRORS = {
    0x00: "no error",
    0x01: "too many DIFEs",
    0x02: "storage number not implemented",
    0x03: "unit number not implemented",
    0x04: "tariff number not implemented",
    0x05: "function not implemented",
    0x06: "data class not implemented",
    0x07: "data size not implemented",
    0x0B: "too many VIFEs",
    0x0C: "illegal VIF group",
    0x0D: "illegal VIF exponent",
    0x0E: "VIF/DIF mismatch",
    0x0F: "unimplemented action",
    0x15: "no data available",
    0x16: "data overflow",
    0x17: "data underflow",
    0x18: "data error",
    0x1C: "premature end of record",
}

_COMBINABLE = {
    0x20: "per second",
    0x21: "per minute",
    0x22: "per hour",
    0x23: "per day",
    0x24: "per week",
    0x25: "per month",
    0x26: "per year",
    0x27: "per revolution/measurement",
    0x28: "increment per input pulse on channel 0",
    0x29: "increment per input pulse on channel 1",
    0x2A: "increment per output pulse on channel 0",
    0x2B: "increment per output pulse on channel 1",
    0x2C: "per litre",
    0x2D: "per m³",
    0x2E: "per kg",
    0x2F: "per K",
    0x30: "per kWh",
    0x31: "per GJ",
    0x32: "per kW",
    0x33: "per K·l",
    0x34: "per V",
    0x35: "per A",
    0x36: "multiplied by s",
    0x37: "multiplied by s/V",
    0x38: "multiplied by s/A",
    0x39: "start date/time of",
    0x3A: "uncorrected unit",
    0x3B: "accumulation of positive contributions (forward)",
    0x3C: "accumulation of negative contributions (backward)",
    0x40: "lower limit value",
    0x41: "number of exceeds of lower limit",
    0x42: "date of begin of first lower limit exceed",
    0x43: "date/time of begin of first lower limit exceed",
    0x46: "date of end of last lower limit exceed",
    0x47: "date/time of end of last lower limit exceed",
    0x48: "upper limit value",
    0x49: "number of exceeds of upper limit",
    0x4A: "date of begin of first upper limit exceed",
    0x4B: "date/time of begin of first upper limit exceed",
    0x4E: "date of end of last upper limit exceed",
    0x4F: "date/time of end of last upper limit exceed",
    0x7E: "future value",
    0x7F: "manufacturer specific",
}

# VIFEs that leave the physical meaning of the VIF unchanged (or only mark the flow
# direction); any other combinable VIFE makes a record unfit for a canonical quantity.
NEUTRAL_VIFES = frozenset({0x00, 0x3A, 0x3B, 0x3C})


def combinable_vife(code: int) -> str:
    """Description of an orthogonal VIFE (0x00-0x7F, extension bit ignored)."""
    c = code & 0x7F
    if c <= 0x1F:
        return "record error: " + RECORD_ERRORS.get(c, f"reserved 0x{c:02X}")
    if 0x50 <= c <= 0x5F:
        return "duration of limit exceed"
    if 0x60 <= c <= 0x6F:
        return "duration of first/last limit exceed"
    if 0x70 <= c <= 0x77:
        return f"multiplied by 10^{(c & 0x07) - 6}"
    if 0x78 <= c <= 0x7B:
        return f"plus 10^{(c & 0x03) - 3}"
    if c == 0x7D:
        return "multiplied by 1000"
    return _COMBINABLE.get(c, f"reserved VIFE 0x{c:02X}")
