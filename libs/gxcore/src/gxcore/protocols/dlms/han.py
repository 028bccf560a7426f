"""HAN-port lists: what the Norwegian customer interfaces of Aidon, Kaifa and Kamstrup meters push.

The OBIS lists, scalers and units are those of the public "AMS HAN" documents the Norwegian
grid operators (NVE/Elhub, NEK) publish for each vendor:

* Kaifa, "Kaifa HAN OBIS codes KFM_001" (list version identifier ``KFM_001``): bare values
  in a fixed order, told apart by their count: list 1 (1: active power), list 2 (9 single
  phase, 13 three phase), list 3 (14 / 18: list 2, the clock and four energy registers).
  Currents in mA, voltages in 0.1 V, powers in W, energies in Wh.
* Kamstrup, "Kamstrup HAN NVE interface, information sheet" (``Kamstrup_V0001``): a flat
  list, each logical name (B field 1) followed by its bare value; the clock is 0-1:1.0.0.
  Currents in 0.01 A, voltages in V, powers in W, energies in 10 Wh.
* Aidon, "Aidon HAN Interface Description v10A" (``AIDON_V0001``): a list of
  ``{logical name, value, {scaler, unit}}`` structures, self-describing; the scalers below
  are the document's (voltage 0.1 V, current 0.1 A, energy 10 Wh) for readers that need them.

:func:`recognise` finds the list by its list version identifier (element 0, bare or named by
1-1:0.2.129), or, for Kaifa's list 1 which carries none, by its layout (one unsigned number),
as HAN readers such as AmsToMqttBridge do. Pure data: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from gxcore.protocols.dlms import axdr

LIST_ID: Final = "1.1.0.2.129.255"  # list version identifier, all three vendors
METER_ID: Final = "0.0.96.1.0.255"  # Aidon and Kaifa: meter identifier (GIAI GS1)
METER_TYPE: Final = "0.0.96.1.7.255"
KAMSTRUP_METER_ID: Final = "1.1.0.0.5.255"
KAMSTRUP_METER_TYPE: Final = "1.1.96.1.1.255"


@dataclass(frozen=True, slots=True)
class HanObject:
    """One object of a HAN list: logical name, scaler and unit as the vendor's document gives them."""

    obis: str
    scaler: int = 0
    unit: str = ""


@dataclass(frozen=True, slots=True)
class HanList:
    """A recognised HAN list: its vendor format, list id, objects (in push order) and what names the meter."""

    vendor: str  # "aidon", "kaifa", "kamstrup"
    list_id: str
    objects: tuple[HanObject, ...]
    meter_id_obis: str
    positional: bool  # True: bare values, element k is objects[k] (Kaifa)


def _o(obis: str, scaler: int = 0, unit: str = "") -> HanObject:
    return HanObject(obis, scaler, unit)


# Kaifa KFM_001 (three phase list 2 and 3; single phase drops IL2, IL3, UL2, UL3).
_KAIFA_HEAD: Final = (_o(LIST_ID), _o(METER_ID), _o(METER_TYPE))
_KAIFA_POWER: Final = (
    _o("1.0.1.7.0.255", 0, "W"),
    _o("1.0.2.7.0.255", 0, "W"),
    _o("1.0.3.7.0.255", 0, "var"),
    _o("1.0.4.7.0.255", 0, "var"),
)
_KAIFA_I = tuple(_o(f"1.0.{c}.7.0.255", -3, "A") for c in (31, 51, 71))
_KAIFA_U = tuple(_o(f"1.0.{c}.7.0.255", -1, "V") for c in (32, 52, 72))
_KAIFA_TAIL: Final = (
    _o("0.0.1.0.0.255"),
    _o("1.0.1.8.0.255", 0, "Wh"),
    _o("1.0.2.8.0.255", 0, "Wh"),
    _o("1.0.3.8.0.255", 0, "varh"),
    _o("1.0.4.8.0.255", 0, "varh"),
)
KAIFA_LISTS: Final[dict[int, tuple[HanObject, ...]]] = {
    1: (_o("1.0.1.7.0.255", 0, "W"),),
    9: _KAIFA_HEAD + _KAIFA_POWER + _KAIFA_I[:1] + _KAIFA_U[:1],
    13: _KAIFA_HEAD + _KAIFA_POWER + _KAIFA_I + _KAIFA_U,
    14: _KAIFA_HEAD + _KAIFA_POWER + _KAIFA_I[:1] + _KAIFA_U[:1] + _KAIFA_TAIL,
    18: _KAIFA_HEAD + _KAIFA_POWER + _KAIFA_I + _KAIFA_U + _KAIFA_TAIL,
}

