"""The simulated meter's image transfer and calendar objects take hostile input without raising."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gxami_meterlab.dlms.image_transfer import ImageTransferState, encode_bit_string
from gxami_meterlab.dlms.tariff_calendar import CalendarState
from gxcore.protocols.dlms import axdr
from gxcore.protocols.dlms import image_transfer as it

VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**40), max_value=2**40) | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=12,
)


@given(method=st.integers(min_value=-3, max_value=8), parameters=VALUES | st.binary(max_size=60))
def test_any_method_call_gets_an_action_result(method: int, parameters: object) -> None:
    state = ImageTransferState()
    state.invoke(it.INITIATE, [b"IMG", 500])
    assert isinstance(state.invoke(method, parameters), int)
    assert all(0 <= n < state.total for n in state.blocks)


@given(index=st.integers(min_value=0, max_value=12), value=st.binary(max_size=80), special=VALUES)
def test_any_calendar_write_or_special_day_gets_a_result(index: int, value: bytes, special: object) -> None:
    state = CalendarState()
    assert isinstance(state.write(index, value), int)
    assert isinstance(state.invoke_special(1, special), int)
    assert isinstance(state.invoke_special(2, special), int)
    for encoded in (*state.attributes.values(), state.special_entries()):
        axdr.decode_all(encoded)  # whatever was accepted still reads back as one A-XDR value


@given(bits=st.text(alphabet="01", max_size=300))
def test_the_block_bitmap_round_trips_through_a_dlms_decoder(bits: str) -> None:
    assert axdr.decode_all(encode_bit_string(bits)) == bits
