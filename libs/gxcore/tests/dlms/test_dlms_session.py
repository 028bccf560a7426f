"""The sans-IO client core against the sans-IO meter core, in memory (no sockets)."""

from __future__ import annotations

import io
import sys
import threading
from contextlib import redirect_stdout, suppress
from datetime import UTC, datetime, timedelta

import pytest
from gurux_dlms import GXByteBuffer, GXDLMSClient, GXReplyData
from gurux_dlms.enums import InterfaceType
from hypothesis import given
from hypothesis import strategies as st

from gxami_meterlab.dlms.server import CosemMeterCore
from gxami_meterlab.simulators.dlms import PROFILES, REGISTERS, Household, _MeterValues, expected_profile
from gxcore.errors import AccessDeniedError, GxError, ProtocolError
from gxcore.protocols.dlms import wrapper
from gxcore.protocols.dlms.cosem_time import decode_datetime
from gxcore.protocols.dlms.gurux import quiet
from gxcore.protocols.dlms.parameters import DlmsParameters
from gxcore.protocols.dlms.profile import CaptureObject, decode_rows, encode_range_selection, parse_capture_objects
from gxcore.protocols.dlms.session import DlmsClientCore, Exchange
from gxcore.secrets import Secret

NOW = datetime(2024, 6, 1, 12, 34, 56, 700_000, tzinfo=UTC)
FROZEN = NOW.replace(microsecond=0)
PASSWORD = "s3cret-pw"


def meter(authentication: str = "none", max_pdu: int = 1024) -> CosemMeterCore:
    return CosemMeterCore(
        _MeterValues(5, 2),
        REGISTERS,
        PROFILES,
        authentication=authentication,  # type: ignore[arg-type]
        password=Secret(PASSWORD),
        max_pdu=max_pdu,
    )


def run(exchange: Exchange, peer: CosemMeterCore, now: datetime = NOW) -> Exchange:
    """Null modem: shuttle bytes between the two cores until the exchange completes."""
    rounds = 0
    while not exchange.done:
        out = exchange.data_to_send()
        assert out, "client has nothing to send but is not complete"
        reply = peer.receive_data(out, now)
        assert reply, "meter did not answer"
        # Deliver in two pieces to exercise reassembly across reads.
        exchange.receive_data(reply[:5], 0.0)
        exchange.receive_data(reply[5:], 0.0)
        rounds += 1
        assert rounds < 500
    return exchange


def associated(params: DlmsParameters, peer: CosemMeterCore) -> DlmsClientCore:
    core = DlmsClientCore(params)
    core.check_association(run(core.associate(), peer))
    return core


def test_association_none_and_register_read() -> None:
    peer = meter()
    core = associated(DlmsParameters(), peer)
    assert core.associated
    assert peer.session_now == FROZEN
    assert run(core.get(3, "1.0.1.8.0.255", 3), peer).value() == [0, 30]
    raw = run(core.get(3, "1.0.1.8.0.255", 2), peer).value()
    assert raw == Household.of(5, 2).imported_wh(int((FROZEN - datetime(2000, 1, 1, tzinfo=UTC)).total_seconds()))


def test_clock_is_the_frozen_instant_even_later() -> None:
    peer = meter()
    core = associated(DlmsParameters(), peer)
    later = NOW + timedelta(minutes=5)
    raw = run(core.get(8, "0.0.1.0.0.255", 2), peer, now=later).value()
    assert isinstance(raw, bytearray)
    assert decode_datetime(raw) == FROZEN


def test_low_authentication_with_the_right_password() -> None:
    peer = meter("low")
    core = associated(DlmsParameters(authentication="low", password=PASSWORD), peer)
    assert core.associated


def test_wrong_password_is_access_denied_and_not_echoed() -> None:
    peer = meter("low")
    core = DlmsClientCore(DlmsParameters(authentication="low", password="wrong-pw"))
    exchange = run(core.associate(), peer)
    with pytest.raises(AccessDeniedError) as denied:
        core.check_association(exchange)
    assert "authentication-failure" in str(denied.value)
    assert "wrong-pw" not in str(denied.value)
    assert PASSWORD not in str(denied.value)
    assert not core.associated


