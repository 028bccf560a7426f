"""DataNotification (push) decoding: published example, simulator pushes, keys, hostile input."""

from __future__ import annotations

import logging
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from gurux_dlms import GXByteBuffer, GXDLMSClient, GXReplyData
from gurux_dlms.enums import DataType, InterfaceType
from gurux_dlms.internal._GXCommon import _GXCommon
from hypothesis import given, settings
from hypothesis import strategies as st

from gxami_meterlab.dlms.notify import PushRegister, encode_push, push_body
from gxami_meterlab.simulators.dlms import REGISTERS, expected_register, meter_id, meter_security, push_message
from gxcore.errors import DecryptionError, GxError, KeyMissingError
from gxcore.protocols.dlms import axdr
from gxcore.protocols.dlms.gurux import quiet
from gxcore.protocols.dlms.push import DlmsPush, PushColumn, decode_dlms_push
from gxcore.readings import Reading
from gxcore.secrets import Secret

# Published example of a Tiroler smart meter customer interface push (fneur/smart-meter-tirol,
# doc/EXAMPLE.md): general-glo-ciphering, encryption only (SC 0x21), key 10 11 .. 1F.
TIROL_KEY = Secret(bytes(range(0x10, 0x20)))
TIROL = bytes.fromhex(
    "DB084B464D10100000238201092100295B9AEFC1546E644A2C9E32EDD42CBD0F1B945B194D086885C4D8DF86DD52CB5B"
    "448854A6D548D5D270739B2A169D05B013F9015070089D3C5FA45CA05E92309A645CC83D7DA40FBC8F4CF9C225AFA69A"
    "25FF0B2AC9C2744550ABA53CE9143FD10B0AD85FD30BD6B6DFFEE65F8204DC9C5067CA73B62E299A39D50AA730B2B9AE"
    "3836BC2F3490FB41BE5B6F930D84952976369DD7DABBB5A4354AECA1D2486CFF2EB0C6206380BA501D122AF75D716D30"
    "92C3960506A15E06FAB0EE5B7DFA3C2CDF0CAFD051B88E44B8B9FB8865F20CB89D1143CDC7EFEB07FB4C4898E764E9E3"
    "A32DDC3D1FB46961CE962B2C78050C96598C7E4D26658043F9CBCA78189BD01B139F8AE0F739"
)
AT = datetime(2024, 3, 1, 10, 15, 0, tzinfo=UTC)


def test_published_tirol_push_decodes_exactly() -> None:
    push = decode_dlms_push(TIROL, key=TIROL_KEY)
    assert push.system_title == bytes.fromhex("4B464D1010000023")
    assert (push.security, push.invocation_counter, push.long_invoke_id) == ("encrypted", 0x00295B9A, 0x0029B2DC)
    assert push.meter_id == "1KFM0100000035"
    # 2021-07-19 15:46:35 local with deviation -120 (CEST): 13:46:35 UTC
    assert push.timestamp == datetime(2021, 7, 19, 13, 46, 35, tzinfo=UTC)
    got = {r.quantity: (r.value, r.unit) for r in push.readings}
    assert got == {
        "1-0:32.7.0": (Decimal("230.8"), "V"),
        "1-0:31.7.0": (0.0, "A"),
        "1-0:1.7.0": (0.0, "W"),
        "1-0:2.7.0": (0.0, "W"),
        "1-0:1.8.0": (9108.0, "Wh"),
        "1-0:2.8.0": (0.0, "Wh"),
        "1-0:3.8.0": (96.0, "varh"),
        "1-0:4.8.0": (9.0, "varh"),
    }
    assert all(r.timestamp == push.timestamp for r in push.readings)
    assert len(push.values) == 11  # 8 readings + the clock (a flat name/value pair), serial, logical device name


