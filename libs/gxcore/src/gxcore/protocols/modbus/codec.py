"""Register words <-> point values, pure: no I/O, no clock.

A value of N registers is first put into "big/big" order (swap the two bytes of each
register when ``byte_order`` is little, reverse the registers when ``word_order`` is
little), then read as one big-endian number (``struct``, no Modbus library: the codec is
pure; the pymodbus boundary is :mod:`gxcore.drivers.modbus_link`). So float32 230.0 is
``0x4366 0x0000`` big/big,
``0x0000 0x4366`` with little word order and ``0x6643 0x0000`` with little byte order.

Strings are the register bytes in order (after the same reordering), ASCII, cut at the
first NUL; bytes outside ASCII become U+FFFD rather than failing the whole read.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

from gxcore.errors import ConfigurationError, ProtocolError
from gxcore.protocols.modbus.profile import Order, RegisterPoint, ValueType
from gxcore.readings import Number, shortest_real32
from gxcore.units import scaled

RawValue = int | float | str

# Big-endian struct formats of the numeric types (their size is 2 bytes per register).
_FORMATS = {
    ValueType.INT16: ">h",
    ValueType.UINT16: ">H",
    ValueType.INT32: ">i",
    ValueType.UINT32: ">I",
    ValueType.INT64: ">q",
    ValueType.UINT64: ">Q",
    ValueType.FLOAT32: ">f",
    ValueType.FLOAT64: ">d",
}


_WORDS = {n: struct.Struct(f">{n}H") for n in (1, 2, 4)}  # 16-bit registers, big-endian, by count
# By struct code (a string key: hashing the enum itself is a Python-level call per value).
_NUMBERS = {vt.struct_code: struct.Struct(fmt) for vt, fmt in _FORMATS.items()}


def _number_to_words(raw: int | float, value_type: ValueType) -> list[int]:
    data = struct.pack(_FORMATS[value_type], raw)
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


def _swap_bytes(words: Sequence[int]) -> list[int]:
    return [((w & 0xFF) << 8) | (w >> 8) for w in words]


def _to_big_big(words: Sequence[int], byte_order: Order, word_order: Order) -> list[int]:
    ordered = _swap_bytes(words) if byte_order == "little" else list(words)
    return ordered[::-1] if word_order == "little" else ordered


def _from_big_big(words: Sequence[int], byte_order: Order, word_order: Order) -> list[int]:
    # Both steps are involutions and commute, so the inverse is the same reordering.
    return _to_big_big(words, byte_order, word_order)


def decode_value(rp: RegisterPoint, words: Sequence[int]) -> RawValue:
    """Raw value of ``rp`` from exactly its registers (or its one bit as 0/1)."""
    vt = rp.value_type
    if vt is ValueType.BIT:
        if len(words) != 1 or words[0] not in (0, 1):
            raise ProtocolError(f"{rp.describe()}: expected one bit, got {list(words)[:4]}")
        return words[0]
    n = len(words)
    if n != rp.count:
        raise ProtocolError(f"{rp.describe()}: expected {rp.count} 16-bit registers, got {n}")
    ordered = _to_big_big(words, rp.byte_order, rp.word_order) if rp.reordered else words
    try:
        data = (_WORDS.get(n) or struct.Struct(f">{n}H")).pack(*ordered)
    except struct.error:  # a register outside 0..0xFFFF
        raise ProtocolError(f"{rp.describe()}: expected {rp.count} 16-bit registers, got {list(words)[:4]}") from None
    if vt is ValueType.STRING:
        return data.split(b"\x00", 1)[0].decode("ascii", errors="replace")
    code = vt.struct_code
    if not code:
        raise ProtocolError(f"{rp.describe()}: registers did not decode to a number")
    value: int | float = _NUMBERS[code].unpack(data)[0]
    return value


def encode_value(rp: RegisterPoint, raw: RawValue) -> list[int]:
    """Registers (or the one bit) that carry ``raw``; ConfigurationError if it does not fit."""
    vt = rp.value_type
    if vt is ValueType.BIT:
        if raw not in (0, 1) or isinstance(raw, str):
            raise ConfigurationError(f"{rp.describe()}: a bit is 0 or 1, not {raw!r}")
        return [int(raw)]
    if vt is ValueType.STRING:
        if not isinstance(raw, str):
            raise ConfigurationError(f"{rp.describe()}: expects text")
        try:
            data = raw.encode("ascii")
        except UnicodeEncodeError:
            raise ConfigurationError(f"{rp.describe()}: text must be ASCII") from None
        if len(data) > 2 * rp.count or b"\x00" in data:
            raise ConfigurationError(f"{rp.describe()}: text longer than {2 * rp.count} bytes or has NUL")
        data = data.ljust(2 * rp.count, b"\x00")
        words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
        return _from_big_big(words, rp.byte_order, rp.word_order)
    if isinstance(raw, str):
        raise ConfigurationError(f"{rp.describe()}: expects a number, not text")
    if vt.is_integer:
        if isinstance(raw, float):
            if not raw.is_integer():
                raise ConfigurationError(f"{rp.describe()}: {vt.label} needs an integer raw value, not {raw}")
            raw = int(raw)
        low, high = vt.integer_range()
        if not low <= raw <= high:
            raise ConfigurationError(f"{rp.describe()}: raw value {raw} outside {vt.label} range {low}..{high}")
    else:
        raw = float(raw)
        if vt is ValueType.FLOAT32 and math.isfinite(raw):
            try:
                struct.pack(">f", raw)
            except OverflowError:
                raise ConfigurationError(f"{rp.describe()}: {raw} does not fit a float32") from None
    words = _number_to_words(raw, vt)
    return _from_big_big(words, rp.byte_order, rp.word_order)


def engineering_value(rp: RegisterPoint, raw: int | float) -> Number:
    """The reported value: ``raw * scale + offset``, exactly (the one formula drivers and simulators share).

    An integer register with an integral scale and offset stays an int, a scaled one is a Decimal
    (``2301`` with scale 0.1 is ``Decimal("230.1")``), a float32 starts from its shortest decimal
    (``230.1``, not ``230.10000610351562``); a float64 with scale 1 and offset 0 stays as it is.
    """
    if isinstance(raw, float) and not math.isfinite(raw):
        return raw
    value: Number = shortest_real32(raw) if rp.value_type is ValueType.FLOAT32 and isinstance(raw, float) else raw
    return scaled(rp.point, value)


def raw_for(rp: RegisterPoint, value: float | str | bool) -> RawValue:
    """Inverse of ``engineering_value``: the raw value to write for ``value``.

    Integers are rounded to the nearest raw step; out-of-range values raise
    ConfigurationError (a local fault: the caller asked for something unwritable).
    """
    if isinstance(value, str):
        if rp.value_type is not ValueType.STRING:
            raise ConfigurationError(f"{rp.describe()}: expects a number, not text")
        return value
    if rp.value_type is ValueType.STRING:
        raise ConfigurationError(f"{rp.describe()}: expects text")
    if not math.isfinite(float(value)):
        raise ConfigurationError(f"{rp.describe()}: cannot write {value}")
    if rp.point.scale == 0:
        raise ConfigurationError(f"{rp.describe()}: scale 0 cannot be inverted for a write")
    raw = (float(value) - rp.point.offset) / rp.point.scale
    if rp.value_type is ValueType.BIT or rp.value_type.is_integer:
        return round(raw)
    return raw


def is_unavailable(rp: RegisterPoint, raw: RawValue) -> bool:
    """True when the device says "no value": the point's ``invalid`` raw value, or a NaN."""
    if isinstance(raw, float) and math.isnan(raw):
        return True
    return rp.invalid is not None and isinstance(raw, int) and raw == rp.invalid
