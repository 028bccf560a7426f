"""The HDLC framer (IEC 62056-46) and DLMS over HDLC: in memory and over TCP."""

from __future__ import annotations

from contextlib import suppress
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gxami_meterlab.dlms.server import CosemMeterCore
from gxami_meterlab.simulators.dlms import (
    LOAD_PROFILE,
    PROFILES,
    REGISTERS,
    DlmsFleetSimulator,
    _MeterValues,
    expected_profile,
    expected_register,
)
from gxcore.drivers.dlms import DlmsSession
from gxcore.errors import AccessDeniedError, ChecksumError, GxError
from gxcore.protocols.dlms import CosemValue, DlmsParameters, ProfileRange
from gxcore.protocols.dlms.hdlc import address_value, decode, encode_address, fcs16
from gxcore.protocols.dlms.session import DlmsClientCore, Exchange

# The SNRM every DLMS document shows: client 0x21 (SAP 16) to server 0x03 (logical 1).
SNRM = bytes.fromhex("7EA00703219 30F017E".replace(" ", ""))
NOW = datetime(2024, 2, 29, 23, 52, 1, tzinfo=UTC)


def frame(dest: bytes, src: bytes, control: int, info: bytes = b"", segmented: bool = False) -> bytes:
    """Build a frame the way the standard says (test-side encoder)."""
    length = 2 + len(dest) + len(src) + 1 + (2 + len(info) if info else 0) + 2
    head = bytes([0xA0 | (0x08 if segmented else 0) | (length >> 8), length & 0xFF]) + dest + src + bytes([control])
    body = head + (fcs16(head).to_bytes(2, "little") + info if info else b"")
    return b"\x7e" + body + fcs16(body).to_bytes(2, "little") + b"\x7e"


def test_fcs_check_value_and_published_snrm() -> None:
    assert fcs16(b"123456789") == 0x906E
    consumed, snrm = decode(SNRM)
    assert consumed == len(SNRM) - 1  # the closing flag may open the next frame
    assert snrm is not None
    assert (snrm.destination, snrm.source, snrm.control, snrm.info) == (b"\x03", b"\x21", 0x93, b"")
    assert (snrm.destination_address, snrm.source_address) == (1, 16)
    assert frame(b"\x03", b"\x21", 0x93) == SNRM


def test_addresses() -> None:
    assert encode_address(16) == b"\x21"
    assert encode_address(1) == b"\x03"
    assert encode_address(0x91, 2) == b"\x02\x23"
    assert address_value(b"\x02\x23") == 0x91
    assert address_value(b"\x00\x02\x00\x23") == (1 << 14) | 0x11


def test_resync_drops_garbage_and_lone_flags() -> None:
    good = frame(b"\x03", b"\x21", 0x10, b"\xe6\xe6\x00\x60\x00")
    stream = b"\x00\xff\x7e\x7e" + good
    out = []
    while stream:
        consumed, f = decode(stream)
        if not consumed:
            break
        stream = stream[consumed:]
        if f is not None:
            out.append(f.info)
    assert out == [b"\xe6\xe6\x00\x60\x00"]
    assert stream == b"\x7e"


def test_shared_flag_between_frames() -> None:
    a = frame(b"\x03", b"\x21", 0x93)
    b = frame(b"\x21", b"\x03", 0x73)
    consumed, first = decode(a + b[1:])
    assert first is not None
    _, second = decode((a + b[1:])[consumed:])
    assert second is not None
    assert second.control == 0x73


def test_bad_checksums() -> None:
    broken = bytearray(frame(b"\x03", b"\x21", 0x10, b"\x01\x02\x03"))
    broken[-3] ^= 0xFF
    with pytest.raises(ChecksumError):
        decode(bytes(broken))
    bad_hcs = bytearray(frame(b"\x03", b"\x21", 0x10, b"\x01\x02\x03"))
    bad_hcs[6] ^= 0x01
    body = bytes(bad_hcs[1:-3])
    bad_hcs[-3:-1] = fcs16(body).to_bytes(2, "little")
    with pytest.raises(ChecksumError, match="HCS"):
        decode(bytes(bad_hcs))


@given(st.binary(max_size=200), st.booleans())
def test_round_trip(info: bytes, segmented: bool) -> None:
    raw = frame(b"\x02\x23", b"\x21", 0x32, info, segmented)
    consumed, f = decode(raw)
    assert f is not None
    assert consumed == len(raw) - 1
    assert (f.info, f.segmented, f.control) == (info, segmented, 0x32)


