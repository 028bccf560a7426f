"""What a simulated meter holds: object specs, the value model it asks, and exact A-XDR encodings.

The meter core hands gurux ready A-XDR bytes for every value attribute (gurux's own
encoders guess types and stamp local time), encoded here. The association's
``object_list`` (attribute 2 of 0-0:40.0.0) is encoded here too: gurux 1.0.203 builds it by
calling the attribute-access callback for every attribute of every object, which would
compute every value (a whole load profile) just to say "read-only"::

    array of structure {
        class_id long-unsigned, version unsigned, logical_name octet-string (6),
        access_rights structure {
            attribute_access array of structure {attribute_id integer, access_mode enum,
                                                 access_selectors (null-data | array of integer)}
            method_access array of structure {method_id integer, access_mode enum}
        }
    }
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Protocol

from gurux_dlms import GXByteBuffer
from gurux_dlms.enums import DataType
from gurux_dlms.internal._GXCommon import _GXCommon

from gxcore.protocols.dlms.cosem_time import encode_datetime
from gxcore.protocols.dlms.obis import obis_to_bytes

FULL_BUFFER_ROWS: Final = 31 * 96  # a load profile keeps 31 days of 15-minute rows
Rows = Sequence[tuple[datetime, Sequence[int]]]


@dataclass(frozen=True, slots=True)
class RegisterSpec:
    """A Register (class 3): OBIS, scaler, COSEM unit code and A-XDR value type (gurux DataType)."""

    obis: str
    scaler: int
    unit: int
    data_type: int = DataType.UINT32


@dataclass(frozen=True, slots=True)
class ExtendedRegisterSpec:
    """An Extended register (class 4): a register with a status and the time its value was captured."""

    obis: str
    scaler: int
    unit: int
    data_type: int = DataType.UINT32


@dataclass(frozen=True, slots=True)
class DemandRegisterSpec:
    """A Demand register (class 5): current and last average over ``period`` seconds."""

    obis: str
    scaler: int
    unit: int
    period: int = 900
    data_type: int = DataType.UINT32


@dataclass(frozen=True, slots=True)
class DataSpec:
    """A Data object (class 1) with a value of one A-XDR type (an event code, a name, a counter).

    A ``writable`` one takes a SET of its value (attribute 2, same type) and keeps it."""

    obis: str
    data_type: int
    writable: bool = False


@dataclass(frozen=True, slots=True)
class ProfileSpec:
    """A Profile generic (class 7) capturing the clock, then objects (attribute 2 of each), every
    ``period`` seconds (0: on events), keeping at most ``entries`` rows."""

    obis: str
    registers: tuple[str, ...]
    period: int = 900
    entries: int = FULL_BUFFER_ROWS


ObjectSpec = RegisterSpec | ExtendedRegisterSpec | DemandRegisterSpec | DataSpec


class MeterModel(Protocol):
    """Where the simulated values come from; raw values are integers before the scaler."""

    def register_raw(self, obis: str, at: datetime) -> int:
        """Raw value of register ``obis`` at ``at``."""

    def profile_rows(self, obis: str, start: datetime, end: datetime, now: datetime) -> Rows:
        """Rows of profile ``obis`` with ``start <= time <= min(end, now)``, oldest first."""

    def meter_time(self, now: datetime) -> datetime:
        """The meter's clock when the true time is ``now`` (differs after a clock set)."""

    def set_clock(self, meter_time: datetime, now: datetime) -> None:
        """Set the meter's clock to ``meter_time`` at true time ``now``."""

    def supply(self) -> tuple[bool, int]:
        """Disconnect control: (output_state, control_state 0 disconnected / 1 connected)."""

    def switch_supply(self, connect: bool) -> None:
        """remote_reconnect (True) or remote_disconnect (False)."""


class RicherMeterModel(MeterModel, Protocol):
    """A model that also serves extended and demand registers, data objects and buffers by entry."""

    def extended(self, obis: str, at: datetime) -> tuple[int, int, datetime]:
        """Extended register: (raw value, status, capture time)."""

    def demand(self, obis: str, at: datetime) -> tuple[int, int, int, datetime, datetime]:
        """Demand register: (current average, last average, status, capture time, start of current period)."""

    def data_value(self, obis: str, at: datetime) -> int | bytes | str:
        """Value of a Data object."""

    def profile_entries(self, obis: str, first: int, last: int, now: datetime) -> tuple[Rows, int]:
        """Rows ``first..last`` (1-based, oldest first, ``last`` 0 = newest) and the entries in use."""


def encode_value(data_type: int, value: object) -> bytes:
    """One A-XDR value of gurux type ``data_type``."""
    out = GXByteBuffer()
    _GXCommon.setData(None, out, data_type, value)
    return bytes(out.array())


# A-XDR integer tags: (bytes, signed).
_INTEGERS: Final = {
    15: (1, True),
    16: (2, True),
    5: (4, True),
    20: (8, True),
    17: (1, False),
    18: (2, False),
    6: (4, False),
    21: (8, False),
    22: (1, False),
}


def decode_value(encoded: bytes) -> int:
    """An A-XDR integer (tag and fixed-size value, nothing after); ValueError for anything else."""
    shape = _INTEGERS.get(encoded[0]) if encoded else None
    if shape is None or len(encoded) != 1 + shape[0]:
        raise ValueError("not one A-XDR integer")
    return int.from_bytes(encoded[1:], "big", signed=shape[1])


def encode_time(at: datetime) -> bytes:
    """A date-time attribute: octet-string of 12 (UTC, deviation 0)."""
    return b"\x09\x0c" + encode_datetime(at)


def encode_scaler_unit(scaler: int, unit: int) -> bytes:
    return bytes([0x02, 0x02, 0x0F, scaler & 0xFF, 0x16, unit])


@dataclass(frozen=True, slots=True)
class ListedObject:
    """One entry of an object list: what it is and what the client may do with it."""

    class_id: int
    version: int
    obis: str
    attributes: int
    readable: tuple[int, ...] = ()
    writable: tuple[int, ...] = ()
    selectors: dict[int, tuple[int, ...]] | None = None
    methods: int = 0
    callable_methods: tuple[int, ...] = ()


def encode_object_list(objects: Iterable[ListedObject]) -> bytes:
    """Attribute 2 of an Association LN (see the module doc)."""
    items = list(objects)
    out = bytearray(b"\x01") + _count(len(items))
    for item in items:
        out += b"\x02\x04\x12" + item.class_id.to_bytes(2, "big") + bytes([0x11, item.version])
        out += b"\x09\x06" + obis_to_bytes(item.obis)
        out += b"\x02\x02\x01" + _count(item.attributes)
        for index in range(1, item.attributes + 1):
            mode = (1 if index in item.readable else 0) | (2 if index in item.writable else 0)
            out += bytes([0x02, 0x03, 0x0F, index, 0x16, mode])
            chosen = (item.selectors or {}).get(index)
            out += b"\x00" if not chosen else b"\x01" + _count(len(chosen)) + b"".join(bytes([0x0F, s]) for s in chosen)
        out += b"\x01" + _count(item.methods)
        for index in range(1, item.methods + 1):
            out += bytes([0x02, 0x02, 0x0F, index, 0x16, 1 if index in item.callable_methods else 0])
    return bytes(out)


def _count(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body
