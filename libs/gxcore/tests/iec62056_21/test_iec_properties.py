"""Hypothesis: hostile bytes give a readout or a gxcore error; the session never raises on input."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gxami_meterlab.simulators.iec62056_21 import SimulatedIecMeter
from gxcore.errors import GxError
from gxcore.protocols.iec62056_21 import (
    Iec62056Session,
    SessionFailed,
    SessionState,
    bcc,
    decode_iec62056_21_readout,
    encode_data_message,
    parse_identification,
)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
READOUT_ALPHABET = list(b"\x02\x03\x06/?!()*.:-0123456789ABCFkWhV\r\n ")
GOOD = [SimulatedIecMeter(seed).readout(datetime(2024, 1, 1, tzinfo=UTC)) for seed in range(4)]


def decode_or_gx_error(data: bytes) -> None:
    with contextlib.suppress(GxError):
        decode_iec62056_21_readout(data)


@given(st.binary(max_size=500))
@SETTINGS
def test_any_bytes_decode_or_raise_gx_error(data: bytes) -> None:
    decode_or_gx_error(data)


@given(st.lists(st.sampled_from(READOUT_ALPHABET), max_size=300).map(bytes))
@SETTINGS
def test_readout_like_bytes_decode_or_raise_gx_error(data: bytes) -> None:
    decode_or_gx_error(data)
    decode_or_gx_error(b"\x02" + data)


@given(st.binary(max_size=80))
@SETTINGS
def test_any_identification_bytes(data: bytes) -> None:
    with contextlib.suppress(GxError):
        parse_identification(data)


@given(st.sampled_from(GOOD), st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(READOUT_ALPHABET)), max_size=4))
@SETTINGS
def test_mutated_readouts_decode_or_raise(good: bytes, edits: list[tuple[int, int]]) -> None:
    data = bytearray(good)
    for pos, byte in edits:
        data[pos % len(data)] = byte
    # Fix up the BCC half of the time, so mutations reach the line parser.
    if len(edits) % 2 and data.rfind(b"\x03") > 0:
        etx = data.rfind(b"\x03")
        data = data[: etx + 1] + bytes([bcc(data[1 : etx + 1])])
    decode_or_gx_error(bytes(data))


@given(st.lists(st.binary(max_size=64), max_size=10), st.lists(st.floats(0, 5), max_size=10))
@SETTINGS
def test_session_turns_any_input_into_events_never_exceptions(chunks: list[bytes], gaps: list[float]) -> None:
    session = Iec62056Session()
    now = 0.0
    session.start(now)
    for i, chunk in enumerate(chunks):
        now += gaps[i] if i < len(gaps) else 0.01
        events = session.receive_data(chunk, now) + session.handle_timer(now)
        for event in events:
            if isinstance(event, SessionFailed):
                assert isinstance(event.error, GxError)
    if session.state not in (SessionState.DONE, SessionState.FAILED):
        deadline = session.next_deadline()
        assert deadline is not None
        session.handle_timer(deadline + 10)
        session.handle_timer(deadline + 20)  # the reaction wait may have been pending first
    assert session.state in (SessionState.DONE, SessionState.FAILED)


address = st.text(alphabet="0123456789ABCDEF.:-", min_size=1, max_size=12).filter(lambda a: a[0] not in "!")
value = st.decimals(min_value=0, max_value=10**6, places=3, allow_nan=False, allow_infinity=False)


@given(st.lists(st.tuples(address, value, st.sampled_from(["kWh", "kW", "V", "A", "m3"])), min_size=1, max_size=15))
@SETTINGS
def test_encode_decode_round_trip(sets: list[tuple[str, Decimal, str]]) -> None:
    block = encode_data_message([f"{a}({v}*{u})" for a, v, u in sets])
    assert bcc(block[1:-1]) == block[-1]
    readout = decode_iec62056_21_readout(block)
    assert [(r.quantity, r.unit) for r in readout.records] == [(a, u) for a, _, u in sets]
    for (_, v, _), r in zip(sets, readout.records, strict=True):
        # Addresses such as "0.0", "C.1.0" or "F.F" name identifiers and status words: kept as text.
        assert r.value == (v if isinstance(r.value, Decimal) else str(v))


@given(st.binary(max_size=200))
@SETTINGS
def test_bcc_of_data_and_its_bcc_is_zero(data: bytes) -> None:
    assert bcc(data + bytes([bcc(data)])) == 0
