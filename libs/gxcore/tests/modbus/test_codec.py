"""Register codec: known answers for every type and order, and round-trip properties."""

from __future__ import annotations

import math
import struct
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gxcore.errors import ConfigurationError, GxError, ProtocolError
from gxcore.profiles import ProfilePoint
from gxcore.protocols.modbus.codec import decode_value, encode_value, engineering_value, is_unavailable, raw_for
from gxcore.protocols.modbus.profile import RegisterPoint, ValueType, register_point

ORDERS = [("big", "big"), ("big", "little"), ("little", "big"), ("little", "little")]
NUMERIC = [t.label for t in ValueType if t.is_integer or t.is_float]


def point(type_: str = "uint16", byte_order: str = "big", word_order: str = "big", **extra: Any) -> RegisterPoint:
    options: dict[str, Any] = {"type": type_, "byte_order": byte_order, "word_order": word_order, **extra}
    return register_point(ProfilePoint(quantity="1-0:1.8.0", unit="kWh", source="holding:0", options=options))


def reorder(words: list[int], byte_order: str, word_order: str) -> list[int]:
    """Independent model of the orders: big/big words as a device with these orders sends them."""
    if word_order == "little":
        words = words[::-1]
    if byte_order == "little":
        words = [int.from_bytes(w.to_bytes(2, "big")[::-1], "big") for w in words]
    return words


# (type, raw value, registers in big byte / big word order)
KNOWN = [
    ("int16", -2, [0xFFFE]),
    ("int16", -32768, [0x8000]),
    ("uint16", 65535, [0xFFFF]),
    ("uint16", 0x1234, [0x1234]),
    ("int32", 0x12345678, [0x1234, 0x5678]),
    ("int32", -2, [0xFFFF, 0xFFFE]),
    ("uint32", 4_000_000_000, [0xEE6B, 0x2800]),
    ("int64", -2, [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE]),
    ("uint64", 0x0123456789ABCDEF, [0x0123, 0x4567, 0x89AB, 0xCDEF]),
    ("float32", 230.0, [0x4366, 0x0000]),
    ("float32", 50.0, [0x4248, 0x0000]),
    ("float32", -1.5, [0xBFC0, 0x0000]),
    ("float64", 1.0, [0x3FF0, 0x0000, 0x0000, 0x0000]),
    ("float64", -2.5, [0xC004, 0x0000, 0x0000, 0x0000]),
]


@pytest.mark.parametrize(("byte_order", "word_order"), ORDERS)
@pytest.mark.parametrize(("type_", "raw", "big_big"), KNOWN)
def test_known_answers_in_every_order(
    type_: str, raw: int | float, big_big: list[int], byte_order: str, word_order: str
) -> None:
    rp = point(type_, byte_order, word_order)
    wire = reorder(big_big, byte_order, word_order)
    assert encode_value(rp, raw) == wire
    assert decode_value(rp, wire) == raw


@pytest.mark.parametrize(
    ("byte_order", "word_order", "wire"),
    [
        ("big", "big", [0x4366, 0x0000]),
        ("big", "little", [0x0000, 0x4366]),
        ("little", "big", [0x6643, 0x0000]),
        ("little", "little", [0x0000, 0x6643]),
    ],
)
def test_float32_230_volts_literally(byte_order: str, word_order: str, wire: list[int]) -> None:
    # Eastron sends 230.0 V as 0x4366 0x0000 (IEEE 754, high word first).
    assert decode_value(point("float32", byte_order, word_order), wire) == 230.0


@pytest.mark.parametrize(
    ("byte_order", "word_order", "wire"),
    [
        ("big", "big", [0x1234, 0x5678]),
        ("big", "little", [0x5678, 0x1234]),
        ("little", "big", [0x3412, 0x7856]),
        ("little", "little", [0x7856, 0x3412]),
    ],
)
def test_int32_orders_literally(byte_order: str, word_order: str, wire: list[int]) -> None:
    assert decode_value(point("int32", byte_order, word_order), wire) == 0x12345678


def test_lsw_first_int32_with_weight_as_carlo_gavazzi_sends_voltage() -> None:
    # Carlo Gavazzi EM24/EM340 maps: "INT32, LSW first, V*10": 230.0 V is 2300 = 0x000008FC.
    rp = register_point(
        ProfilePoint(
            quantity="1-0:32.7.0",
            unit="V",
            source="input:0",
            scale=0.1,
            options={"type": "int32", "word_order": "little"},
        )
    )
    raw = decode_value(rp, [0x08FC, 0x0000])
    assert raw == 2300
    assert isinstance(raw, int)
    assert engineering_value(rp, raw) == pytest.approx(230.0)


def test_string_known_answer_and_nul_padding() -> None:
    rp = point("string", length=4)
    assert encode_value(rp, "SDM630") == [0x5344, 0x4D36, 0x3330, 0x0000]
    assert decode_value(rp, [0x5344, 0x4D36, 0x3330, 0x0000]) == "SDM630"
    swapped = point("string", byte_order="little", length=2)
    assert decode_value(swapped, [0x4241, 0x4443]) == "ABCD"


