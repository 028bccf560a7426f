"""Austrian encrypted P1: M-Bus framed, general-glo-ciphered DLMS (security control 0x20 / 0x30).

Known answers:

* EVN / Netz NÖ: the example of "Smart Meter Kundenschnittstelle" (Netz NÖ document 218_9 /
  218_13, key 36C66639E48A8CA4D6BC8B282A793BBB): two M-Bus frames, SC 0x20, a Kaifa meter.
* TINETZ (Tirol): the example of the operator's customer interface description, as given in
  fneur/smart-meter-tirol ``doc/EXAMPLE.md`` (key 10 11 .. 1F): two M-Bus frames, SC 0x21.

The 0x30 and DSMR-text cases have no public sample we could find: they are sealed here with
our AES-GCM (ciphering.seal), which the read-side tests check against gurux elsewhere.
"""

from __future__ import annotations

from contextlib import suppress
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gxcore.errors import ChecksumError, DecryptionError, GxError, KeyMissingError
from gxcore.protocols.dlms import ciphering
from gxcore.protocols.dsmr import encode_telegram
from gxcore.protocols.dsmr.austria import AustrianP1, decrypt_austrian_p1, mbus_apdu
from gxcore.secrets import Secret

EVN_KEY = Secret(bytes.fromhex("36C66639E48A8CA4D6BC8B282A793BBB"))
EVN = bytes.fromhex(
    "68FAFA6853FF000167DB084B464D675000000981F8200000002388D5AB4F97515AAFC6B88D2F85DAA7A0E3C0C40D004535C3"
    "97C9D037AB7DBDA329107615444894A1A0DD7E85F02D496CECD3FF46AF5FB3C9229CFE8F3EE4606AB2E1F409F36AAD2E5090"
    "0A4396FC6C2E083F373233A69616950758BFC7D63A9E9B6E99E21B2CBC2B934772CA51FD4D69830711CAB1F8CFF25F0A3293"
    "37CBA51904F0CAED88D61968743C8454BA922EB00038182C22FE316D16F2A9F544D6F75D51A4E92A1C4EF8AB19A2B7FEAA32"
    "D0726C0ED80229AE6C0F7621A4209251ACE2B2BC66FF0327A653BB686C756BE033C7A281F1D2A7E1FA31C3983E15F8FD16CC"
    "5787E6F517166814146853FF110167419A3CFDA44BE438C96F0E38BF83D98316"
)
TIROL_KEY = Secret(bytes(range(0x10, 0x20)))
TIROL = bytes.fromhex(
    "68FAFA6853FF000167DB084B464D10100000238201092100295B9AEFC1546E644A2C9E32EDD42CBD0F1B945B194D0868"
    "85C4D8DF86DD52CB5B448854A6D548D5D270739B2A169D05B013F9015070089D3C5FA45CA05E92309A645CC83D7DA40F"
    "BC8F4CF9C225AFA69A25FF0B2AC9C2744550ABA53CE9143FD10B0AD85FD30BD6B6DFFEE65F8204DC9C5067CA73B62E29"
    "9A39D50AA730B2B9AE3836BC2F3490FB41BE5B6F930D84952976369DD7DABBB5A4354AECA1D2486CFF2EB0C6206380BA"
    "501D122AF75D716D3092C3960506A15E06FAB0EE5B7DFA3C2CDF0CAFD051B88E44B8B9FB8865F20CB89D1143CDC7EFEB"
    "07FB4C4898E764E9E3A32DDC3D1F0F166826266853FF110167B46961CE962B2C78050C96598C7E4D26658043F9CBCA78"
    "189BD01B139F8AE0F7391116"
)
AUTH_KEY = Secret(bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"))
TITLE = bytes.fromhex("4B464D6750000009")


def _mbus(apdu: bytes, size: int = 0xF5) -> bytes:
    """Cut ``apdu`` into M-Bus long frames the way the meters do (C 53, A FF, CI 00 then 1x, 01 67)."""
    parts = [apdu[i : i + size] for i in range(0, len(apdu), size)]
    out = b""
    for n, part in enumerate(parts):
        ci = (0x10 if n == len(parts) - 1 else 0x00) | n
        user = bytes([0x53, 0xFF, ci, 0x01, 0x67]) + part
        out += bytes([0x68, len(user), len(user), 0x68]) + user + bytes([sum(user) & 0xFF, 0x16])
    return out


def _sealed(plain: bytes, control: int, counter: int = 0x1234) -> bytes:
    body = ciphering.seal(control, TITLE, counter, EVN_KEY.reveal(), AUTH_KEY.reveal(), plain)
    content = bytes([control]) + counter.to_bytes(4, "big") + body
    return b"\xdb\x08" + TITLE + ciphering.encode_length(len(content)) + content


def _evn_plain() -> bytes:
    head = ciphering.parse_ciphered_apdu(mbus_apdu(EVN))
    return ciphering.unseal(0x20, TITLE, head.invocation_counter, EVN_KEY.reveal(), None, head.payload)


def test_the_evn_documentation_example_decodes_to_its_published_values() -> None:
    got = decrypt_austrian_p1(EVN, EVN_KEY)
    assert (got.system_title, got.security, got.invocation_counter) == (TITLE, "encrypted", 0x23)
    assert got.meter_id == "181220000009"  # the meter number, the last element of the list
    assert got.push is not None
    # 2021-09-27 09:47:15 local, deviation -120 (CEST)
    assert got.push.timestamp == datetime(2021, 9, 27, 7, 47, 15, tzinfo=UTC)
    values = {r.quantity: (r.value, r.unit) for r in got.push.readings}
    assert values == {
        "1-0:1.8.0": (12937, "Wh"),
        "1-0:2.8.0": (0, "Wh"),
        "1-0:1.7.0": (0, "W"),
        "1-0:2.7.0": (0, "W"),
        "1-0:32.7.0": (Decimal("233.7"), "V"),
        "1-0:52.7.0": (Decimal("0.0"), "V"),
        "1-0:72.7.0": (Decimal("0.0"), "V"),
        "1-0:31.7.0": (Decimal("0.00"), "A"),
        "1-0:51.7.0": (Decimal("0.00"), "A"),
        "1-0:71.7.0": (Decimal("0.00"), "A"),
        "1-0:13.7.0": (Decimal("1.000"), ""),  # power factor
    }


def test_the_tinetz_example_in_two_mbus_frames_decodes_like_its_bare_apdu() -> None:
    got = decrypt_austrian_p1(TIROL, TIROL_KEY)
    assert got.push is not None and got.push.meter_id == "1KFM0100000035"
    assert got.invocation_counter == 0x00295B9A
    values = {r.quantity: (r.value, r.unit) for r in got.push.readings}
    assert values["1-0:32.7.0"] == (Decimal("230.8"), "V") and values["1-0:1.8.0"] == (9108, "Wh")
    assert decrypt_austrian_p1(mbus_apdu(TIROL), TIROL_KEY).push == got.push


def test_authenticated_pushes_need_and_check_the_authentication_key() -> None:
    frame = _mbus(_sealed(_evn_plain(), 0x30))
    got = decrypt_austrian_p1(frame, EVN_KEY, auth_key=AUTH_KEY)
    assert got.security == "authenticated-encrypted" and got.invocation_counter == 0x1234
    assert got.push is not None and {r.quantity for r in got.push.readings} >= {"1-0:1.8.0", "1-0:32.7.0"}
    with pytest.raises(KeyMissingError):
        decrypt_austrian_p1(frame, EVN_KEY)
    with pytest.raises(KeyMissingError):
        decrypt_austrian_p1(frame, None, auth_key=AUTH_KEY)
    wrong = Secret(bytes(16))
    for key, auth in ((wrong, AUTH_KEY), (EVN_KEY, wrong)):
        with pytest.raises(DecryptionError) as caught:
            decrypt_austrian_p1(frame, key, auth_key=auth)
        text = str(caught.value)
        assert EVN_KEY.reveal().hex() not in text.lower() and AUTH_KEY.reveal().hex() not in text.lower()


def test_a_wrong_key_without_a_tag_is_a_decryption_error_and_a_bad_checksum_a_checksum_error() -> None:
    with pytest.raises(DecryptionError, match="wrong key"):
        decrypt_austrian_p1(EVN, Secret(bytes(16)))
    broken = bytearray(EVN)
    broken[20] ^= 0xFF
    with pytest.raises(ChecksumError):
        decrypt_austrian_p1(bytes(broken), EVN_KEY)


def test_a_dsmr_text_telegram_inside_the_cipher_is_decoded_as_dsmr() -> None:
    telegram = encode_telegram("KFM5KAIFA-METER", ["0-0:96.1.0(1KFM0100000035)", "1-0:1.8.0(000123.456*kWh)"])
    got = decrypt_austrian_p1(_mbus(_sealed(telegram, 0x30)), EVN_KEY, auth_key=AUTH_KEY)
    assert got.push is None and got.telegram is not None
    values = {r.quantity: r.value for r in got.telegram.records}
    assert values["1-0:1.8.0"] == Decimal("123.456")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([0x20, 0x30]))
def test_any_plaintext_or_frame_gives_a_push_or_a_gxcore_error(data: bytes, control: int) -> None:
    for frame in (_mbus(_sealed(data, control)), _mbus(_sealed(b"\x0f" + data, control)), data, _mbus(data)):
        with suppress(GxError):
            got = decrypt_austrian_p1(frame, EVN_KEY, auth_key=AUTH_KEY)
            assert isinstance(got, AustrianP1) and (got.push is None) != (got.telegram is None)
