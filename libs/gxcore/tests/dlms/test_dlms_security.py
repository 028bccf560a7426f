"""HLS-GMAC associations with every APDU ciphered (security suite 0): client core, meter core, TCP, driver."""

from __future__ import annotations

import dataclasses
import logging
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from gurux_dlms import GXDLMSChipperingStream
from hypothesis import given, settings
from hypothesis import strategies as st

from gxami_meterlab.dlms.meter_security import MeterCounters
from gxami_meterlab.dlms.server import CosemMeterCore
from gxami_meterlab.simulators.dlms import (
    LOAD_PROFILE,
    PROFILES,
    REGISTERS,
    DlmsFleetSimulator,
    Household,
    _MeterValues,
    client_security,
    expected_profile,
    expected_register,
    meter_security,
)
from gxcore.drivers import MeterTarget, ReadRequest
from gxcore.drivers.dlms import DlmsSession
from gxcore.drivers.dlms.counter_file import JsonInvocationCounters
from gxcore.drivers.dlms.driver import DlmsDriver
from gxcore.errors import AccessDeniedError, ConfigurationError, DecryptionError, GxError, KeyMissingError
from gxcore.profiles.model import BUILTIN_DIR, load_profile
from gxcore.protocols.dlms import CosemValue, DlmsParameters, ProfileRange, ciphering, wrapper
from gxcore.protocols.dlms.ciphering import parse_ciphered_apdu
from gxcore.protocols.dlms.invocation import MemoryInvocationCounters, counter_key
from gxcore.protocols.dlms.parameters import DlmsSecurity
from gxcore.protocols.dlms.session import DlmsClientCore, Exchange
from gxcore.secrets import Secret

SEED = 7
NOW = datetime(2024, 9, 14, 8, 30, 12, tzinfo=UTC)
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def meter(counters: MeterCounters | None = None, policy: str = "authenticated-encrypted") -> CosemMeterCore:
    return CosemMeterCore(
        _MeterValues(SEED, 3),
        REGISTERS,
        PROFILES,
        authentication="high-gmac",
        security=meter_security(SEED, 3, policy),  # type: ignore[arg-type]
        counters=counters,
    )


def params(security: DlmsSecurity | None = None, **kwargs: object) -> DlmsParameters:
    return DlmsParameters(
        client_address=1,
        authentication="high-gmac",
        security=security or client_security(SEED, 3),
        **kwargs,  # type: ignore[arg-type]
    )


async def read_energy(port: int, p: DlmsParameters, **session: Any) -> float:
    """One association over TCP, as the collector's read makes: the clock, then 1-0:1.8.0's value."""
    async with DlmsSession(f"tcp://127.0.0.1:{port}", p, **session) as s:
        await s.read_clock()
        return (await s.read_value(CosemValue("1.0.1.8.0.255")))[0]


def run(exchange: Exchange, peer: CosemMeterCore) -> Exchange:
    for _ in range(500):
        if exchange.done:
            return exchange
        exchange.receive_data(peer.receive_data(exchange.data_to_send(), NOW), 0.0)
    raise AssertionError("exchange did not complete")


def associated(
    peer: CosemMeterCore, p: DlmsParameters | None = None, store: MemoryInvocationCounters | None = None
) -> DlmsClientCore:
    core = DlmsClientCore(p or params(), counters=store or MemoryInvocationCounters(), meter_key="m")
    core.use_meter_counter(0)
    core.check_association(run(core.associate(), peer))
    assert core.authentication_pending and not core.associated
    core.check_authentication(run(core.authenticate(), peer))
    return core


def secrets_of(security: DlmsSecurity) -> list[str]:
    return [security.block_cipher_key.reveal().hex(), security.authentication_key.reveal().hex()]


def test_hls_gmac_association_reads_ciphered_values() -> None:
    peer = meter()
    core = associated(peer)
    assert core.associated
    value = run(core.get(3, "1.0.1.8.0.255", 2), peer).value()
    assert value == Household.of(SEED, 3).imported_wh(int((NOW - EPOCH).total_seconds()))
    # On the wire the GET is protected: no plain get-request tag, and a growing counter.
    exchange = core.get(3, "1.0.1.8.0.255", 3)
    frame = exchange.data_to_send()
    apdu = frame[8:]
    assert apdu[0] in (0xC8, 0xDB)
    assert parse_ciphered_apdu(apdu).security_control == 0x30
    exchange.receive_data(peer.receive_data(frame, NOW), 0.0)
    assert exchange.value() == [0, 30]