def test_no_authentication_against_a_low_meter_is_access_denied() -> None:
    peer = meter("low")
    core = DlmsClientCore(DlmsParameters())
    with pytest.raises(AccessDeniedError):
        core.check_association(run(core.associate(), peer))


def test_unknown_object_is_a_data_access_error_not_a_broken_exchange() -> None:
    peer = meter()
    core = associated(DlmsParameters(), peer)
    exchange = run(core.get(3, "1.0.99.99.0.255", 2), peer)
    assert exchange.done
    assert exchange.access_result == 4
    with pytest.raises(ProtocolError, match="object-undefined"):
        exchange.value()


@pytest.mark.parametrize("max_pdu", [128, 1024])
def test_profile_by_range_over_many_blocks(max_pdu: int) -> None:
    peer = meter(max_pdu=max_pdu)
    core = associated(DlmsParameters(max_pdu=max_pdu), peer)
    columns = parse_capture_objects(run(core.get(7, "1.0.99.1.0.255", 3), peer).value())
    assert [c.obis for c in columns] == ["0.0.1.0.0.255", "1.0.1.8.0.255", "1.0.2.8.0.255"]
    start, end = FROZEN - timedelta(days=2), FROZEN
    selection = encode_range_selection(columns[0], start, end)
    buffer = run(core.get(7, "1.0.99.1.0.255", 2, selection), peer).value()
    rows = decode_rows(buffer, columns, None)
    expected = expected_profile(5, 2, start, end)
    assert len(rows) == 192
    assert [(at, {"1-0:1.8.0": float(r[1]), "1-0:2.8.0": float(r[2])}) for at, r in rows] == expected


def test_profile_rows_never_pass_the_frozen_now() -> None:
    peer = meter()
    core = associated(DlmsParameters(), peer)
    columns = parse_capture_objects(run(core.get(7, "1.0.99.1.0.255", 3), peer).value())
    selection = encode_range_selection(columns[0], FROZEN - timedelta(hours=1), FROZEN + timedelta(days=3))
    rows = decode_rows(run(core.get(7, "1.0.99.1.0.255", 2, selection), peer).value(), columns, None)
    assert [at.strftime("%H:%M") for at, _ in rows] == ["11:45", "12:00", "12:15", "12:30"]


def test_compact_rows_take_time_from_the_capture_period() -> None:
    columns = (CaptureObject(8, "0.0.1.0.0.255", 2), CaptureObject(3, "1.0.1.8.0.255", 2))
    first = bytearray(bytes.fromhex("07e8060106000000000000 00".replace(" ", "")) + b"\x00")[:12]
    rows = decode_rows([[first, 1], [bytearray(), 2], [None, 3]], columns, 900)
    assert [r[0].strftime("%H:%M") for r in rows] == ["00:00", "00:15", "00:30"]
    with pytest.raises(ProtocolError):
        decode_rows([[first, 1], [None, 2]], columns, None)


def test_release() -> None:
    peer = meter()
    core = associated(DlmsParameters(), peer)
    release = core.release()
    assert release is not None
    run(release, peer)
    assert not core.associated
    assert core.release() is None


def test_reply_from_another_wport_is_refused() -> None:
    peer = meter()
    core = associated(DlmsParameters(), peer)
    exchange = core.get(3, "1.0.1.8.0.255", 2)
    reply = peer.receive_data(exchange.data_to_send(), NOW)
    forged = reply[:2] + b"\x00\x07" + reply[4:]
    with pytest.raises(ProtocolError, match="reply from address"):
        exchange.receive_data(forged, 0.0)


def test_stale_reply_of_an_earlier_get_is_refused() -> None:
    peer = meter()
    core = associated(DlmsParameters(), peer)
    first = core.get(3, "1.0.1.8.0.255", 2)
    stale = peer.receive_data(first.data_to_send(), NOW)
    second = core.get(3, "1.0.2.8.0.255", 2)
    with pytest.raises(ProtocolError, match="invoke-id"):
        second.receive_data(stale, 0.0)