def test_a_plain_push_from_gurux_notify_decodes_like_gurux_reads_it() -> None:
    frame = push_message(4, 2, AT)
    push = decode_dlms_push(frame)
    assert push.security == "none" and push.system_title is None
    assert push.meter_id == meter_id(4, 2) and push.timestamp == AT
    client = GXDLMSClient(True, 102, 1, interfaceType=InterfaceType.WRAPPER)
    reply, notify = GXReplyData(), GXReplyData()
    with quiet():
        client.getData(GXByteBuffer(frame), reply, notify)
    assert _plain(notify.value) == push.body


def _plain(value: object) -> object:
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, bytearray):
        return bytes(value)
    return int(value) if type(value).__name__ == "GXEnum" else value


@pytest.mark.parametrize("policy", [None, "authenticated", "encrypted", "authenticated-encrypted"])
@pytest.mark.parametrize("interface", ["wrapper", "hdlc"])
def test_simulator_pushes_carry_the_model_values(policy: str | None, interface: str) -> None:
    frame = push_message(4, 2, AT, policy=policy, invocation_counter=9, interface=interface)  # type: ignore[arg-type]
    keys = meter_security(4, 2)
    push = decode_dlms_push(frame, key=keys.block_cipher_key, auth_key=keys.authentication_key)
    assert push.security == (policy or "none")
    if policy is not None:
        assert push.system_title == keys.system_title and push.invocation_counter == 9
    got = {r.quantity: r.value for r in push.readings}
    assert got == {r.obis and _q(r.obis): expected_register(4, 2, r.obis, AT) for r in REGISTERS}


def _q(obis: str) -> str:
    a, b, c, d, e, _f = obis.split(".")
    return f"{a}-{b}:{c}.{d}.{e}"


def test_general_ded_ciphering_with_a_dedicated_key() -> None:
    dedicated = Secret(bytes(range(0x40, 0x50)))
    frame = push_message(4, 2, AT, policy="authenticated-encrypted", dedicated_key=dedicated)
    assert frame[8] == 0xDC
    keys = meter_security(4, 2)
    push = decode_dlms_push(frame, key=dedicated, auth_key=keys.authentication_key)
    assert push.readings
    with pytest.raises(DecryptionError):
        decode_dlms_push(frame, key=keys.block_cipher_key, auth_key=keys.authentication_key)


