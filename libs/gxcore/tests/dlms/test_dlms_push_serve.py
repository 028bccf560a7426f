"""DlmsDriver.serve on a connection a meter opened: counters, refusals with the frame, alarms as events."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from gxami_meterlab.dlms.notify import PushRegister, encode_push, push_body
from gxami_meterlab.simulators.dlms import meter_secrets, meter_security, meter_system_title, push_message
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


def lookup(identity: str) -> tuple[MeterTarget, DeviceProfile] | None:
    if identity != meter_system_title(SEED, 0).hex():
        return None
    secrets = {k: Secret(v) for k, v in meter_secrets(SEED, 0).items()}
    return MeterTarget("M0", "tcp://127.0.0.1:4059", options=OPTIONS, secrets=secrets), PROFILE


async def _serve(data: bytes) -> tuple[list[PushServed], list[PushRefusal]]:
    meter, medium = memory_pair()
    await meter.send(data)
    await meter.close()  # the meter hangs up after pushing
    refusals: list[PushRefusal] = []
    served = [s async for s in DlmsDriver().serve(medium, lookup, idle_timeout=0.2, on_refused=refusals.append)]
    return served, refusals


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