def test_string_with_non_ascii_bytes_decodes_with_replacement() -> None:
    assert decode_value(point("string", length=1), [0xFF41]) == "\ufffdA"


def test_wrong_register_count_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        decode_value(point("float32"), [0x4366])
    with pytest.raises(ProtocolError):
        decode_value(point("uint16"), [0x10000])


@pytest.mark.parametrize(
    ("type_", "raw"),
    [("uint16", 65536), ("uint16", -1), ("int16", 32768), ("uint64", 1 << 64), ("float32", 1e39), ("int32", 1.5)],
)
def test_values_that_do_not_fit_are_configuration_errors(type_: str, raw: int | float) -> None:
    with pytest.raises(ConfigurationError):
        encode_value(point(type_), raw)


def test_text_and_numbers_do_not_mix() -> None:
    with pytest.raises(ConfigurationError):
        encode_value(point("uint16"), "12")
    with pytest.raises(ConfigurationError):
        encode_value(point("string", length=1), 12)
    with pytest.raises(ConfigurationError):
        encode_value(point("string", length=1), "abc")  # 3 bytes > 2
    with pytest.raises(ConfigurationError):
        raw_for(point("uint16"), "12")


def test_raw_for_inverts_scale_and_offset_and_rounds_integers() -> None:
    rp = register_point(ProfilePoint(quantity="1-0:1.8.0", unit="kWh", source="holding:0", scale=0.01, offset=5.0))
    assert raw_for(rp, 17.34) == 1234
    assert engineering_value(rp, 1234) == Decimal("17.34")  # exact: 1234 * 0.01 + 5, no float noise
    float_rp = register_point(
        ProfilePoint(quantity="1-0:1.8.0", unit="kWh", source="holding:0", scale=2.0, options={"type": "float32"})
    )
    assert raw_for(float_rp, 3.0) == 1.5
    with pytest.raises(ConfigurationError):
        raw_for(float_rp, math.inf)


def test_unavailable_values() -> None:
    rp = point("uint32", invalid=0xFFFFFFFF)
    assert is_unavailable(rp, decode_value(rp, [0xFFFF, 0xFFFF]))
    assert not is_unavailable(rp, decode_value(rp, [0xFFFF, 0xFFFE]))
    nan = point("float32")
    assert is_unavailable(nan, decode_value(nan, [0x7FC0, 0x0000]))


def test_bits() -> None:
    rp = register_point(ProfilePoint(quantity="0-0:96.3.10", unit="", source="coil:3"))
    assert rp.value_type is ValueType.BIT
    assert decode_value(rp, [1]) == 1
    assert encode_value(rp, raw_for(rp, True)) == [1]
    with pytest.raises(ProtocolError):
        decode_value(rp, [2])
    with pytest.raises(ConfigurationError):
        encode_value(rp, 2)


# -- properties -----------------------------------------------------------------------

orders = st.sampled_from(ORDERS)


@settings(max_examples=300)
@given(data=st.data(), type_=st.sampled_from([t for t in ValueType if t.is_integer]), order=orders)
def test_integers_round_trip(data: st.DataObject, type_: ValueType, order: tuple[str, str]) -> None:
    low, high = type_.integer_range()
    raw = data.draw(st.integers(low, high))
    rp = point(type_.label, *order)
    words = encode_value(rp, raw)
    assert len(words) == type_.registers
    assert all(0 <= w <= 0xFFFF for w in words)
    assert decode_value(rp, words) == raw


@settings(max_examples=300)
@given(raw=st.floats(width=32, allow_nan=False), order=orders)
def test_float32_round_trips(raw: float, order: tuple[str, str]) -> None:
    rp = point("float32", *order)
    words = encode_value(rp, raw)
    assert struct.pack(">f", raw) == b"".join(w.to_bytes(2, "big") for w in reorder(words, *order))
    assert decode_value(rp, words) == raw


@settings(max_examples=300)
@given(raw=st.floats(allow_nan=False), order=orders)
def test_float64_round_trips(raw: float, order: tuple[str, str]) -> None:
    rp = point("float64", *order)
    assert decode_value(rp, encode_value(rp, raw)) == raw


@settings(max_examples=200)
@given(
    text=st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=127), max_size=10),
    order=orders,
)
def test_strings_round_trip(text: str, order: tuple[str, str]) -> None:
    rp = point("string", *order, length=5)
    assert decode_value(rp, encode_value(rp, text)) == text


@settings(max_examples=300)
@given(
    type_=st.sampled_from([*NUMERIC, "string"]),
    order=orders,
    words=st.lists(st.integers(-2, 0x10001), max_size=6),
)
def test_any_registers_decode_or_raise_a_gxcore_error(type_: str, order: tuple[str, str], words: list[int]) -> None:
    rp = point(type_, *order, **({"length": 3} if type_ == "string" else {}))
    try:
        value = decode_value(rp, words)
    except GxError:
        return
    assert isinstance(value, int | float | str)
    assert len(words) == rp.count