def test_keys_missing_or_wrong_never_show(capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    keys = meter_security(4, 2)
    frame = push_message(4, 2, AT, policy="authenticated-encrypted")
    with pytest.raises(KeyMissingError):
        decode_dlms_push(frame)
    with pytest.raises(KeyMissingError, match="authentication key"):
        decode_dlms_push(frame, key=keys.block_cipher_key)
    wrong = Secret(bytes(16))
    messages = []
    for key, auth in ((wrong, keys.authentication_key), (keys.block_cipher_key, wrong)):
        with pytest.raises(DecryptionError) as failed:
            decode_dlms_push(frame, key=key, auth_key=auth)
        messages.append(str(failed.value) + repr(failed.value))
    tampered = bytearray(frame)
    tampered[-1] ^= 1
    with pytest.raises(DecryptionError) as failed:
        decode_dlms_push(bytes(tampered), key=keys.block_cipher_key, auth_key=keys.authentication_key)
    messages.append(str(failed.value))
    out, err = capsys.readouterr()
    shown = ("".join(messages) + out + err + caplog.text).replace(" ", "").lower()
    for secret in (keys.block_cipher_key, keys.authentication_key):
        assert secret.reveal().hex() not in shown
    assert frame[-12:].hex() not in shown and bytes(tampered[-12:]).hex() not in shown
    assert out == err == ""
    # Encryption only needs no authentication key (as the published example shows).
    assert decode_dlms_push(push_message(4, 2, AT, policy="encrypted"), key=keys.block_cipher_key).readings


def test_columns_name_a_bare_array_and_received_at_dates_it() -> None:
    body = push_body([PushRegister("1.0.1.8.0.255", 5)])
    raw = encode_push(bytes([0x02, 0x02, 0x06]) + (1234).to_bytes(4, "big") + b"\x12\x00\x07", at=None)
    push = decode_dlms_push(raw)
    assert push.timestamp is None and push.values == (1234, 7)  # no time anywhere: raw numbers
    at = AT + timedelta(minutes=1)
    push = decode_dlms_push(
        raw, columns=[PushColumn("1.0.1.8.0.255", 0, "Wh"), PushColumn("1.0.32.7.0.255", -1, "V")], received_at=at
    )
    assert push.values == (
        # no time in the push: the receive time, and the readings say so
        Reading("1-0:1.8.0", 1234.0, "Wh", at, extra={"source": "1.0.1.8.0.255", "time": "receive-time"}),
        Reading("1-0:32.7.0", Decimal("0.7"), "V", at, extra={"source": "1.0.32.7.0.255", "time": "receive-time"}),
    )
    assert push.time_source == "receive-time"
    assert decode_dlms_push(encode_push(body, at=AT)).readings[0].value == 5.0


def test_framing_problems_are_gxcore_errors() -> None:
    frame = push_message(4, 2, AT)
    for bad in (b"", frame[:-1], frame + b"\x00", b"\x0e" + frame[9:], frame[:8] + b"\x0f\x00"):
        with pytest.raises(GxError):
            decode_dlms_push(bad)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_decode_or_raise_a_gxcore_error(data: bytes) -> None:
    key = Secret(bytes(16))
    for attempt in (data, b"\x0f" + data, b"\xdb\x08" + data, b"\x00\x01\x00\x01\x00\x66" + data):
        with suppress(GxError):
            assert isinstance(decode_dlms_push(attempt, key=key, auth_key=key), DlmsPush)


# -- A-XDR against gurux's encoder ------------------------------------------------------------
SCALARS = st.one_of(
    st.none().map(lambda v: (DataType.NONE, v)),
    st.booleans().map(lambda v: (DataType.BOOLEAN, v)),
    st.integers(-(2**31), 2**31 - 1).map(lambda v: (DataType.INT32, v)),
    st.integers(0, 2**32 - 1).map(lambda v: (DataType.UINT32, v)),
    st.integers(-128, 127).map(lambda v: (DataType.INT8, v)),
    st.integers(0, 65535).map(lambda v: (DataType.UINT16, v)),
    st.integers(-(2**63), 2**63 - 1).map(lambda v: (DataType.INT64, v)),
    st.binary(max_size=300).map(lambda v: (DataType.OCTET_STRING, v)),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40).map(
        lambda v: (DataType.STRING, v)
    ),
)
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=5).map(lambda v: (DataType.STRUCTURE, v)), max_leaves=12
)


def _encode(out: GXByteBuffer, item: tuple[int, object]) -> None:
    kind, value = item
    if kind == DataType.STRUCTURE:
        assert isinstance(value, list)
        out.setUInt8(DataType.STRUCTURE)
        _GXCommon.setObjectCount(len(value), out)
        for v in value:
            _encode(out, v)
    else:
        _GXCommon.setData(None, out, kind, value)


def _expected(item: tuple[int, object]) -> object:
    kind, value = item
    if kind == DataType.STRUCTURE:
        assert isinstance(value, list)
        return [_expected(v) for v in value]
    return value


@settings(max_examples=300, deadline=None)
@given(VALUES)
def test_axdr_decodes_what_gurux_encodes(item: tuple[int, object]) -> None:
    out = GXByteBuffer()
    _encode(out, item)
    assert axdr.decode_all(bytes(out.array())) == _expected(item)


def test_axdr_refuses_deep_nesting_and_impossible_counts() -> None:
    with pytest.raises(GxError, match="deeper"):
        axdr.decode_all(b"\x02\x01" * 40 + b"\x00")
    with pytest.raises(GxError, match="cannot fit"):
        axdr.decode_all(b"\x01\x84\xff\xff\xff\xff\x00")
    with pytest.raises(GxError, match="runs past"):
        axdr.decode_all(b"\x09\x82\xff\xff\x00")