def test_gurux_prints_are_swallowed(capsys: pytest.CaptureFixture[str]) -> None:
    """gurux prints when a wrapper buffer holds more than its length says; quiet() must hide it."""
    client = GXDLMSClient(True, 16, 1, interfaceType=InterfaceType.WRAPPER)
    frame = bytes.fromhex("0001000100100007c401c1000600003039") + b"\x00\x00"
    loud = io.StringIO()
    with redirect_stdout(loud):
        client.getData(GXByteBuffer(frame), GXReplyData(), None)
    assert "Data length" in loud.getvalue()  # the trigger really prints
    with quiet():
        client.getData(GXByteBuffer(frame), GXReplyData(), None)
    assert capsys.readouterr().out == ""


def _fresh_get() -> Exchange:
    core = DlmsClientCore(DlmsParameters())
    core.associated = True
    exchange = core.get(3, "1.0.1.8.0.255", 2)
    exchange.data_to_send()
    return exchange


@given(st.binary(max_size=300))
def test_any_reply_bytes_raise_only_gxcore_errors(data: bytes) -> None:
    exchange = _fresh_get()
    try:
        exchange.receive_data(data, 0.0)
        exchange.receive_data(data, 0.0)
    except GxError:
        pass


@given(st.binary(min_size=1, max_size=300))
def test_any_apdu_in_a_valid_wrapper_raises_only_gxcore_errors(apdu: bytes) -> None:
    exchange = _fresh_get()
    with suppress(GxError):
        exchange.receive_data(wrapper.encode(1, 16, apdu), 0.0)


@given(st.binary(max_size=120))
def test_any_get_response_body_raises_only_gxcore_errors(body: bytes) -> None:
    """Bias toward the deep decoder: a GET-response header followed by random data."""
    exchange = _fresh_get()
    try:
        exchange.receive_data(wrapper.encode(1, 16, b"\xc4\x01\xc1\x00" + body), 0.0)
        if exchange.done:
            exchange.value()
    except GxError:
        pass


@given(st.binary(max_size=300))
def test_any_bytes_to_the_meter_core_raise_only_gxcore_errors(data: bytes) -> None:
    peer = meter()
    try:
        peer.receive_data(data, NOW)
        peer.receive_data(wrapper.encode(16, 1, data), NOW)
    except GxError:
        pass


@given(st.sampled_from([b"\xc0", b"\xc1", b"\xc3"]), st.binary(max_size=80))
def test_any_request_inside_an_association_raises_only_gxcore_errors(tag: bytes, body: bytes) -> None:
    peer = meter()
    core = associated(DlmsParameters(), peer)
    assert core.associated
    with suppress(GxError):
        peer.receive_data(wrapper.encode(16, 1, tag + body), NOW)
    # The meter still answers properly afterwards (a bad request never kills the core).
    assert run(core.get(3, "1.0.1.8.0.255", 3), peer).value() == [0, 30]


@pytest.mark.parametrize(
    ("request_body", "status"),
    [
        (bytes.fromhex("01c1 0008 0000010000ff 02 00 090c") + bytes(12), 12),  # month 0: not a date
        (bytes.fromhex("01c1 0003 0100010800ff 02 00 0600000001"), 3),  # a register is read-only
        (bytes.fromhex("01c1 0008 0000010000ff 03 00 10003c"), 3),  # only the time is writable
        (bytes.fromhex("01c1 0008 0000010001ff 02 00 090c") + bytes(12), 4),  # no such clock
        (bytes.fromhex("02c1 0008 0000010000ff 02 00 01 00000001 00"), 250),  # no block transfer
    ],
)
def test_set_request_results(request_body: bytes, status: int) -> None:
    assert meter().set_request(request_body) == (0xC1, status)


def test_quiet_restores_stdout_under_threads() -> None:
    """Overlapping quiet() from several threads must leave the real stdout in place."""
    original = sys.stdout

    def churn() -> None:
        for _ in range(2000):
            with quiet():
                print("swallowed")

    threads = [threading.Thread(target=churn) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sys.stdout is original
