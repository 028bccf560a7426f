"""EN 13757-4 data link layer: CRC, frame formats A and B, CRC detection."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gxcore.errors import ChecksumError, FramingError, GxError
from gxcore.protocols.wmbus.frame import add_crcs, crc16, parse_link_header, strip_crcs

# wmbusmeters simulations/simulation_dll_crcs.txt: "These telegrams have their dll crc:s still inside."
SONTEX_WITH_CRC = bytes.fromhex(
    "3444EE4D813929271608811D7A51000000046D1912A62B036E0000005170426CE1F1436E00000002FF2C00000259D6D0D409"
    "0265FC0902FD66A00044C4"
)
APATOR_WITH_CRC = bytes.fromhex(
    "734414867CC30B0003030D58A00EDF0700DC41343CEA390306FF0A0D44EADF07000DDF07000DDF07000DDF07000E44F9DF07"
    "000EDF07000EDF07000EDF07000E931EDF07000DDF07000DDF07000DDF0700035A4500000000374F0B20000000000000243412"
    "B31C07050C12280000000000002C002302062F19080F2F000000000000DCF5"
)


def test_crc16_matches_published_block_crcs() -> None:
    assert crc16(SONTEX_WITH_CRC[:10]) == 0x811D
    assert crc16(SONTEX_WITH_CRC[12:28]) == 0x5170


@pytest.mark.parametrize("telegram", [SONTEX_WITH_CRC, APATOR_WITH_CRC])
def test_format_a_crcs_are_checked_and_removed(telegram: bytes) -> None:
    plain = strip_crcs(telegram)
    assert plain[0] + 1 == len(plain) == telegram[0] + 1
    assert strip_crcs(telegram, crc="present", frame_format="A") == plain
    assert add_crcs(plain, "A") == telegram
    header = parse_link_header(plain)
    assert header.manufacturer in {"SON", "APT"}  # Apator sends 0x8614: bit 15 set, letters APT


def test_format_b_round_trip_short_and_long() -> None:
    for size in (20, 126, 127, 200):
        body = bytes(range(1, 10)) + bytes((i * 7) & 0xFF for i in range(size - 10))
        plain = bytes([len(body)]) + body
        framed = add_crcs(plain, "B")
        assert framed[0] + 1 == len(framed)
        assert strip_crcs(framed, crc="present", frame_format="B") == plain
        assert strip_crcs(framed) == plain  # auto: format B CRCs hold, so they are removed


def test_corrupted_crc_is_a_checksum_error() -> None:
    broken = bytearray(SONTEX_WITH_CRC)
    broken[15] ^= 0x01
    with pytest.raises(ChecksumError):
        strip_crcs(bytes(broken))
    plain = strip_crcs(SONTEX_WITH_CRC)
    framed_b = bytearray(add_crcs(plain, "B"))
    framed_b[-1] ^= 0x01
    with pytest.raises(ChecksumError):
        strip_crcs(bytes(framed_b), crc="present", frame_format="B")
    # auto mode cannot tell a bad format B CRC from a CRC-free telegram of the same length
    assert strip_crcs(bytes(framed_b)) == bytes(framed_b)


def test_explicit_modes_reject_lengths_that_do_not_fit() -> None:
    plain = strip_crcs(SONTEX_WITH_CRC)
    with pytest.raises(FramingError):
        strip_crcs(SONTEX_WITH_CRC, crc="absent")
    with pytest.raises(FramingError):
        strip_crcs(plain, crc="present", frame_format="A")
    with pytest.raises(FramingError):
        strip_crcs(plain[:5])


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=10, max_size=254), st.sampled_from(["A", "B"]))
def test_add_then_strip_is_identity(body: bytes, frame_format: str) -> None:
    plain = bytes([len(body)]) + body
    if frame_format == "B" and len(plain) + 4 > 256:
        return
    framed = add_crcs(plain, frame_format)
    assert strip_crcs(framed, crc="present", frame_format=frame_format) == plain
    assert strip_crcs(framed) == plain or frame_format == "B"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(["auto", "present", "absent"]))
def test_strip_crcs_raises_only_gxcore_errors(data: bytes, crc: str) -> None:
    with contextlib.suppress(GxError):
        strip_crcs(data, crc=crc)
