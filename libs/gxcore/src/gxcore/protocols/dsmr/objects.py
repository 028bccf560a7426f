"""What each DSMR OBIS reference carries: the value layout of a line, and the medium of a channel.

The table is keyed by value group A (1 = electricity, 0 = abstract / M-Bus channel)
and C.D.E; B (the M-Bus channel) and F (``*255``) do not change the layout. It
covers DSMR 2.2, 3, 4.x, 5.0, the Belgian e-MUCS (Fluvius) and the Luxembourg
Smarty object lists. References not listed are kept as raw records.
"""

from __future__ import annotations

import re
from enum import Enum


class LineKind(Enum):
    """Value layout of one telegram line."""

    REGISTER = "register"  # (value[*unit]) ... one record per group
    TEXT = "text"  # (text) kept as written
    HEX_TEXT = "hex-text"  # (hex) equipment ids and messages: ASCII written as hex digits
    CLOCK = "clock"  # (YYMMDDhhmmssX) the telegram's own time
    TIMED_REGISTER = "timed-register"  # (YYMMDDhhmmssX)(value*unit): M-Bus reading, month peak
    EVENT_LOG = "event-log"  # (n)(obis)(time)(duration*s) x n: power failure log
    PEAK_HISTORY = "peak-history"  # (n)(obis)(obis)(period)(time)(value*kW) x n: Belgian peaks
    LEGACY_CAPTURE = "legacy-capture"  # DSMR 2.2/3 gas: (time)(tariff)(period)(n)(obis)(unit) + (value) x n
    RAW = "raw"  # not listed: kept verbatim


OBIS_RE = re.compile(r"(\d{1,3})-(\d{1,3}):(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?:\*(\d{1,3}))?")

# Electricity quantities with a number in every group: energy registers (D=8),
# instantaneous values (D=7), Belgian current average demand and limits (D=4),
# voltage sag/swell counters (D=32/36).
_ELECTRICITY_NUMERIC_D = frozenset({4, 7, 8, 32, 36})

_ABSTRACT: dict[tuple[int, int, int], LineKind] = {
    (1, 0, 0): LineKind.CLOCK,
    (42, 0, 0): LineKind.HEX_TEXT,  # Smarty equipment identifier
    (96, 1, 0): LineKind.HEX_TEXT,  # M-Bus equipment identifier (DSMR)
    (96, 1, 1): LineKind.HEX_TEXT,  # equipment identifier (E meter; e-MUCS M-Bus)
    (96, 1, 4): LineKind.TEXT,  # e-MUCS version information
    (96, 14, 0): LineKind.REGISTER,  # tariff indicator
    (96, 7, 21): LineKind.REGISTER,  # number of power failures
    (96, 7, 9): LineKind.REGISTER,  # number of long power failures
    (17, 0, 0): LineKind.REGISTER,  # limiter threshold
    (96, 3, 10): LineKind.REGISTER,  # breaker / switch position
    (98, 1, 0): LineKind.PEAK_HISTORY,
    (24, 1, 0): LineKind.REGISTER,  # M-Bus device type
    (24, 2, 1): LineKind.TIMED_REGISTER,  # M-Bus last 5-minute / hourly value
    (24, 2, 3): LineKind.TIMED_REGISTER,  # e-MUCS gas, temperature corrected
    (24, 3, 0): LineKind.LEGACY_CAPTURE,
    (24, 4, 0): LineKind.REGISTER,  # M-Bus valve position
}


def line_kind(a: int, c: int, d: int, e: int) -> LineKind:
    """Value layout for the OBIS reference ``a-b:c.d.e``."""
    if a == 1:
        if (c, d, e) == (0, 2, 8):
            return LineKind.TEXT  # DSMR version "42", "50"
        if (c, d, e) == (99, 97, 0):
            return LineKind.EVENT_LOG
        if d == 6 and 1 <= c <= 99:
            return LineKind.TIMED_REGISTER  # maximum demand with the time it happened
        if d in _ELECTRICITY_NUMERIC_D and 1 <= c <= 99:
            return LineKind.REGISTER
        if c in (0, 96):
            return LineKind.TEXT  # EasyMeter/Hager identifiers and status words
        return LineKind.RAW
    if a == 0:
        if (c, d) == (96, 13):
            return LineKind.HEX_TEXT  # text / code messages
        return _ABSTRACT.get((c, d, e), LineKind.RAW)
    return LineKind.RAW


# EN 13757-3 device types as the telegram writes them in 0-n:24.1.0.
_MEDIUM_BY_DEVICE_TYPE: dict[int, str] = {
    0x02: "electricity",
    0x03: "gas",
    0x04: "heat",
    0x06: "warm water",
    0x07: "water",
    0x0A: "cooling",
    0x0B: "cooling",
    0x0C: "heat",
    0x0D: "heat/cooling",
    0x15: "hot water",
    0x16: "cold water",
}


def medium_of_device_type(device_type: int | None) -> str:
    """Medium name for an M-Bus device type; ``unknown`` when absent or unlisted."""
    if device_type is None:
        return "unknown"
    return _MEDIUM_BY_DEVICE_TYPE.get(device_type, "unknown")


def decode_hex_text(raw: str) -> str | None:
    """ASCII text written as hex digits, or ``None`` if ``raw`` is not printable ASCII in hex."""
    if not raw or len(raw) % 2:
        return None
    try:
        data = bytes.fromhex(raw)
    except ValueError:
        return None
    if all(0x20 <= b < 0x7F for b in data):
        return data.decode("ascii")
    return None
