"""Wireless M-Bus telegrams: published encrypted and plain telegrams with their published values."""

from __future__ import annotations

import contextlib
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gxcore.errors import ConfigurationError, DecryptionError, GxError, KeyMissingError, ProtocolError
from gxcore.protocols.mbus.records import MBusRecord
from gxcore.protocols.mbus.telegram import MBusTelegram
from gxcore.protocols.wmbus import decode_wmbus_telegram
from gxcore.protocols.wmbus.frame import add_crcs, crc16
from gxcore.protocols.wmbus.security import ctr_crypt, ell_counter_block


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


# OMS gas meter example, security mode 5 / profile A, as used in lvogt/wireless-mbus-parser
# test/applicationLayer.test.ts ("Encryption Mode 5 / Security profile A").
OMS_MODE5 = h("2E4493157856341233037A2A0020255923C95AAA26D1B2E7493B013EC4A6F6D3529B520EDFF0EA6DEFC99D6D69EBF3")
OMS_MODE5_KEY = h("0102030405060708090A0B0C0D0E0F11")
# Same meter, security mode 7 / profile B with ELL 8C and AFL CMAC (lvogt/wireless-mbus-parser, same file).
OMS_MODE7 = h(
    "434493157856341233038C2075900F002C25B30A000021924D4F2FB66E017A75002007109058475F4BC91DF878B80A1B0F98B629"
    "024AAC727942BFC549233C0140829B93"
)
OMS_MODE7_KEY = h("000102030405060708090A0B0C0D0E0F")
# ganehag/pyMeterBus tests/test_encrypted_wmbus.py: energy 0 Wh, 2020-04-21 10:16, 0.071 m³.
PYMETERBUS = h("2E44090755620900070C7A131020059E41561B485F193B3163B28AEA226622E71E86565012329876DCC07DE0DD855B")
PYMETERBUS_KEY = h("CB6ABFAA8D2247B59127D3B839CF34B4")
# lvogt/wireless-mbus-parser test/applicationLayer.test.ts "Long Header - Encrypted Mode 5" (AMB radio module).
AMB_LONG = h(
    "4644A205440000570C377244000057A2050C37A3003005D898C64FD0C9BD2634365084E4DF946736C71A2103E45A190CAA1A49"
    "B602E46C9F45FCEE79AFBE34F0C167FD857F659E"
)
AMB_KEY = h("CAFEBABE123456789ABCDEF0CAFEBABE")
# wmbusmeters simulations/simulation_t1.txt with keys from tests/test_t1_meters.sh:
VOTTEN = h(
    "76442104710007612507727100076121042507B5006005E2E95A3C2A1279A5415E6732679B43369FD5FDDDD783EEEBB48236D34E"
    "7C94AF0A18A5FDA5F7D64111EB42D4D891622139F2952F9D12A20088DFA4CF8123871123EE1F6C1DCEA414879DDB4E05E508F18"
    "26D7EFBA6964DF804C9261EA23BBF03"
)
VOTTEN_KEY = h("A004EB23329A477F1DD2D7820B56EB3D")
WATERSTARM = h(
    "3944FA122162092002067A3600202567C94D48D00DC47B11213E23383DB51968A705AAFA60C60E263D50CD259D7C9A03FD0C0800"
    "0002FD0B0011"
)
WATERSTARM_KEY = h("BEDB81B52C29B5C143388CBB0D15A051")
FHKV_IV = h(
    "4E4468507620541494087AAD004005089D86B62A329B3439873999738F82461ABDE3C7AC78692B363F3B41EB68607F9C9160F550"
    "769B065B6EA00A2E44346E29FF5DC5CB86283C69324AD33D137F6F"
)
FHKV_IV_KEY = h("FCF41938F63432975B52505F547FCEDF")
IPERL_PLAIN = h("1844AE4C4455223368077A55000000041389E20100023B0000")  # total_m3 123.529
# wmbusmeters simulations/simulation_dll_crcs.txt (CRCs still inside)
SONTEX_WITH_CRC = h(
    "3444EE4D813929271608811D7A51000000046D1912A62B036E0000005170426CE1F1436E00000002FF2C00000259D6D0D40902"
    "65FC0902FD66A00044C4"
)
# wmbusmeters simulations/simulation_t1.txt, MKRadio3: manufacturer specific CI 0xA2
MKRADIO3 = h("2F446850313233347462A2069F255900B029310000000306060906030609070606050509050505050407040605070500")