@given(st.binary(max_size=300))
def test_any_bytes_make_progress_or_raise_checksum_error(buf: bytes) -> None:
    try:
        consumed, f = decode(buf)
    except ChecksumError:
        return
    assert 0 <= consumed <= len(buf)
    if f is not None:
        assert consumed >= 8


async def test_read_over_hdlc_through_tcp() -> None:
    start = NOW - timedelta(days=2)
    async with DlmsFleetSimulator(2, seed=8, clock=lambda: NOW, interface="hdlc") as sim:
        url = f"tcp://127.0.0.1:{sim.meters[1].port}"
        async with DlmsSession(url, DlmsParameters(interface="hdlc"), timeout=2) as session:
            meter_time = await session.read_clock()
            registers = {
                CosemValue(r.obis).quantity: (await session.read_value(CosemValue(r.obis)))[0] for r in REGISTERS
            }
            profile = await session.read_profile(ProfileRange(LOAD_PROFILE, start, NOW))
    assert meter_time == NOW
    assert len(registers) == len(REGISTERS)
    assert registers == {q: expected_register(8, 1, q, NOW) for q in registers}
    rows: dict[datetime, dict[str, float]] = {}
    for r in profile:
        rows.setdefault(r.timestamp, {})[r.quantity] = r.value
    assert sorted(rows.items()) == expected_profile(8, 1, start, NOW)


async def test_hdlc_wrong_password_and_wrong_framing() -> None:
    async with DlmsFleetSimulator(
        1, clock=lambda: NOW, interface="hdlc", authentication="low", password="abcdefgh"
    ) as sim:
        url = f"tcp://127.0.0.1:{sim.meters[0].port}"
        with pytest.raises(AccessDeniedError):
            async with DlmsSession(
                url, DlmsParameters(interface="hdlc", authentication="low", password="x"), timeout=2
            ):
                pass
        # A wrapper client against an HDLC meter: garbage to the meter, which never answers.
        with pytest.raises(GxError):
            async with DlmsSession(url, DlmsParameters(), timeout=0.3):
                pass


def _hdlc_get() -> Exchange:
    core = DlmsClientCore(DlmsParameters(interface="hdlc"))
    core.associated = True
    exchange = core.get(3, "1.0.1.8.0.255", 2)
    exchange.data_to_send()
    return exchange


@given(st.binary(max_size=300))
def test_any_bytes_to_an_hdlc_exchange_raise_only_gxcore_errors(data: bytes) -> None:
    with suppress(GxError):
        _hdlc_get().receive_data(data, 0.0)


@given(st.integers(0, 255), st.binary(max_size=200), st.booleans())
def test_any_info_in_a_valid_hdlc_frame_raises_only_gxcore_errors(control: int, info: bytes, seg: bool) -> None:
    with suppress(GxError):
        _hdlc_get().receive_data(frame(b"\x21", b"\x03", control, info, seg), 0.0)


@given(st.binary(max_size=300))
def test_any_bytes_to_an_hdlc_meter_raise_only_gxcore_errors(data: bytes) -> None:
    peer = CosemMeterCore(_MeterValues(1, 0), REGISTERS, PROFILES, interface="hdlc")
    with suppress(GxError):
        peer.receive_data(data, NOW)
        peer.receive_data(frame(b"\x03", b"\x21", 0x93, data), NOW)


def test_hdlc_session_in_memory_from_snrm_to_disc() -> None:
    peer = CosemMeterCore(_MeterValues(2, 0), REGISTERS, PROFILES, interface="hdlc")
    core = DlmsClientCore(DlmsParameters(interface="hdlc", max_pdu=256))

    def run(exchange: Exchange | None) -> Exchange:
        assert exchange is not None
        while not exchange.done:
            exchange.receive_data(peer.receive_data(exchange.data_to_send(), NOW), 0.0)
        return exchange

    core.check_link(run(core.open_link()))
    core.check_association(run(core.associate()))
    assert run(core.get(3, "1.0.32.7.0.255", 3)).value() == [-1, 35]
    assert run(core.release()).reply.command == 0x63  # RLRE
    assert run(core.close_link()).reply.command == 0x73  # UA
    assert not core.link_open
