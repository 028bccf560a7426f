"""DlmsDriver with the generic-dlms profile against the simulated fleet."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from gxami_meterlab.simulators.dlms import DlmsFleetSimulator, expected_profile, expected_register
from gxcore.drivers import MeterTarget, ReadRequest
from gxcore.drivers.dlms.driver import DlmsDriver, dlms_point
from gxcore.errors import AccessDeniedError, ConfigurationError, MediaError, ProtocolError
from gxcore.profiles.model import BUILTIN_DIR, DeviceProfile, ProfilePoint, load_profile
from gxcore.secrets import Secret

NOW = datetime(2025, 1, 15, 13, 7, 30, tzinfo=UTC)
PROFILE = load_profile(Path(BUILTIN_DIR) / "generic-dlms.yaml")


def target(port: int, **options: str) -> MeterTarget:
    return MeterTarget("SIM00200001", f"tcp://127.0.0.1:{port}", options)


async def test_billing_and_instantaneous_points() -> None:
    request = ReadRequest(purposes=frozenset({"billing", "instantaneous"}))
    async with DlmsFleetSimulator(2, seed=2, clock=lambda: NOW) as sim:
        result = await DlmsDriver().read(target(sim.meters[1].port), PROFILE, request, timeout=2)
    assert result.meter_time == NOW
    got = {r.quantity: r for r in result.readings}
    assert set(got) == {"1-0:1.8.0", "1-0:2.8.0", "1-0:1.7.0", "1-0:32.7.0", "1-0:31.7.0"}
    assert got["1-0:1.8.0"].unit == "kWh"
    assert float(got["1-0:1.8.0"].value) == pytest.approx(expected_register(2, 1, "1-0:1.8.0", NOW) / 1000, abs=1e-9)
    assert got["1-0:32.7.0"].value == expected_register(2, 1, "1-0:32.7.0", NOW)
    assert got["1-0:1.7.0"].unit == "kW"


async def test_load_profile_points() -> None:
    start = NOW - timedelta(hours=6)
    request = ReadRequest(purposes=frozenset({"load-profile"}), profile_from=start)
    async with DlmsFleetSimulator(1, seed=2, clock=lambda: NOW) as sim:
        result = await DlmsDriver().read(target(sim.meters[0].port), PROFILE, request, timeout=2)
    expected = expected_profile(2, 0, start, NOW)
    assert len(result.readings) == 2 * len(expected) == 2 * 24
    first = {r.quantity: r.value for r in result.readings if r.timestamp == expected[0][0]}
    assert first == {q: Decimal(v) / 1000 for q, v in expected[0][1].items()}


async def test_low_authentication_uses_the_target_secret() -> None:
    low = PROFILE.model_copy(update={"parameters": {**PROFILE.parameters, "authentication": "low"}})
    async with DlmsFleetSimulator(1, clock=lambda: NOW, authentication="low", password="pw-123456") as sim:
        good = MeterTarget("m", f"tcp://127.0.0.1:{sim.meters[0].port}", {}, {"password": Secret("pw-123456")})
        bad = MeterTarget("m", good.url, {}, {"password": Secret("nope-nope")})
        result = await DlmsDriver().read(good, low, ReadRequest(), timeout=2)
        assert result.readings
        with pytest.raises(AccessDeniedError):
            await DlmsDriver().read(bad, low, ReadRequest(), timeout=2)
        with pytest.raises(ConfigurationError):
            await DlmsDriver().read(MeterTarget("m", good.url), low, ReadRequest(), timeout=2)


async def test_a_meter_unit_of_another_dimension_fails_loudly() -> None:
    wrong = PROFILE.model_copy(
        update={"points": [ProfilePoint(quantity="1-0:1.8.0", unit="m3", source="1.0.1.8.0.255")]}
    )
    async with DlmsFleetSimulator(1, clock=lambda: NOW) as sim:
        with pytest.raises(ProtocolError, match="does not convert"):
            await DlmsDriver().read(target(sim.meters[0].port), wrong, ReadRequest(), timeout=2)


def test_profile_validation() -> None:
    driver = DlmsDriver()
    driver.validate_profile(PROFILE)
    assert dlms_point(PROFILE.points[0]).value.class_id == 3
    assert dlms_point(ProfilePoint(quantity="0-0:96.1.0", unit="", source="1/0.0.96.1.0.255")).value.class_id == 1
    with pytest.raises(ConfigurationError):
        driver.validate_profile(PROFILE.model_copy(update={"protocol": "modbus"}))
    with pytest.raises(ConfigurationError):
        dlms_point(ProfilePoint(quantity="1-0:1.8.0", unit="kWh", source="7/1.0.1.8.0.255"))
    with pytest.raises(ConfigurationError):
        dlms_point(ProfilePoint(quantity="1-0:1.8.0", unit="kWh", source="1.0.1.8.0", options={"x": 1}))
    bad_params = DeviceProfile(name="x", protocol="dlms", parameters={"baud": 9600}, points=PROFILE.points)
    with pytest.raises(ConfigurationError):
        driver.validate_profile(bad_params)


async def test_unsupported_urls_are_refused_and_a_missing_serial_port_is_a_media_error() -> None:
    with pytest.raises(ConfigurationError):
        await DlmsDriver().read(MeterTarget("m", "listen://0.0.0.0:4059"), PROFILE, ReadRequest(), timeout=1)
    with pytest.raises(MediaError):
        await DlmsDriver().read(MeterTarget("m", "serial:///dev/gxami-no-such-port"), PROFILE, ReadRequest(), timeout=1)