VECTORS = [
    (OMS_MODE5, OMS_MODE5_KEY),
    (OMS_MODE7, OMS_MODE7_KEY),
    (PYMETERBUS, PYMETERBUS_KEY),
    (AMB_LONG, AMB_KEY),
    (VOTTEN, VOTTEN_KEY),
    (WATERSTARM, WATERSTARM_KEY),
    (FHKV_IV, FHKV_IV_KEY),
    (IPERL_PLAIN, None),
    (SONTEX_WITH_CRC, None),
]


def find(telegram: MBusTelegram, description: str, storage: int = 0) -> MBusRecord:
    for record in telegram.records:
        if record.description == description and record.storage == storage:
            return record
    raise AssertionError(f"no {description!r} at storage {storage}")


def assert_oms_gas(t: MBusTelegram) -> None:
    assert (t.id, t.manufacturer, t.medium, t.version) == ("12345678", "ELS", "gas", 0x33)
    volume = find(t, "Volume")
    assert (float(volume.value), volume.unit, volume.quantity) == (pytest.approx(28504.27), "m³", "7-0:3.0.0")
    assert t.meter_time() == datetime(2008, 5, 31, 23, 50)


def test_oms_mode5_example() -> None:
    t = decode_wmbus_telegram(OMS_MODE5, OMS_MODE5_KEY)
    assert_oms_gas(t)
    assert (t.access_number, t.security_mode, t.signature) == (42, 5, 0x2520)


def test_oms_mode7_example_with_kdf_and_cmac() -> None:
    t = decode_wmbus_telegram(OMS_MODE7, OMS_MODE7_KEY)
    assert_oms_gas(t)
    assert (t.access_number, t.security_mode) == (0x75, 7)


def test_oms_mode7_mac_mismatch_is_a_decryption_error() -> None:
    tampered = bytearray(OMS_MODE7)
    tampered[0x14] ^= 0x10  # a MAC byte, as in wireless-mbus-parser's "MAC does not match" case
    with pytest.raises(DecryptionError, match="MAC"):
        decode_wmbus_telegram(bytes(tampered), OMS_MODE7_KEY)


def test_pymeterbus_encrypted_telegram() -> None:
    t = decode_wmbus_telegram(PYMETERBUS, PYMETERBUS_KEY)
    assert (t.id, t.security_mode) == ("00096255", 5)
    energy, moment, volume = t.records
    assert (energy.value, energy.unit) == (0, "Wh")
    assert moment.value == datetime(2020, 4, 21, 10, 16)
    assert (float(volume.value), volume.unit) == (pytest.approx(0.071), "m³")


def test_long_header_takes_the_meter_address_from_the_transport_layer() -> None:
    t = decode_wmbus_telegram(AMB_LONG, AMB_KEY)
    # wireless-mbus-parser: meterId 57000044, AMB, version 12, device 0x37, access number 163
    assert (t.id, t.manufacturer, t.version, t.medium_code, t.access_number) == ("57000044", "AMB", 12, 0x37, 163)
    assert t.medium == "radio converter (meter side)"
    assert find(t, "Customer").value == "AMBER wireless Testmodul! S Mode"


def test_wmbusmeters_aventies_long_header_mode5() -> None:
    t = decode_wmbus_telegram(VOTTEN, VOTTEN_KEY)
    assert (t.id, t.medium) == ("61070071", "water")
    assert float(find(t, "Volume").value) == pytest.approx(466.472)
    assert float(find(t, "Volume", storage=1).value) == pytest.approx(465.96)
    assert float(find(t, "Volume", storage=14).value) == pytest.approx(357.84)
    assert find(t, "Volume", storage=14).quantity == "8-0:1.0.0*14"


