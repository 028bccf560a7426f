"""A simulated meter's activity calendar (class 20, 0-0:13.0.0.255) and special days table (class 11).

Attributes are kept as the A-XDR the client wrote (checked to decode, and to have the shape the
attribute holds), so a read returns exactly what was written. The passive calendar becomes
active when activate_passive_calendar (method 1) is called, or at the first association whose
meter time is at or past activate_passive_calendar_time (attribute 10). Special days: insert
(method 1) replaces an entry of the same index, delete (method 2) removes one. Every write and
method lands in :attr:`CalendarState.log`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from gurux_dlms.enums import ErrorCode

from gxcore.errors import GxError, ProtocolError
from gxcore.protocols.dlms import axdr
from gxcore.protocols.dlms import calendar as cal
from gxcore.protocols.dlms.cosem_time import decode_datetime

_EMPTY_ARRAY: Final = b"\x01\x00"
# attribute -> the A-XDR tag its value must have (01 array, 09 octet-string)
_SHAPES: Final = {2: 0x09, 3: 0x01, 4: 0x01, 5: 0x01, 6: 0x09, 7: 0x01, 8: 0x01, 9: 0x01, 10: 0x09}
WRITABLE: Final = (6, 7, 8, 9, 10)


def _initial() -> dict[int, bytes]:
    never = b"\x09\x0c" + bytes([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x80, 0x00, 0xFF])
    return {2: b"\x09\x00", 3: _EMPTY_ARRAY, 4: _EMPTY_ARRAY, 5: _EMPTY_ARRAY, 6: b"\x09\x00", 7: _EMPTY_ARRAY,
            8: _EMPTY_ARRAY, 9: _EMPTY_ARRAY, 10: never}  # fmt: skip


@dataclass(slots=True)
class CalendarState:
    """What the meter holds of its calendars and special days; kept across connections."""

    attributes: dict[int, bytes] = field(default_factory=_initial)
    special: dict[int, bytes] = field(default_factory=dict)
    log: list[tuple[str, object]] = field(default_factory=list)

    def attribute(self, index: int) -> bytes | None:
        return self.attributes.get(index)

    def special_entries(self) -> bytes:
        items = [self.special[i] for i in sorted(self.special)]
        return b"\x01" + bytes([len(items)]) + b"".join(items) if len(items) < 0x80 else _long_array(items)

    def write(self, index: int, value: bytes) -> int:
        """SET of a passive attribute: the Data-Access-Result."""
        if index not in WRITABLE:
            return int(ErrorCode.READ_WRITE_DENIED)
        try:
            axdr.decode_all(value)
        except ProtocolError:
            return int(ErrorCode.UNMATCHED_TYPE)
        if value[0] != _SHAPES[index] or (index == 10 and len(value) != 14):
            return int(ErrorCode.UNMATCHED_TYPE)
        self.attributes[index] = value
        self.log.append(("set", index))
        return int(ErrorCode.OK)

    def activate(self, reason: str) -> None:
        """Copy the passive calendar over the active one."""
        for passive, active in ((6, 2), (7, 3), (8, 4), (9, 5)):
            self.attributes[active] = self.attributes[passive]
        self.log.append(("activate", reason))

    def tick(self, meter_time: datetime) -> None:
        """Activate the passive calendar once its activation time has come (then forget the time)."""
        raw = self.attributes[10]
        try:
            due = decode_datetime(raw[2:])
        except GxError:
            return  # unspecified: never
        if meter_time >= due:
            self.activate("time")
            self.attributes[10] = _initial()[10]

    def invoke_calendar(self, method: int) -> int:
        if method != cal.ACTIVATE_PASSIVE:
            return int(ErrorCode.READ_WRITE_DENIED)
        self.activate("method")
        return int(ErrorCode.OK)

    def invoke_special(self, method: int, value: object) -> int:
        """insert (1) with {index, date, day_id} or delete (2) with an index, as gurux decoded them."""
        value = cal.plain(value)
        if method == cal.INSERT:
            if not (
                isinstance(value, list)
                and len(value) == 3
                and isinstance(value[0], int)
                and isinstance(value[1], bytes)
                and len(value[1]) == 5
                and isinstance(value[2], int)
                and 0 <= value[0] <= 0xFFFF
                and 0 <= value[2] <= 0xFF
            ):
                return int(ErrorCode.UNMATCHED_TYPE)
            index, date, day_id = value
            self.special[index] = (
                b"\x02\x03\x12" + index.to_bytes(2, "big") + b"\x09\x05" + date + bytes([0x11, day_id])
            )
            self.log.append(("insert", index))
            return int(ErrorCode.OK)
        if method == cal.DELETE:
            if not isinstance(value, int) or isinstance(value, bool):
                return int(ErrorCode.UNMATCHED_TYPE)
            self.special.pop(value, None)
            self.log.append(("delete", value))
            return int(ErrorCode.OK)
        return int(ErrorCode.READ_WRITE_DENIED)


def _long_array(items: list[bytes]) -> bytes:
    n = len(items)
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return b"\x01" + bytes([0x80 | len(body)]) + body + b"".join(items)
