"""Meter event logs: Profile generics capturing the clock and an event code (Data 0-x:96.11.n).

The standard event log is 0-0:99.98.0 with event code 0-0:96.11.0; other logs (fraud,
power quality, disconnector, ...) are 0-0:99.98.1..n with 0-0:96.11.1..n. A log is read
by time range or by entry (its newest ``n`` rows) and each row becomes a
:class:`DlmsEvent`; the driver hands it upward as a :class:`~gxcore.readings.MeterEventRecord`
(source = the log, code = the event code), never as a reading: an event code is not a
measurement. Names are the IDIS standard event log codes; other logs, and codes the
standard does not name, get the kind ``event-<code>``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Final

from gxcore.protocols.dlms.obis import dotted, parse_obis, reduced
from gxcore.readings import EventSeverity, MeterEventRecord, Reading

STANDARD_EVENT_LOG: Final = "0.0.99.98.0.255"
EVENT_CODE: Final = "0.0.96.11.0.255"
# fmt: off
STANDARD_EVENTS: Final[dict[int, str]] = {
    1: "power-down", 2: "power-up", 3: "daylight-saving-changed", 4: "clock-adjusted-old-time",
    5: "clock-adjusted-new-time", 6: "clock-invalid", 7: "battery-replaced", 8: "battery-voltage-low",
    9: "tou-activated", 10: "error-register-cleared", 11: "alarm-register-cleared",
    12: "program-memory-error", 13: "ram-error", 14: "nv-memory-error", 15: "watchdog-error",
    16: "measurement-system-error", 17: "firmware-ready-for-activation", 18: "firmware-activated",
}
# fmt: on
# Severity of the standard codes: meter faults are alarms, supply and clock trouble warnings.
STANDARD_SEVERITY: Final[dict[int, EventSeverity]] = {
    1: "warning",
    6: "warning",
    8: "warning",
    12: "alarm",
    13: "alarm",
    14: "alarm",
    15: "alarm",
    16: "alarm",
}


@dataclass(frozen=True, slots=True)
class DlmsEvent:
    """One row of an event log: when, which code, in which log (reduced OBIS), and its name if known."""

    timestamp: datetime
    code: int
    log: str
    name: str | None = None

    @property
    def severity(self) -> EventSeverity:
        """``alarm`` for meter faults, ``warning`` for supply and clock trouble (standard log only)."""
        return STANDARD_SEVERITY.get(self.code, "info") if self.name else "info"

    def record(self, meter_id: str) -> MeterEventRecord:
        """The event as meter ``meter_id`` reported it; its id is stable over meter, log, time and code."""
        kind = self.name or f"event-{self.code}"
        return MeterEventRecord(meter_id, self.timestamp, kind, self.log, self.code, self.severity)


def is_event_code(obis: str) -> bool:
    """Data 0-x:96.11.n, the event code objects."""
    _a, _b, c, d, _e, _f = parse_obis(obis)
    return c == 96 and d == 11


def events_from_readings(readings: list[Reading], log: str) -> list[DlmsEvent]:
    """The event-code columns of one log's rows as events, oldest first; non-integer codes are skipped."""
    name = reduced(log)
    standard = dotted(log) == STANDARD_EVENT_LOG
    out = []
    for r in readings:
        v = r.value
        if not is_event_code(r.quantity) or isinstance(v, bool) or not isinstance(v, int | Decimal | float):
            continue  # an event code is a number; text or bits in such a column are not events
        if math.isfinite(v) and v == int(v) and v >= 0:
            code = int(v)
            out.append(DlmsEvent(r.timestamp, code, name, STANDARD_EVENTS.get(code) if standard else None))
    return sorted(out, key=lambda e: e.timestamp)
