"""Luxembourg Smarty encrypted P1 frames: a published captured frame, round trips, wrong keys, resync."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gxami_meterlab.simulators.dsmr import DsmrTcpServer, SimulatedP1Meter
from gxcore.errors import DecryptionError, FramingError, GxError, KeyMissingError
from gxcore.protocols.dsmr import SmartyReader, decrypt_smarty_frame, encrypt_smarty_frame, next_smarty_frame
from gxcore.secrets import Secret

# A real 647-byte Smarty frame and its published test key (NEXXTLAB go-smarty-reader test vector, as
# reused in yottabytesolutions/meterlogger internal/adapters/source/gridmeter tests, which expect
# 1-0:1.8.0 = 6.695 kWh, 1-0:2.8.0 = 0.025 kWh and 2018-01-30 10:21:22 CET).
NEXXTLAB_KEY = "D491470F47126332B07D1923B3504188"
NEXXTLAB_FRAME = bytes.fromhex(
    "db08534147677001bd5482027a300005a8e3806ee6e639274c7bc57095f872b0"
    "8dde621fb74ee81e5ebe342c93d8e73781fb2a1eb8710074a54fc57aa7d1d992"
    "36c42e2ec01a0324efc7f02e3ba2fa43196ca603838ab8322dffa83f7e83932e"
    "6007406b112b41745f38805646d53fea7a029fa79c36d9d777da8b5a03ed3ec6"
    "e485dec0c98d7d53c0bd175b228e01f466d9843777808503d630158c8236d868"
    "088eb13977bdfc474367e557136feb6d537f18304484a014b49099a63c18d430"
    "3a4c53853a0ca8c5b0e3e805bfd8425410fab522b35a8f258b57bb1e97e2489b"
    "6f37071753affbb4eebca502eea592b88085ae155bcea8f732d6b0115bb9ced7"
    "6be5b893b2a7efc8163c171e77c3d29a72b7478ed6dfe2c48bf3f9d8f895ca1c"
    "b42eaac4cb21d6eab51e77e4d6029d788427dd5bfc46bdd3e8a32dbb6f93b484"
    "2b073e9b6fe6e5dfc058b5f454aa3ef162bdf93cb1e0c452dbb2be4cb4c67d16"
    "9e2a30618fa2165441b6d3c22f1c3627e35fffcf9f1947d7a6ae942fc21e246f"
    "0efc456a7889c961c93ea089eef6d1a44056baaab352cbea7d7e206757af0d42"
    "7064b058d57235a78f8db91ce4d60a3c6babd99a61169b172f2414f565bde023"
    "9654eac77552fbcc2a2fa102d7cd003ddbeb9c1f811dbc695376336e2e9d6cfc"
    "73fcb4a29446bd7ce3170e5856766b25e82049ee5508ec1816685f1dcec23819"
    "1216dffba0647d32a1559d99640a15f24ab02172db3d564454e7a0346c099399"
    "b8770a9bdaa619c7c5230526d6b80499a0ee0cd4fc46a677af68ef4dee9e76b7"
    "8ac8a04f431db3986fcfd45ee1f10799af0b794a4103735d6dda3829173f80f1"
    "38a5301afdf1db8774f0c40e6e71264b334a943fc10552b0752f3a0d7fd80458"
    "595408f2850f17"
)
KEY = Secret.from_hex(NEXXTLAB_KEY)
AT = datetime(2024, 2, 1, 12, tzinfo=UTC)


def test_published_frame_decrypts_and_decodes() -> None:
    (telegram,) = SmartyReader(KEY).feed(NEXXTLAB_FRAME)
    assert telegram.variant == "smarty"
    assert telegram.timestamp == datetime(2018, 1, 30, 9, 21, 22, tzinfo=UTC)
    assert telegram.find("1-0:1.8.0")[0].value == Decimal("6.695")
    assert telegram.find("1-0:2.8.0")[0].value == Decimal("0.025")
    assert telegram.equipment_id == "SAG1030700114004"
    # Smarty writes some reactive values without a unit: parsed as unitless registers, not dropped.
    assert telegram.find("1-0:4.7.0")[0].value == Decimal("0.007")


def test_wrong_key_is_a_decryption_error_that_does_not_leak_the_key() -> None:
    wrong = Secret.from_hex("D491470F47126332B07D1923B3504100")
    errors: list[GxError] = []
    reader = SmartyReader(wrong, on_error=errors.append)
    assert reader.feed(NEXXTLAB_FRAME) == []
    (error,) = errors
    assert isinstance(error, DecryptionError)
    assert "D491470F" not in str(error).upper()
    assert "d491470f" not in repr(error).lower()
    assert reader.discarded_bytes == 0  # the whole frame went as one rejected frame


def test_missing_key() -> None:
    with pytest.raises(KeyMissingError):
        decrypt_smarty_frame(NEXXTLAB_FRAME, None)


def test_simulated_meter_frames_round_trip_through_the_reader() -> None:
    meter = SimulatedP1Meter(8, 2, variant="smarty")
    key = Secret(bytes(range(16)))
    frame = meter.smarty_frame_at(AT, key)
    assert frame[0] == 0xDB
    assert decrypt_smarty_frame(frame, key) == meter.telegram_at(AT)
    (telegram,) = SmartyReader(key).feed(frame)
    assert telegram.timestamp == AT


def test_noise_and_a_torn_frame_before_a_good_frame_fed_in_small_chunks() -> None:
    key = Secret(bytes(range(16)))
    good = SimulatedP1Meter(8, 2, variant="smarty").smarty_frame_at(AT, key)
    stream = b"\x00\xdb noise" + good[40:] + good
    reader = SmartyReader(key)
    got = [t for i in range(0, len(stream), 7) for t in reader.feed(stream[i : i + 7])]
    assert [t.timestamp for t in got] == [AT]
    assert reader.discarded_bytes >= len(good) - 40


def test_short_length_form_and_bad_security_byte() -> None:
    key = Secret(bytes(16))
    small = encrypt_smarty_frame(b"/X\r\n\r\n!", key, system_title=b"12345678", frame_counter=1)
    assert small[10] < 0x80
    assert decrypt_smarty_frame(small, key) == b"/X\r\n\r\n!"
    broken = bytearray(small)
    broken[11] = 0x10
    with pytest.raises(FramingError, match="security control"):
        decrypt_smarty_frame(bytes(broken), key)


@given(st.binary(max_size=300))
@settings(max_examples=200, deadline=None)
def test_any_bytes_never_escape_as_other_exceptions(data: bytes) -> None:
    reader = SmartyReader(KEY)
    reader.feed(data)
    reader.feed(data)
    consumed, _ = next_smarty_frame(data)
    assert 0 <= consumed <= len(data)


async def test_tcp_bridge_can_send_encrypted_frames() -> None:
    key = Secret(bytes(range(16)))
    async with DsmrTcpServer(
        SimulatedP1Meter(1, variant="smarty"), interval=60, clock=lambda: AT, smarty_key=key
    ) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            smarty = SmartyReader(key)
            telegrams = []
            while not telegrams:
                telegrams = smarty.feed(await asyncio.wait_for(reader.read(4096), 2))
        finally:
            writer.close()
            await writer.wait_closed()
    assert telegrams[0].timestamp == AT
