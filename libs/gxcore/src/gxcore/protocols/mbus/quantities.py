"""Media of EN 13757-3 and the mapping of M-Bus records to canonical (OBIS-style) quantities.

The canonical name is ``A-B:C.D.E`` (IEC 62056-61 reduced id) plus ``*F`` for a
stored (historic) value:

* A comes from the medium: 1 electricity, 4 heat cost allocator, 5 cooling, 6 heat,
  7 gas, 8 (cold) water, 9 warm/hot water.
* B is the record's subunit (0 for the meter itself, 1.. for sub-devices/channels).
* E is the record's tariff (0 = total), F the storage number when it is not 0.

==============  ======================  =================  ================================
medium (A)      record (VIF kind)       C.D                example
==============  ======================  =================  ================================
electricity 1   energy (Wh or J)        1.8 / 2.8 export   ``1-0:1.8.0``, ``1-0:1.8.2``
electricity 1   power                   1.7 / 2.7 export   ``1-0:1.7.0``; maximum -> 1.6
electricity 1   voltage                 32/52/72.7 L1-3    ``1-0:32.7.0``, no phase -> 12.7
electricity 1   current                 31/51/71.7 L1-3    ``1-0:31.7.0``, no phase -> 11.7
electricity 1   frequency               14.7               ``1-0:14.7.0``
heat 6 / cool 5 energy                  1.0                ``6-0:1.0.0``
heat 6 / cool 5 volume                  2.0                ``6-0:2.0.0``
heat 6 / cool 5 power                   8.0                ``6-0:8.0.0``
heat 6 / cool 5 volume flow             9.0                ``6-0:9.0.0``
heat 6 / cool 5 flow / return temp.     10.0 / 11.0        ``6-0:10.0.0``
heat 6 / cool 5 temperature difference  12.0               ``6-0:12.0.0``
gas 7           volume                  3.0                ``7-0:3.0.0``
water 8 / 9     volume                  1.0                ``8-0:1.0.0``, warm ``9-0:1.0.0``
HCA 4           HCA units               1.0                ``4-0:1.0.0``
any             date & time, storage 0  clock              ``0-0:1.0.0``
==============  ======================  =================  ================================

Only instantaneous values map (and the maximum of electric power, 1.6); maximum,
minimum and error-state values, and records whose VIFEs change the meaning (per
hour, limit values, dates of events), keep ``quantity=None`` and are identified by
their description, storage, tariff, subunit and function instead.
"""

from __future__ import annotations

MEDIA: dict[int, str] = {
    0x00: "other",
    0x01: "oil",
    0x02: "electricity",
    0x03: "gas",
    0x04: "heat (outlet)",
    0x05: "steam",
    0x06: "warm water",
    0x07: "water",
    0x08: "heat cost allocator",
    0x09: "compressed air",
    0x0A: "cooling (outlet)",
    0x0B: "cooling (inlet)",
    0x0C: "heat (inlet)",
    0x0D: "heat/cooling",
    0x0E: "bus/system component",
    0x0F: "unknown medium",
    0x10: "irrigation water",
    0x11: "water data logger",
    0x12: "gas data logger",
    0x13: "gas converter",
    0x14: "calorific value",
    0x15: "hot water",
    0x16: "cold water",
    0x17: "dual register water",
    0x18: "pressure",
    0x19: "A/D converter",
    0x1A: "smoke detector",
    0x1B: "room sensor",
    0x1C: "gas detector",
    0x20: "breaker (electricity)",
    0x21: "valve (gas or water)",
    0x25: "customer unit",
    0x28: "waste water",
    0x29: "garbage",
    0x31: "communication controller",
    0x32: "unidirectional repeater",
    0x33: "bidirectional repeater",
    0x36: "radio converter (system side)",
    0x37: "radio converter (meter side)",
}

_MEDIUM_GROUP: dict[int, int] = {
    0x02: 1,
    0x08: 4,
    0x0A: 5,
    0x0B: 5,
    0x04: 6,
    0x0C: 6,
    0x0D: 6,
    0x03: 7,
    0x07: 8,
    0x16: 8,
    0x06: 9,
    0x15: 9,
}

_HEAT = {
    "energy": "1.0",
    "volume": "2.0",
    "power": "8.0",
    "volume_flow": "9.0",
    "flow_temperature": "10.0",
    "return_temperature": "11.0",
    "temperature_difference": "12.0",
}

_BY_GROUP: dict[int, dict[str, str]] = {
    1: {"energy": "1.8", "power": "1.7", "frequency": "14.7"},
    4: {"hca": "1.0"},
    5: _HEAT,
    6: _HEAT,
    7: {"volume": "3.0"},
    8: {"volume": "1.0"},
    9: {"volume": "1.0"},
}

_PHASED = {"voltage": ("12.7", "32.7", "52.7", "72.7"), "current": ("11.7", "31.7", "51.7", "71.7")}
_INSTANT_ONLY = {"power", "volume_flow", "flow_temperature", "return_temperature", "temperature_difference"}


def medium_text(code: int) -> str:
    """Name of a medium (device type) byte."""
    return MEDIA.get(code, f"reserved (0x{code:02X})")


def canonical_quantity(
    medium: int,
    kind: str,
    *,
    storage: int,
    tariff: int,
    subunit: int,
    function: str,
    direction: str | None = None,
    phase: int | None = None,
) -> str | None:
    """The canonical name of a record, or None when there is no agreed one (see module doc)."""
    if kind == "datetime":
        ok = storage == 0 and tariff == 0 and subunit == 0 and function == "instantaneous"
        return "0-0:1.0.0" if ok else None
    group = _MEDIUM_GROUP.get(medium)
    if group is None:
        return None
    if group == 1 and kind in _PHASED and function == "instantaneous" and direction is None:
        phase_index = phase if phase is not None and 1 <= phase <= 3 else 0
        return _name(group, subunit, _PHASED[kind][phase_index], 0, storage)
    found = _BY_GROUP[group].get(kind)
    if found is None:
        return None
    code = found
    if group == 1 and kind == "power" and function == "maximum":
        code = "1.6"
    elif function != "instantaneous":
        return None
    if direction == "export":
        if group != 1 or kind not in ("energy", "power"):
            return None
        code = "2" + code[1:]
    tariffed = kind not in _INSTANT_ONLY or code == "1.6"
    return _name(group, subunit, code, tariff if tariffed else 0, storage) if tariffed or tariff == 0 else None


def _name(group: int, subunit: int, code: str, tariff: int, storage: int) -> str:
    name = f"{group}-{subunit}:{code}.{tariff}"
    return f"{name}*{storage}" if storage else name
