"""EN 13757-2 link layer: frame layouts, checksum, framer resync, request encoders."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gxcore.errors import ChecksumError, FramingError, GxError
from gxcore.protocols.mbus.frame import (
    Ack,
    ControlFrame,
    Frame,
    LongFrame,
    SecondaryAddress,
    ShortFrame,
    decode_frame,
    encode_frame,
    manufacturer_code,
    manufacturer_value,
    parse_frame,
    req_ud2,
    select_secondary,
    snd_nke,
)

# m-bus.com "documentation-wired/06-application-layer", example RSP_UD with variable data.
MBUS_COM_RSP_UD = bytes.fromhex(
    "681F1F680802727856341224400107550000000313153100DA023B13018B6004371802 1816".replace(" ", "")
)
# m-bus.com, same chapter: fixed data structure example (CI 0x73).
MBUS_COM_FIXED = bytes.fromhex("6813136808057378563412 0A00E97E010000003501 00003C16".replace(" ", ""))


def test_single_character_and_short_frames_have_the_standard_layout() -> None:
    assert encode_frame(Ack()) == b"\xe5"
    # SND_NKE to primary address 1: 10 40 01 CS=41 16
    assert snd_nke(1) == bytes.fromhex("1040014116")
    # REQ_UD2 to address 5, FCB clear (C=5B) and set (C=7B)
    assert req_ud2(5, fcb=False) == bytes.fromhex("105B056016")
    assert req_ud2(5, fcb=True) == bytes.fromhex("107B058016")


def test_select_secondary_encodes_id_lsb_first_and_wildcards() -> None:
    frame = select_secondary("12345678FFFFFFFF")
    # 68 0B 0B 68 | 53 FD 52 | 78 56 34 12 FF FF FF FF | CS 16
    body = bytes.fromhex("53FD5278563412FFFFFFFF")
    assert frame == bytes.fromhex("680B0B68") + body + bytes([sum(body) & 0xFF, 0x16])
    wildcard = select_secondary(SecondaryAddress.wildcard())
    assert wildcard[7:15] == b"\xff" * 8


def test_published_long_frames_decode_with_exact_length() -> None:
    for frame_bytes in (MBUS_COM_RSP_UD, MBUS_COM_FIXED):
        consumed, frame = decode_frame(frame_bytes)
        assert consumed == len(frame_bytes)
        assert isinstance(frame, LongFrame)
        assert frame.control == 0x08
        assert encode_frame(frame) == frame_bytes
    frame = parse_frame(MBUS_COM_RSP_UD)
    assert isinstance(frame, LongFrame)
    assert (frame.address, frame.ci, frame.data[:4]) == (0x02, 0x72, bytes.fromhex("78563412"))


def test_control_frame_round_trip() -> None:
    frame = ControlFrame(0x53, 0x01, 0x50)
    raw = encode_frame(frame)
    assert raw == bytes.fromhex("680303685301 50A416".replace(" ", ""))
    assert decode_frame(raw) == (9, frame)


def test_incomplete_input_asks_for_more() -> None:
    for cut in range(len(MBUS_COM_RSP_UD)):
        assert decode_frame(MBUS_COM_RSP_UD[:cut]) == (0, None)


def test_resync_drops_leading_garbage_in_one_step_then_finds_the_frame() -> None:
    garbage = bytes([0x00, 0x01, 0x55, 0xAA])
    consumed, frame = decode_frame(garbage + MBUS_COM_RSP_UD)
    assert (consumed, frame) == (4, None)
    consumed, frame = decode_frame(MBUS_COM_RSP_UD)
    assert isinstance(frame, LongFrame)


def test_resync_drops_only_the_start_byte_of_a_broken_frame() -> None:
    broken = bytearray(MBUS_COM_RSP_UD)
    broken[-2] ^= 0xFF  # bad checksum
    assert decode_frame(bytes(broken)) == (1, None)
    with pytest.raises(ChecksumError) as info:
        parse_frame(bytes(broken))
    assert info.value.offset == len(broken) - 2
    # A frame that starts inside rejected bytes is still found: 68 with mismatching L, then a frame.
    stream = bytes([0x68, 0x05, 0x06]) + snd_nke(7)
    found: list[Frame] = []
    buffer = stream
    while buffer:
        consumed, frame = decode_frame(buffer)
        assert consumed > 0
        buffer = buffer[consumed:]
        if frame is not None:
            found.append(frame)
    assert found == [ShortFrame(0x40, 7)]


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", FramingError),
        (b"\x42", FramingError),
        (bytes.fromhex("1040014216"), ChecksumError),
        (bytes.fromhex("6803046853015016"), FramingError),
        (MBUS_COM_RSP_UD[:-1], FramingError),
        (MBUS_COM_RSP_UD + b"\x00", FramingError),
    ],
)
def test_parse_frame_raises_typed_errors(data: bytes, error: type[GxError]) -> None:
    with pytest.raises(error):
        parse_frame(data)


def test_secondary_address_text_bytes_and_matching() -> None:
    address = SecondaryAddress.parse("12345678 2C2D 08 04")
    assert str(address) == "123456782C2D0804"
    assert address.manufacturer_code == "KAM"
    assert SecondaryAddress.from_bytes(address.to_bytes()) == address
    assert SecondaryAddress.parse("1234FFFFFFFFFFFF").matches(address)
    assert not SecondaryAddress.parse("1235FFFFFFFFFFFF").matches(address)
    assert not SecondaryAddress.parse("12345678FFFFFF07").matches(address)
    assert SecondaryAddress.wildcard().with_digit(0, 3).id_digits == "3FFFFFFF"
    assert address.first_wildcard() is None
    with pytest.raises(ValueError, match="16 hex"):
        SecondaryAddress.parse("1234")


def test_manufacturer_codes() -> None:
    # Kamstrup is 0x2C2D, Elster 0x1593 in FLAG's 5-bit letter code.
    assert manufacturer_code(0x2C2D) == "KAM"
    assert manufacturer_code(0x1593) == "ELS"
    assert manufacturer_value("ELS") == 0x1593


# -- properties -----------------------------------------------------------------------

frames = st.one_of(
    st.just(Ack()),
    st.builds(ShortFrame, st.integers(0, 255), st.integers(0, 255)),
    st.builds(ControlFrame, st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)),
    st.builds(
        LongFrame, st.integers(0, 255), st.integers(0, 255), st.integers(0, 255), st.binary(min_size=1, max_size=252)
    ),
)


@settings(max_examples=300, deadline=None)
@given(frames)
def test_encode_decode_round_trip(frame: Frame) -> None:
    raw = encode_frame(frame)
    assert decode_frame(raw) == (len(raw), frame)
    assert parse_frame(raw) == frame


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_framer_always_progresses_or_waits_and_never_raises(data: bytes) -> None:
    buffer = data
    for _ in range(len(data) + 1):
        consumed, _frame = decode_frame(buffer)
        assert 0 <= consumed <= len(buffer)
        if consumed == 0:
            break
        buffer = buffer[consumed:]
    else:
        pytest.fail("framer did not settle")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_parse_frame_raises_only_gxcore_errors(data: bytes) -> None:
    with contextlib.suppress(GxError):
        parse_frame(data)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=8), frames), min_size=1, max_size=6))
def test_framer_recovers_every_frame_after_garbage(parts: list[tuple[bytes, Frame]]) -> None:
    # Garbage without start bytes cannot be confused with a frame; each frame must come out.
    stream = b"".join(bytes(b for b in junk if b not in (0xE5, 0x10, 0x68)) + encode_frame(f) for junk, f in parts)
    found: list[Frame] = []
    while stream:
        consumed, frame = decode_frame(stream)
        assert consumed > 0
        stream = stream[consumed:]
        if frame is not None:
            found.append(frame)
    assert found == [frame for _junk, frame in parts]