# Kamstrup_V0001: every object is named in the push; the scalers are the information sheet's.
KAMSTRUP: Final = (
    _o(LIST_ID),
    _o(KAMSTRUP_METER_ID),
    _o(KAMSTRUP_METER_TYPE),
    _o("1.1.1.7.0.255", 0, "W"),
    _o("1.1.2.7.0.255", 0, "W"),
    _o("1.1.3.7.0.255", 0, "var"),
    _o("1.1.4.7.0.255", 0, "var"),
    *(_o(f"1.1.{c}.7.0.255", -2, "A") for c in (31, 51, 71)),
    *(_o(f"1.1.{c}.7.0.255", 0, "V") for c in (32, 52, 72)),
    _o("0.1.1.0.0.255"),
    _o("1.1.1.8.0.255", 1, "Wh"),
    _o("1.1.2.8.0.255", 1, "Wh"),
    _o("1.1.3.8.0.255", 1, "varh"),
    _o("1.1.4.8.0.255", 1, "varh"),
)

# AIDON_V0001 (self-describing; the document's scalers, for a profile's push_objects).
AIDON: Final = (
    _o(LIST_ID),
    _o(METER_ID),
    _o(METER_TYPE),
    _o("1.0.1.7.0.255", 0, "W"),
    _o("1.0.2.7.0.255", 0, "W"),
    _o("1.0.3.7.0.255", 0, "var"),
    _o("1.0.4.7.0.255", 0, "var"),
    *(_o(f"1.0.{c}.7.0.255", -1, "A") for c in (31, 51, 71)),
    *(_o(f"1.0.{c}.7.0.255", -1, "V") for c in (32, 52, 72)),
    _o("0.0.1.0.0.255"),
    _o("1.0.1.8.0.255", 1, "Wh"),
    _o("1.0.2.8.0.255", 1, "Wh"),
    _o("1.0.3.8.0.255", 1, "varh"),
    _o("1.0.4.8.0.255", 1, "varh"),
)

_PREFIXES: Final = (("AIDON_", "aidon"), ("KAMSTRUP_", "kamstrup"), ("KFM_", "kaifa"))


def _text(value: axdr.AxdrValue) -> str | None:
    """A visible string, or an octet string of printable ASCII, as text."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes) and value and value.isascii() and value.decode("ascii").isprintable():
        return value.decode("ascii")
    return None


def _list_id(items: list[axdr.AxdrValue]) -> str | None:
    """The list version identifier: element 0 bare (Kaifa), ``{1.1.0.2.129.255, id}`` (Aidon) or named (Kamstrup)."""
    if not items:
        return None
    first = items[0]
    if isinstance(first, list) and len(first) == 2 and first[0] == bytes.fromhex("0101000281ff"):
        return _text(first[1])
    if first == bytes.fromhex("0101000281ff") and len(items) > 1:
        return _text(items[1])
    return _text(first)


def recognise(body: axdr.AxdrValue) -> HanList | None:
    """The HAN list ``body`` is (see the module doc), or None when it is none of the three."""
    if not isinstance(body, list):
        return None
    list_id = _list_id(body)
    vendor = None
    if list_id is not None:
        vendor = next((v for prefix, v in _PREFIXES if list_id.upper().startswith(prefix)), None)
    if vendor == "kaifa":
        objects = KAIFA_LISTS.get(len(body))
        if objects is None or len(body) == 1:
            return None
        return HanList("kaifa", list_id or "", objects, METER_ID, positional=True)
    if vendor == "kamstrup":
        return HanList("kamstrup", list_id or "", KAMSTRUP, KAMSTRUP_METER_ID, positional=False)
    if vendor == "aidon":
        return HanList("aidon", list_id or "", AIDON, METER_ID, positional=False)
    # Kaifa list 1 carries no list id: one unsigned number, the active power import.
    if len(body) == 1 and isinstance(body[0], int) and not isinstance(body[0], bool) and body[0] >= 0:
        return HanList("kaifa", "", KAIFA_LISTS[1], METER_ID, positional=True)
    return None


def is_clock(obis: str | None) -> bool:
    """The clock, 0-b:1.0.0 (Kamstrup's HAN list uses channel 1)."""
    if obis is None:
        return False
    parts = obis.split(".")
    return len(parts) == 6 and parts[0] == "0" and parts[2:5] == ["1", "0", "0"]
