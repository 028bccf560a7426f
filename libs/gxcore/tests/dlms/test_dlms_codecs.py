"""OBIS names, COSEM date-times and the wrapper framer: known answers and properties."""

from __future__ import annotations

import contextlib
import struct
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from gurux_dlms import GXByteBuffer, GXDateTime
from gurux_dlms.enums import DataType
from gurux_dlms.internal._GXCommon import _GXCommon
from hypothesis import given
from hypothesis import strategies as st

from gxcore.errors import ConfigurationError, FramingError, ProtocolError
from gxcore.protocols.dlms import wrapper
from gxcore.protocols.dlms.cosem_time import decode_datetime, encode_datetime
from gxcore.protocols.dlms.gurux import quiet
from gxcore.protocols.dlms.obis import apply_scaler, dotted, obis_from_bytes, reduced, unit_symbol


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.0.1.8.0.255", "1-0:1.8.0"),
        ("1.0.32.7.0.255", "1-0:32.7.0"),
        ("0.0.1.0.0.255", "0-0:1.0.0"),
        ("1.0.1.8.0.101", "1-0:1.8.0.101"),
        ("1-0:2.8.0", "1-0:2.8.0"),
    ],
)
def test_reduced_obis(text: str, expected: str) -> None:
    assert reduced(text) == expected


def test_dotted_obis_round_trips_the_reduced_form() -> None:
    assert dotted("1-0:31.7.0") == "1.0.31.7.0.255"
    assert dotted("1-0:1.8.0.3") == "1.0.1.8.0.3"
    assert obis_from_bytes(b"\x01\x00\x01\x08\x00\xff") == "1.0.1.8.0.255"


@pytest.mark.parametrize("bad", ["1.0.1.8.0", "1.0.1.8.0.256", "a.b.c.d.e.f", "1-0:1.8", "1-0-1:1.8.0"])
def test_bad_obis_is_a_configuration_error(bad: str) -> None:
    with pytest.raises(ConfigurationError):
        dotted(bad)


def test_logical_name_of_wrong_length_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        obis_from_bytes(b"\x01\x00\x01")


def test_scaler_is_exact_for_negative_powers() -> None:
    assert apply_scaler(2301, -1) == Decimal("230.1")
    assert apply_scaler(227, -2) == Decimal("2.27")
    assert apply_scaler(12, 3) == 12000 and type(apply_scaler(12, 3)) is int
    assert apply_scaler(5, 0) == 5 and type(apply_scaler(5, 0)) is int
    # no binary-float noise, and the meter's resolution kept (three decimals for scaler -3)
    assert str(apply_scaler(38296251, -3)) == "38296.251"
    assert str(apply_scaler(38296000, -3)) == "38296.000"
    assert float(apply_scaler(38296251, -3)) == 38296.251  # one correctly rounded conversion, shortest repr
    assert apply_scaler(2.5, 0) == 2.5 and apply_scaler(2.5, -1) == Decimal("0.25")


def test_unit_symbols_from_the_blue_book_enumeration() -> None:
    assert [unit_symbol(c) for c in (27, 30, 32, 33, 35, 255)] == ["W", "Wh", "varh", "A", "V", ""]
    assert unit_symbol(200) == "unit-200"


def test_datetime_encoding_matches_gurux() -> None:
    """Cross-check with gurux's own encoder (an independent implementation) for a UTC instant."""
    at = datetime(2024, 3, 5, 17, 4, 9, tzinfo=UTC)
    buf = GXByteBuffer()
    with quiet():
        _GXCommon.setData(None, buf, DataType.OCTET_STRING, GXDateTime(at))
    theirs, ours = bytes(buf.array())[2:], encode_datetime(at)
    # gurux leaves day-of-week unspecified (0xFF); every other field must agree.
    assert theirs[4] == 0xFF
    assert theirs[:4] + theirs[5:] == ours[:4] + ours[5:]
    # 2024-03-05 is a Tuesday (2); deviation 0, status 0.
    assert encode_datetime(at) == bytes.fromhex("07e8 03 05 02 11 04 09 00 0000 00".replace(" ", ""))