def test_wmbusmeters_waterstarm_partly_encrypted() -> None:
    t = decode_wmbus_telegram(WATERSTARM, WATERSTARM_KEY)
    assert t.id == "20096221"
    assert float(find(t, "Volume").value) == pytest.approx(0.106)
    assert find(t, "Volume").quantity == "9-0:1.0.0"  # warm water
    assert t.meter_time() == datetime(2020, 7, 30, 10, 40)
    backwards = find(t, "Volume, accumulation of negative contributions (backward)")
    assert (backwards.value, backwards.quantity) == (0, None)


def test_wmbusmeters_techem_hca_with_compact_profile() -> None:
    t = decode_wmbus_telegram(FHKV_IV, FHKV_IV_KEY)
    assert (t.id, t.medium) == ("14542076", "heat cost allocator")
    assert find(t, "Units for H.C.A.").value == 2
    assert find(t, "Units for H.C.A.", storage=1).value == 25
    assert find(t, "Time point (date)", storage=1).value.isoformat() == "2020-12-31"
    assert find(t, "Time point (date)", storage=8).value.isoformat() == "2019-10-31"
    profile = [r for r in t.records if "compact profile" in r.description]
    assert len(profile) == 1
    assert isinstance(profile[0].value, bytes)
    assert profile[0].quantity is None


def test_plain_telegrams_and_dll_crcs() -> None:
    t = decode_wmbus_telegram(IPERL_PLAIN)
    assert (t.id, t.manufacturer, t.security_mode) == ("33225544", "SEN", 0)
    assert float(find(t, "Volume").value) == pytest.approx(123.529)
    sontex = decode_wmbus_telegram(SONTEX_WITH_CRC, crc="present")
    assert (sontex.id, sontex.medium) == ("27293981", "heat cost allocator")
    assert sontex.meter_time() == datetime(2021, 11, 6, 18, 25)
    assert float(find(sontex, "Flow temperature").value) == pytest.approx(25.16)


@pytest.mark.parametrize(
    ("telegram", "key", "crc"), [*[(t, k, "auto") for t, k in VECTORS], (SONTEX_WITH_CRC, None, "present")]
)
def test_bytes_beyond_the_l_field_are_reported_and_every_record_kept(
    telegram: bytes, key: bytes | None, crc: str
) -> None:
    # Receivers append an RSSI byte or padding after the telegram; the L field says where it ends.
    whole = decode_wmbus_telegram(telegram, key, crc=crc)  # type: ignore[arg-type]
    extra = h("C5")  # e.g. an RSSI byte
    padded = decode_wmbus_telegram(telegram + extra, key, crc=crc)  # type: ignore[arg-type]
    assert padded.records == whole.records
    assert [(u.offset, u.data) for u in padded.unparsed] == [(len(telegram), extra)]
    with pytest.raises(GxError, match=r"L field|fits no frame format"):
        decode_wmbus_telegram(telegram + extra, key, crc=crc, strict=True)  # type: ignore[arg-type]


def test_a_record_cut_short_keeps_the_records_before_it() -> None:
    cut = bytearray(IPERL_PLAIN[:-2])  # 02 3B 0000: the flow record loses its data
    cut[0] = len(cut) - 1
    t = decode_wmbus_telegram(bytes(cut), crc="absent")
    assert float(find(t, "Volume").value) == pytest.approx(123.529)
    assert [u.data for u in t.unparsed] == [h("023B")]
    with pytest.raises(GxError, match="premature end"):
        decode_wmbus_telegram(bytes(cut), crc="absent", strict=True)


def test_manufacturer_specific_ci_keeps_the_raw_payload() -> None:
    t = decode_wmbus_telegram(MKRADIO3)
    assert (t.id, t.manufacturer, t.ci) == ("34333231", "TCH", 0xA2)
    assert t.records[0].value == MKRADIO3[11:]


