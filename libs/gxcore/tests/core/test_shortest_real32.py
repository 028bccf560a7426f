"""shortest_real32 starts at 6 digits for speed; it must still give the shortest decimal, subnormals included."""

from __future__ import annotations

import math
import struct
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from gxcore.readings import shortest_real32


def _brute(value: float) -> Decimal:
    packed = struct.pack("<f", value)
    for digits in range(1, 10):
        text = f"{value:.{digits}g}"
        if struct.pack("<f", float(text)) == packed:
            return Decimal(text)
    raise AssertionError("9 digits always round-trip a float32")


def _significant(d: Decimal) -> int:
    return len(d.normalize().as_tuple().digits)


@given(st.integers(0, 2**32 - 1))
def test_the_shortest_decimal_of_any_float32(bits: int) -> None:
    value = struct.unpack("<f", struct.pack("<I", bits))[0]
    if not math.isfinite(value):
        return
    got, want = shortest_real32(value), _brute(value)
    assert got == want and _significant(got) == _significant(want)
    assert struct.pack("<f", float(got)) == struct.pack("<f", value)


@given(st.integers(0, 2**23 - 1), st.booleans())
def test_subnormals_have_fewer_digits_and_still_get_the_shortest(mantissa: int, negative: bool) -> None:
    value = struct.unpack("<f", struct.pack("<I", mantissa | (negative << 31)))[0]
    assert shortest_real32(value) == _brute(value)


def test_known_values() -> None:
    as32 = lambda x: struct.unpack("<f", struct.pack("<f", x))[0]  # noqa: E731
    assert str(shortest_real32(as32(230.1))) == "230.1"
    assert str(shortest_real32(as32(50.0))) == "50"
    assert shortest_real32(as32(1e-45)) == Decimal("1E-45")
    assert shortest_real32(as32(16777217.0)) == Decimal(16777216)