def test_deviation_follows_the_standard_sign() -> None:
    """CET (UTC+1) is deviation -60: 13:00 local is 12:00 UTC."""
    raw = struct.pack(">HBBBBBBBhB", 2024, 1, 10, 3, 13, 0, 0, 0, -60, 0)
    assert decode_datetime(raw) == datetime(2024, 1, 10, 12, 0, tzinfo=UTC)


def test_unspecified_fields() -> None:
    no_dev = struct.pack(">HBBBBBBBhB", 2024, 1, 10, 0xFF, 13, 0, 0xFF, 0xFF, -0x8000, 0)
    assert decode_datetime(no_dev) == datetime(2024, 1, 10, 13, 0, tzinfo=UTC)
    with pytest.raises(ProtocolError):
        decode_datetime(no_dev, unspecified_deviation_is_utc=False)
    with pytest.raises(ProtocolError):
        decode_datetime(struct.pack(">HBBBBBBBhB", 0xFFFF, 1, 10, 0xFF, 13, 0, 0, 0, 0, 0))
    with pytest.raises(ProtocolError):
        decode_datetime(struct.pack(">HBBBBBBBhB", 2023, 2, 30, 0xFF, 13, 0, 0, 0, 0, 0))


@given(st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)))
def test_datetime_round_trip_to_the_hundredth(at: datetime) -> None:
    assert decode_datetime(encode_datetime(at)) == at.replace(microsecond=at.microsecond // 10_000 * 10_000)


def test_encoding_converts_other_zones_to_utc() -> None:
    cet = timezone(timedelta(hours=1))
    assert encode_datetime(datetime(2024, 1, 1, 1, 0, tzinfo=cet)) == encode_datetime(
        datetime(2024, 1, 1, 0, 0, tzinfo=UTC)
    )


@given(st.binary(max_size=40))
def test_any_datetime_bytes_decode_or_raise_protocol_error(raw: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_datetime(raw)


# Green Book style AARQ over the wrapper, as gurux builds it for client 16 -> server 1.
AARQ_FRAME = bytes.fromhex("000100100001001f601da109060760857405080101be10040e01000000065f1f0400401e5d0400")


def test_wrapper_known_frame() -> None:
    consumed, frame = wrapper.decode(AARQ_FRAME + b"\x00\x01")
    assert consumed == len(AARQ_FRAME)
    assert frame is not None
    assert (frame.source, frame.destination, len(frame.apdu)) == (16, 1, 0x1F)
    assert frame.apdu[0] == 0x60  # AARQ tag
    assert wrapper.encode(16, 1, frame.apdu) == AARQ_FRAME


def test_wrapper_incomplete_frames_consume_nothing() -> None:
    for cut in range(len(AARQ_FRAME)):
        assert wrapper.decode(AARQ_FRAME[:cut]) == (0, None)


def test_wrapper_bad_version_and_length() -> None:
    with pytest.raises(FramingError) as bad:
        wrapper.decode(b"\x00\x02" + AARQ_FRAME[2:])
    assert bad.value.offset == 0
    with pytest.raises(FramingError):
        wrapper.decode(AARQ_FRAME, max_apdu=16)


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(max_size=300))
def test_wrapper_round_trip(src: int, dst: int, apdu: bytes) -> None:
    raw = wrapper.encode(src, dst, apdu)
    consumed, frame = wrapper.decode(raw)
    assert consumed == len(raw)
    assert frame == wrapper.WrapperFrame(src, dst, apdu, raw)


@given(st.binary(max_size=200))
def test_wrapper_any_bytes_decode_or_raise_framing_error(buf: bytes) -> None:
    try:
        consumed, frame = wrapper.decode(buf)
    except FramingError:
        return
    assert (frame is None) == (consumed == 0)
    assert consumed <= len(buf)