def test_missing_key_and_wrong_key() -> None:
    with pytest.raises(KeyMissingError) as missing:
        decode_wmbus_telegram(OMS_MODE5)
    assert missing.value.meter_id == "12345678"
    assert not missing.value.remote
    wrong = bytes(range(16, 32))
    for telegram in (OMS_MODE5, OMS_MODE7, VOTTEN):
        with pytest.raises(DecryptionError) as info:
            decode_wmbus_telegram(telegram, wrong)
        assert not isinstance(info.value, KeyMissingError)
        text = str(info.value) + repr(info.value)
        assert wrong.hex() not in text.lower()
        assert wrong.hex().upper() not in text
    with pytest.raises(ConfigurationError):
        decode_wmbus_telegram(OMS_MODE5, b"short")


def test_unsupported_ci_fields() -> None:
    compact = h("1044A205440000570C3779C4D788B0A60B")
    with pytest.raises(ProtocolError, match="compact"):
        decode_wmbus_telegram(compact)
    with pytest.raises(ProtocolError, match="unsupported CI"):
        decode_wmbus_telegram(h("0B44A20544000057 0C37 5501"))


def ell_telegram(key: bytes, plain_apl: bytes) -> bytes:
    """Build a CI 0x8D telegram encrypted with AES-CTR (EN 13757-4 ELL), for the round trip."""
    dll = h("44 A205 44000057 0C 37")
    cc, acc, session = 0x20, 0x11, (1 << 29 | 0x1234).to_bytes(4, "little")
    body = crc16(plain_apl).to_bytes(2, "little") + plain_apl
    counter = ell_counter_block(dll[1:3], dll[3:9], cc, session)
    ciphered = ctr_crypt(key, counter, body)
    telegram = dll + bytes([0x8D, cc, acc]) + session + ciphered
    return bytes([len(telegram)]) + telegram


def test_ell_aes_ctr_round_trip() -> None:
    key = bytes(range(16))
    telegram = ell_telegram(key, h("78 0413 39300000"))
    t = decode_wmbus_telegram(telegram, key)
    assert float(find(t, "Volume").value) == pytest.approx(12.345)
    with pytest.raises(DecryptionError, match="payload CRC"):
        decode_wmbus_telegram(telegram, bytes(16))
    with pytest.raises(KeyMissingError):
        decode_wmbus_telegram(telegram)


def test_crc_framed_encrypted_telegram() -> None:
    t = decode_wmbus_telegram(add_crcs(OMS_MODE5, "A"), OMS_MODE5_KEY)
    assert_oms_gas(t)
    t = decode_wmbus_telegram(add_crcs(OMS_MODE5, "B"), OMS_MODE5_KEY, crc="present", frame_format="B")
    assert_oms_gas(t)


# -- properties -----------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.one_of(st.none(), st.just(OMS_MODE5_KEY)))
def test_any_bytes_decode_or_raise_a_gxcore_error(data: bytes, key: bytes | None) -> None:
    with contextlib.suppress(GxError):
        decode_wmbus_telegram(data, key)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(VECTORS), st.data())
def test_mutated_published_telegrams_decode_or_raise_a_gxcore_error(
    vector: tuple[bytes, bytes | None], data: st.DataObject
) -> None:
    telegram, key = vector
    mutated = bytearray(telegram)
    action = data.draw(st.sampled_from(["flip", "truncate", "extend", "fix-length"]))
    if action == "flip":
        index = data.draw(st.integers(0, len(mutated) - 1))
        mutated[index] ^= data.draw(st.integers(1, 255))
    elif action == "truncate":
        del mutated[data.draw(st.integers(0, len(mutated) - 1)) :]
    else:
        mutated += data.draw(st.binary(min_size=1, max_size=20))
        if action == "fix-length" and len(mutated) <= 256:
            mutated[0] = len(mutated) - 1  # a consistent L field pushes the junk into the layers above
    with contextlib.suppress(GxError):
        decode_wmbus_telegram(bytes(mutated), key)