@pytest.mark.parametrize("policy", ["authenticated", "encrypted"])
def test_other_security_policies(policy: str) -> None:
    peer = meter(policy=policy)
    core = associated(peer, params(client_security(SEED, 3, policy)))  # type: ignore[arg-type]
    assert run(core.get(3, "1.0.1.8.0.255", 3), peer).value() == [0, 30]


def test_a_policy_below_the_meters_is_refused() -> None:
    peer = meter()
    core = DlmsClientCore(params(client_security(SEED, 3, "authenticated")), counters=MemoryInvocationCounters())
    with pytest.raises(AccessDeniedError):
        core.check_association(run(core.associate(), peer))


@pytest.mark.parametrize("which", ["block_cipher_key", "authentication_key"])
def test_wrong_key_is_refused_and_no_secret_shows(
    which: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    right = client_security(SEED, 3)
    other = Secret(bytes(range(16)))
    if which == "block_cipher_key":
        wrong = dataclasses.replace(right, block_cipher_key=other)
    else:
        wrong = dataclasses.replace(right, authentication_key=other)
    peer = meter()
    core = DlmsClientCore(params(wrong), counters=MemoryInvocationCounters())

    def associate() -> None:
        core.check_association(run(core.associate(), peer))
        core.check_authentication(run(core.authenticate(), peer))

    with pytest.raises(AccessDeniedError) as refused:
        associate()
    out, err = capsys.readouterr()
    shown = (out + err + caplog.text + str(refused.value) + repr(refused.value) + repr(wrong)).lower()
    for secret in secrets_of(right) + secrets_of(wrong):
        assert secret not in shown.replace(" ", "")
    assert out == err == ""
    assert not core.associated


def test_a_meter_answering_a_wrong_f_ctos_is_refused_silently(capsys: pytest.CaptureFixture[str]) -> None:
    """gurux prints "Invalid StoC: <received>-<expected>" (two GMAC tags); the client stays quiet."""
    peer = meter()
    core = DlmsClientCore(params(), counters=MemoryInvocationCounters())
    core.use_meter_counter(0)
    core.check_association(run(core.associate(), peer))
    exchange = core.authenticate()
    reply = peer.receive_data(exchange.data_to_send(), NOW)
    # Re-cipher the meter's answer with its f(CtoS) made under other keys: a meter we hold no keys for.
    own, other = meter_security(SEED, 3), meter_security(SEED, 4)
    ek, ak = own.block_cipher_key.reveal(), own.authentication_key.reveal()
    head = parse_ciphered_apdu(reply[8:])
    title = head.system_title or own.system_title
    plain = ciphering.unseal(head.security_control, title, head.invocation_counter, ek, ak, head.payload)
    forged = ciphering.hls_gmac(
        own.system_title, 99, other.block_cipher_key.reveal(), other.authentication_key.reveal(), b"x" * 16
    )
    plain = plain[: -len(forged)] + forged
    apdu = ciphering.protect_apdu(reply[8], head.security_control, title, head.invocation_counter, ek, ak, plain)
    exchange.receive_data(reply[:6] + len(apdu).to_bytes(2, "big") + apdu, 0.0)
    with pytest.raises(AccessDeniedError, match="does not check"):
        core.check_authentication(exchange)
    assert capsys.readouterr().out == ""


def test_an_altered_reply_is_a_decryption_error_without_secrets(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    peer = meter()
    core = associated(peer)
    exchange = core.get(3, "1.0.1.8.0.255", 2)
    reply = bytearray(peer.receive_data(exchange.data_to_send(), NOW))
    reply[-3] ^= 0x40
    with pytest.raises(DecryptionError) as failed:
        exchange.receive_data(bytes(reply), 0.0)
    out, err = capsys.readouterr()
    shown = (out + err + caplog.text + str(failed.value)).lower().replace(" ", "")
    for secret in [*secrets_of(client_security(SEED, 3)), bytes(reply[-12:]).hex()]:
        assert secret not in shown
    assert out == err == ""


def test_replayed_replies_and_requests_are_refused() -> None:
    peer = meter()
    core = associated(peer)
    first = core.get(3, "1.0.1.8.0.255", 3)
    request = first.data_to_send()
    reply = peer.receive_data(request, NOW)
    first.receive_data(reply, 0.0)
    second = core.get(3, "1.0.1.8.0.255", 3)
    second.data_to_send()
    with pytest.raises(DecryptionError, match="does not grow"):
        second.receive_data(reply, 0.0)  # the meter's old reply, sent again
    with pytest.raises(DecryptionError, match="replay"):
        peer.receive_data(request, NOW)  # our old request, sent again


def test_plain_requests_in_a_ciphered_association_are_refused() -> None:
    peer = meter()
    core = associated(peer)
    plain = DlmsClientCore(DlmsParameters(client_address=1))
    plain.associated = True
    with pytest.raises(GxError, match="plain request"):
        peer.receive_data(plain.get(3, "1.0.1.8.0.255", 2).data_to_send(), NOW)
    assert core.associated


def test_the_meter_never_reuses_its_own_counter() -> None:
    counters, store = MeterCounters(), MemoryInvocationCounters()
    seen: list[int] = []
    for _ in range(3):
        peer = meter(counters)
        core = associated(peer, store=store)
        for _ in range(2):
            exchange = core.get(3, "1.0.1.8.0.255", 3)
            reply = peer.receive_data(exchange.data_to_send(), NOW)
            seen.append(parse_ciphered_apdu(reply[8:]).invocation_counter)
            exchange.receive_data(reply, 0.0)
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    assert counters.highest_accepted() > 0


def test_public_client_reads_the_frame_counter_and_nothing_else() -> None:
    counters = MeterCounters()
    associated(meter(counters))
    peer = meter(counters)
    public = DlmsClientCore(DlmsParameters())
    public.check_association(run(public.associate(), peer))
    assert run(public.get(1, "0.0.43.1.0.255", 2), peer).value() == counters.highest_accepted() > 0
    with pytest.raises(AccessDeniedError):
        run(public.get(3, "1.0.1.8.0.255", 2), peer).value()
    lls = DlmsClientCore(DlmsParameters(client_address=1, authentication="low", password="pw"))
    with pytest.raises(AccessDeniedError):
        lls.check_association(run(lls.associate(), meter(counters)))


def test_the_meter_system_title_is_checked() -> None:
    expecting_other = dataclasses.replace(client_security(SEED, 3), peer_system_title=b"GXA_OTHR")
    core = DlmsClientCore(params(expecting_other), counters=MemoryInvocationCounters())
    with pytest.raises(GxError, match="system title 475841"):
        core.check_association(run(core.associate(), meter()))


def test_security_parameters_are_checked_and_hidden() -> None:
    security = client_security(SEED, 3)
    assert "key" not in repr(security).lower().replace("block_cipher_key", "").replace("authentication_key", "")
    assert all(s not in repr(security) for s in secrets_of(security))
    with pytest.raises(ConfigurationError):
        DlmsSecurity(b"short", Secret(bytes(16)), Secret(bytes(16)))
    with pytest.raises(ConfigurationError, match="value not shown"):
        DlmsSecurity(b"GXC00001", Secret(bytes(15)), Secret(bytes(16)))
    assert DlmsSecurity(b"GXC00001", "00" * 16, bytes(16)).block_cipher_key == Secret(bytes(16))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        DlmsParameters(authentication="high-gmac")


# -- over TCP, with the fleet simulator -----------------------------------------------------


@pytest.mark.parametrize("interface", ["wrapper", "hdlc"])
async def test_ciphered_read_over_tcp_equals_the_model(
    monkeypatch: pytest.MonkeyPatch, interface: str, tmp_path: Path
) -> None:
    """A two-day ciphered profile read; gurux's pure-Python GCM stream is never used."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("gurux's pure-Python AES-GCM was used")

    monkeypatch.setattr(GXDLMSChipperingStream, "__init__", refuse)
    start = NOW - timedelta(days=2)
    fleet = DlmsFleetSimulator(4, seed=SEED, clock=lambda: NOW, authentication="high-gmac", interface=interface)  # type: ignore[arg-type]
    async with fleet as sim:
        p = params(max_pdu=512, interface=interface)
        store = JsonInvocationCounters(tmp_path / "counters.json")
        url = f"tcp://127.0.0.1:{sim.meters[3].port}"
        async with DlmsSession(url, p, timeout=2, counters=store, meter_key="SIM-3") as session:
            meter_time = await session.read_clock()
            registers = {r.obis: (await session.read_value(CosemValue(r.obis)))[0] for r in REGISTERS}
            profile = await session.read_profile(ProfileRange(LOAD_PROFILE, start, NOW))
    assert sim.repeats == []
    assert meter_time == NOW
    assert registers == {r.obis: expected_register(SEED, 3, r.obis, NOW) for r in REGISTERS}
    rows: dict[datetime, dict[str, float]] = {}
    for r in profile:
        rows.setdefault(r.timestamp, {})[r.quantity] = r.value
    assert sorted(rows.items()) == expected_profile(SEED, 3, start, NOW)


async def test_counters_survive_sessions_and_a_lost_store_recovers(tmp_path: Path) -> None:
    store = JsonInvocationCounters(tmp_path / "counters.json")
    async with DlmsFleetSimulator(4, seed=SEED, clock=lambda: NOW, authentication="high-gmac") as sim:
        port, state = sim.meters[3].port, sim.states[3]
        for _ in range(2):
            await read_energy(port, params(), timeout=2, counters=store, meter_key="SIM-3")
        after_two = state.counters.highest_accepted()
        # A fresh (lost) store: the frame counter is read by the public client first.
        fresh = MemoryInvocationCounters()
        await read_energy(port, params(), timeout=2, counters=fresh, meter_key="SIM-3")
        assert state.counters.highest_accepted() > after_two
        # A stale store (restored from an old backup): refused once, recovered from the meter's counter.
        stale = MemoryInvocationCounters()
        key = counter_key("SIM-3", 1, client_security(SEED, 3))
        stale.advance(key, 3)
        energy = await read_energy(port, params(), timeout=2, counters=stale, meter_key="SIM-3")
        assert energy == expected_register(SEED, 3, "1.0.1.8.0.255", NOW)
        # Without the frame counter object to fall back on, a stale store fails loudly.
        stale2 = MemoryInvocationCounters()
        stale2.advance(key, 5)  # below the meter's counter, but never used (3 was, just above)
        with pytest.raises(AccessDeniedError):
            await read_energy(port, params(frame_counter_obis=None), timeout=2, counters=stale2, meter_key="SIM-3")
    assert sim.repeats == []


PROFILE = load_profile(Path(BUILTIN_DIR) / "generic-dlms.yaml")


async def test_driver_takes_keys_from_the_meter_secrets() -> None:
    hgmac = PROFILE.model_copy(
        update={"parameters": {**PROFILE.parameters, "authentication": "high-gmac", "client_address": 1}}
    )
    DlmsDriver().validate_profile(hgmac)
    security = client_security(SEED, 2)
    async with DlmsFleetSimulator(3, seed=SEED, clock=lambda: NOW, authentication="high-gmac") as sim:
        url = f"tcp://127.0.0.1:{sim.meters[2].port}"
        secrets = {
            "key": Secret(security.block_cipher_key.reveal().hex()),
            "auth_key": security.authentication_key,
        }
        options = {"server_system_title": sim_title(2)}
        driver = DlmsDriver(MemoryInvocationCounters())
        result = await driver.read(MeterTarget("SIM-2", url, options, secrets), hgmac, ReadRequest(), timeout=2)
        assert {r.quantity for r in result.readings} == {"1-0:1.8.0", "1-0:2.8.0"}
        with pytest.raises(KeyMissingError):
            await driver.read(
                MeterTarget("SIM-2", url, options, {"key": secrets["key"]}), hgmac, ReadRequest(), timeout=2
            )
        bad = {**secrets, "auth_key": Secret("not-a-key")}
        with pytest.raises(ConfigurationError, match="value not shown"):
            await driver.read(MeterTarget("SIM-2", url, options, bad), hgmac, ReadRequest(), timeout=2)
        wrong = {**secrets, "key": Secret(bytes(16))}
        with pytest.raises(AccessDeniedError) as denied:
            await driver.read(MeterTarget("SIM-2", url, options, wrong), hgmac, ReadRequest(), timeout=2)
        assert security.block_cipher_key.reveal().hex() not in str(denied.value)


def sim_title(index: int) -> str:
    return meter_security(SEED, index).system_title.hex()


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([b"\xc8", b"\xcb", b"\xdb\x08", b"\xc0", b"\x60"]), st.binary(max_size=120))
def test_any_request_to_a_secured_meter_raises_only_gxcore_errors(tag: bytes, body: bytes) -> None:
    """Hostile APDUs after an HLS-GMAC association: a gxcore error or an answer, and the meter lives on."""
    peer = meter()
    core = associated(peer)
    with suppress(GxError):
        peer.receive_data(wrapper.encode(1, 1, tag + body), NOW)
    fresh = meter()
    with suppress(GxError):
        fresh.receive_data(wrapper.encode(1, 1, tag + body), NOW)
    assert core.associated
