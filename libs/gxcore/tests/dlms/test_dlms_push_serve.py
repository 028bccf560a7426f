"""DlmsDriver.serve on a connection a meter opened: counters, refusals with the frame, alarms as events."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta

import pytest

from gxami_meterlab.dlms.notify import PushRegister, encode_push, push_body
from gxami_meterlab.simulators.dlms import (
    dedicated_key,
    expected_register,
    meter_id,
    meter_secrets,
    meter_security,
    meter_system_title,
    push_message,
)
from gxcore.drivers import MeterTarget
from gxcore.drivers.dlms.driver import DlmsDriver
from gxcore.drivers.dlms.pushes import PushRefusal, PushServed
from gxcore.media.memory import memory_pair
from gxcore.profiles import DeviceProfile, ProfileCatalog
from gxcore.secrets import Secret

SEED = 3
AT = datetime(2026, 11, 26, 3, 15, tzinfo=UTC)
PROFILE = ProfileCatalog().get("generic-dlms")
OPTIONS = {"authentication": "high-gmac", "client": "1", "security_policy": "authenticated-encrypted"}


RECEIVED = datetime(2026, 11, 26, 4, 0, 7, tzinfo=UTC)
CATALOG = ProfileCatalog()
# meter index -> profile: 0 ciphered generic, 1 plain generic (by serial), 2 HAN Kaifa, 3 HAN Kamstrup
PLAIN = {1: "generic-dlms", 2: "han-kaifa", 3: "han-kamstrup"}


def lookup(identity: str) -> tuple[MeterTarget, DeviceProfile] | None:
    if identity in (meter_system_title(SEED, 0).hex(), meter_id(SEED, 0)):
        secrets = {k: Secret(v) for k, v in meter_secrets(SEED, 0).items()}
        return MeterTarget("M0", "tcp://127.0.0.1:4059", options=OPTIONS, secrets=secrets), PROFILE
    for index, profile in PLAIN.items():
        if identity == meter_id(SEED, index):
            return MeterTarget(f"M{index}", "tcp://127.0.0.1:4059"), CATALOG.get(profile)
    return None


async def _serve(data: bytes, layout: str | None = None) -> tuple[list[PushServed], list[PushRefusal]]:
    meter, medium = memory_pair()
    await meter.send(data)
    await meter.close()  # the meter hangs up after pushing
    refusals: list[PushRefusal] = []
    driver = DlmsDriver(clock=lambda: RECEIVED)
    stream = driver.serve(
        medium,
        lookup,
        idle_timeout=0.2,
        on_refused=refusals.append,
        layout=CATALOG.get(layout) if layout else None,
    )
    served = [s async for s in stream]
    return served, refusals


def _values(served: PushServed) -> dict[str, float]:
    return {r.quantity: float(r.value) for r in served.result.readings}  # type: ignore[arg-type]


def _expected(index: int, at: datetime) -> dict[str, float]:
    """What the profile makes of meter ``index``'s registers: Wh -> kWh, W -> kW."""
    obis = {"1-0:1.8.0": "1.0.1.8.0.255", "1-0:2.8.0": "1.0.2.8.0.255", "1-0:1.7.0": "1.0.1.7.0.255"}
    out = {q: float(expected_register(SEED, index, o, at)) / 1000 for q, o in obis.items()}
    out["1-0:32.7.0"] = float(expected_register(SEED, index, "1.0.32.7.0.255", at))
    out["1-0:31.7.0"] = float(expected_register(SEED, index, "1.0.31.7.0.255", at))
    return out


def _close(got: dict[str, float], want: dict[str, float]) -> bool:
    return got.keys() == want.keys() and all(math.isclose(got[k], want[k], abs_tol=1e-9) for k in want)


def test_each_push_names_its_title_and_counter_and_refusals_carry_the_frame() -> None:
    good = push_message(SEED, 0, AT, policy="authenticated-encrypted", invocation_counter=41)
    stranger = push_message(SEED, 1, AT, policy="authenticated-encrypted", invocation_counter=2)
    served, refusals = asyncio.run(_serve(good + stranger))
    assert [(s.meter_id, s.system_title, s.invocation_counter) for s in served] == [
        ("M0", meter_system_title(SEED, 0).hex(), 41)
    ]
    assert [(r.kind, r.identity, r.frame) for r in refusals] == [
        ("unknown-meter", meter_system_title(SEED, 1).hex(), stranger)
    ]


def test_an_alarm_register_in_a_push_becomes_an_alarm_event_not_a_reading() -> None:
    body = push_body([PushRegister("0.0.97.98.0.255", 0x81, scaler=0, unit=255)], clock=AT)
    frame = encode_push(body, at=AT, security=meter_security(SEED, 0), invocation_counter=5)
    served, refusals = asyncio.run(_serve(frame))
    assert not refusals
    (one,) = served
    assert one.result.readings == []
    assert [(e.kind, e.code, e.severity, e.timestamp) for e in one.result.events] == [("alarm", 0x81, "alarm", AT)]


