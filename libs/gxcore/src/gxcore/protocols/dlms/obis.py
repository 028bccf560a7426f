"""OBIS codes, COSEM units and scalers: the naming and number rules of IEC 62056-6-1/6-2.

An OBIS code has six value groups ``A.B.C.D.E.F`` (each 0..255). gurux writes it dotted
(``1.0.1.8.0.255``); gxami's canonical quantity is the reduced form ``A-B:C.D.E``
(``1-0:1.8.0``), with ``F`` kept as ``.F`` only when it is not 255 (a billing period).
"""

from __future__ import annotations

import math
from decimal import Decimal
from functools import lru_cache
from typing import Final

from gxcore.errors import ConfigurationError, ProtocolError

OBIS_LENGTH: Final = 6

# COSEM unit enumeration (Blue Book, class 3 attribute 3) -> text symbol.
# Count-like and "other" units map to "" (a dimensionless number).
# fmt: off
UNIT_SYMBOLS: Final[dict[int, str]] = {
    1: "a", 2: "mo", 3: "wk", 4: "d", 5: "h", 6: "min", 7: "s", 8: "°", 9: "°C",
    10: "currency", 11: "m", 12: "m/s", 13: "m³", 14: "m³", 15: "m³/h", 16: "m³/h",
    17: "m³/d", 18: "m³/d", 19: "l", 20: "kg", 21: "N", 22: "Nm", 23: "Pa", 24: "bar",
    25: "J", 26: "J/h", 27: "W", 28: "VA", 29: "var", 30: "Wh", 31: "VAh", 32: "varh",
    33: "A", 34: "C", 35: "V", 36: "V/m", 37: "F", 38: "Ω", 39: "Ωm²/m", 40: "Wb",
    41: "T", 42: "A/m", 43: "H", 44: "Hz", 45: "1/(Wh)", 46: "1/(varh)", 47: "1/(VAh)",
    48: "V²h", 49: "A²h", 50: "kg/s", 51: "S", 52: "K", 53: "1/(V²h)", 54: "1/(A²h)",
    55: "1/m³", 56: "%", 57: "Ah", 60: "Wh/m³", 61: "J/m³", 62: "mol%", 63: "g/m³",
    64: "Pa s", 65: "J/kg", 66: "g/cm²", 67: "atm", 70: "dBm", 71: "dBμV", 72: "dB",
    254: "", 255: "",
}
# fmt: on

UNIT_CODES: Final[dict[str, int]] = {"Wh": 30, "W": 27, "V": 35, "A": 33, "varh": 32, "var": 29, "Hz": 44}


def parse_obis(text: str) -> tuple[int, int, int, int, int, int]:
    """Parse dotted ``1.0.1.8.0.255`` or reduced ``1-0:1.8.0[.F]`` into six value groups."""
    raw = text.strip()
    if "-" in raw or ":" in raw:
        head, sep, tail = raw.partition(":")
        ab = head.split("-")
        rest = tail.split(".")
        if not sep or len(ab) != 2 or len(rest) not in (3, 4):
            raise ConfigurationError(f"OBIS code {text!r} is not of the form A-B:C.D.E[.F]")
        parts = [*ab, *rest] + ([] if len(rest) == 4 else ["255"])
    else:
        parts = raw.split(".")
    if len(parts) != OBIS_LENGTH or not all(p.isdigit() for p in parts):
        raise ConfigurationError(f"OBIS code {text!r} is not six value groups A.B.C.D.E.F")
    groups = tuple(int(p) for p in parts)
    if any(g > 255 for g in groups):
        raise ConfigurationError(f"OBIS code {text!r} has a value group above 255")
    a, b, c, d, e, f = groups
    return a, b, c, d, e, f


@lru_cache(maxsize=4096)
def dotted(text: str) -> str:
    """Normalise any OBIS spelling to gurux's dotted form ``A.B.C.D.E.F``."""
    return ".".join(str(g) for g in parse_obis(text))


@lru_cache(maxsize=4096)
def reduced(text: str) -> str:
    """Canonical quantity name ``A-B:C.D.E`` (``.F`` appended only when F != 255)."""
    a, b, c, d, e, f = parse_obis(text)
    base = f"{a}-{b}:{c}.{d}.{e}"
    return base if f == 255 else f"{base}.{f}"


def obis_from_bytes(raw: bytes | bytearray) -> str:
    """Dotted OBIS from the 6-byte logical name a meter sends."""
    if len(raw) != OBIS_LENGTH:
        raise ProtocolError(f"logical name has {len(raw)} bytes, expected 6", frame=bytes(raw))
    return ".".join(str(b) for b in raw)


def obis_to_bytes(text: str) -> bytes:
    """The 6-byte logical name of an OBIS code."""
    return bytes(parse_obis(text))


def unit_symbol(code: int) -> str:
    """Text symbol of a COSEM unit code; unknown codes become ``unit-<n>`` rather than guessing."""
    return UNIT_SYMBOLS.get(code, f"unit-{code}")


def apply_scaler(raw: int | float, scaler: int) -> int | Decimal | float:
    """``raw * 10**scaler`` exactly: an int stays an int for scalers >= 0, and becomes a Decimal with
    ``-scaler`` decimals otherwise (38296251, -3 -> ``Decimal("38296.251")``, the meter's resolution
    kept). A float the meter sent (float32/float64) is scaled from its shortest decimal form."""
    if isinstance(raw, float):
        if scaler == 0 or not math.isfinite(raw):
            return raw
        return Decimal(repr(raw)).scaleb(scaler)
    if scaler >= 0:
        factor: int = 10**scaler
        return raw * factor
    return Decimal(raw).scaleb(scaler)