def test_hdlc_framed_and_general_ded_pushes_are_served_with_the_right_key() -> None:
    hdlc = push_message(SEED, 0, AT, policy="authenticated-encrypted", invocation_counter=8, interface="hdlc")
    later = AT + timedelta(minutes=15)
    ded = push_message(
        SEED, 0, later, policy="authenticated-encrypted", invocation_counter=9, dedicated_key=dedicated_key(SEED, 0)
    )
    assert hdlc[0] == 0x7E and ded[8] == 0xDC
    served, refusals = asyncio.run(_serve(hdlc + ded))
    assert not refusals
    assert [(s.meter_id, s.invocation_counter, s.result.meter_time) for s in served] == [
        ("M0", 8, AT),
        ("M0", 9, later),
    ]
    assert _close(_values(served[0]), _expected(0, AT))
    assert _close(_values(served[1]), _expected(0, later))


def test_a_general_ded_push_ciphered_with_the_global_key_is_refused_as_a_wrong_key() -> None:
    keys = meter_security(SEED, 0)
    forged = push_message(
        SEED, 0, AT, policy="authenticated-encrypted", invocation_counter=3, dedicated_key=keys.block_cipher_key
    )
    wrong = push_message(SEED + 1, 0, AT, policy="authenticated-encrypted")  # other keys, ...
    wrong = wrong[:10] + meter_system_title(SEED, 0) + wrong[18:]  # ... but meter 0's title
    served, refusals = asyncio.run(_serve(forged + wrong))
    assert served == []
    assert [r.kind for r in refusals] == ["wrong-key", "wrong-key"]
    shown = " ".join(r.reason for r in refusals)
    for secret in (keys.block_cipher_key, keys.authentication_key, dedicated_key(SEED, 0)):
        assert secret.reveal().hex() not in shown


def test_a_plain_push_is_named_by_its_serial_and_dated_by_its_receiver_when_it_carries_no_time() -> None:
    served, refusals = asyncio.run(_serve(push_message(SEED, 1, AT, stamped=False)))
    assert not refusals
    (one,) = served
    assert one.meter_id == "M1" and one.system_title is None and one.invocation_counter is None
    assert {r.ts for r in one.result.readings} == {RECEIVED}
    assert _close(_values(one), _expected(1, AT))  # the values of AT, stamped with the receive time


# The vendors' resolutions (their HAN documents): Kaifa W, Wh, mA, 0.1 V; Kamstrup 10 Wh, 0.01 A, 1 V.
RESOLUTION = {"kaifa": {"1-0:32.7.0": 0.1}, "kamstrup": {"1-0:1.8.0": 0.01, "1-0:2.8.0": 0.01, "1-0:32.7.0": 1.0}}


def _han_close(got: dict[str, float], want: dict[str, float], style: str) -> bool:
    steps = RESOLUTION[style]
    return all(math.isclose(got[k], v, abs_tol=steps.get(k, 1e-9) / 2 + 1e-9) for k, v in want.items())


@pytest.mark.parametrize(("index", "style"), [(2, "kaifa"), (3, "kamstrup")])
def test_han_port_lists_are_mapped_by_the_profile_push_objects_or_recognised_without_one(
    index: int, style: str
) -> None:
    frame = push_message(SEED, index, AT, han=style)  # type: ignore[arg-type]  # a HanStyle literal
    assert frame[0] == 0x7E and bytes.fromhex("e6e700") in frame[:12], "HDLC, LLC E6 E7 00"
    served, refusals = asyncio.run(_serve(frame, layout=f"han-{style}"))
    assert not refusals
    (one,) = served
    assert one.meter_id == f"M{index}" and one.result.meter_time == AT
    assert _han_close(_values(one), _expected(index, AT), style)
    # Without the listener naming a layout, and as a bare LLC PDU (the HDLC frame stripped, as
    # HAN-to-TCP bridges forward it): the list is recognised by its list id, names its meter.
    llc = frame[frame.index(b"\xe6\xe7\x00") : -3]
    for data in (frame, llc):
        served, refusals = asyncio.run(_serve(data))
        assert not refusals, refusals
        (one,) = served
        assert one.meter_id == f"M{index}" and one.identity == meter_id(SEED, index)
        assert _han_close(_values(one), _expected(index, AT), style)


def test_an_event_code_pushed_by_an_event_push_setup_becomes_an_event() -> None:
    body = push_body([PushRegister("0.0.96.11.0.255", 1, scaler=0, unit=255)], clock=AT)
    frame = encode_push(body, at=AT, security=meter_security(SEED, 0), invocation_counter=6)
    served, refusals = asyncio.run(_serve(frame))
    assert not refusals
    (one,) = served
    assert one.result.readings == []
    assert [(e.kind, e.code, e.source, e.timestamp) for e in one.result.events] == [
        ("power-down", 1, "0-0:96.11.0", AT)
    ]


def test_a_plain_push_naming_a_ciphered_meter_is_refused_as_unprotected() -> None:
    served, refusals = asyncio.run(_serve(push_message(SEED, 0, AT)))
    assert served == []
    assert [(r.kind, r.identity) for r in refusals] == [("unprotected", meter_id(SEED, 0))]
