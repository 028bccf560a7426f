"""Exact values from a DLMS meter: integers stay integers, scaled registers are exact decimals,
octet-strings such as the logical device name are text (README, "Values")."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from gurux_dlms import GXBitString, GXEnum

from gxami_meterlab.simulators.dlms import DlmsFleetSimulator, expected_register, meter_id
from gxcore.drivers import MeterTarget, ReadRequest
from gxcore.drivers.dlms.driver import DlmsDriver
from gxcore.errors import ProtocolError
from gxcore.profiles.model import BUILTIN_DIR, ProfilePoint, load_profile
from gxcore.protocols.dlms.cosem_reads import cosem_value, printable_text
from gxcore.readings import BitString
from gxcore.units import point_value

NOW = datetime(2025, 1, 15, 13, 7, 30, tzinfo=UTC)
PROFILE = load_profile(Path(BUILTIN_DIR) / "generic-dlms.yaml")
DEVICE_NAME = ProfilePoint(quantity="0-0:42.0.0", unit="", source="1/0.0.42.0.0.255", purpose=["billing"])


async def test_logical_device_name_is_text_and_registers_keep_their_type() -> None:
    profile = PROFILE.model_copy(update={"points": [*PROFILE.points, DEVICE_NAME]})
    request = ReadRequest(purposes=frozenset({"billing", "instantaneous"}))
    async with DlmsFleetSimulator(2, seed=2, clock=lambda: NOW) as sim:
        target = MeterTarget("SIM00200001", f"tcp://127.0.0.1:{sim.meters[1].port}")
        result = await DlmsDriver().read(target, profile, request, timeout=2)
    got = {r.quantity: r.value for r in result.readings}
    assert got["0-0:42.0.0"] == meter_id(2, 1)  # an octet-string, read as text
    assert isinstance(got["0-0:42.0.0"], str)
    # Wh (scaler 0) -> kWh: an exact decimal with three places, not a float
    energy = got["1-0:1.8.0"]
    assert isinstance(energy, Decimal)
    assert energy == Decimal(expected_register(2, 1, "1-0:1.8.0", NOW)) / 1000
    assert energy.as_tuple().exponent == -3
    # voltage (scaler -1, V -> V): a decimal with the meter's one place
    volts = got["1-0:32.7.0"]
    assert isinstance(volts, Decimal) and volts.as_tuple().exponent == -1


def test_scaled_register_has_no_binary_float_noise() -> None:
    value = cosem_value(38296251, -3, "1.0.1.8.0.255")
    assert value == Decimal("38296.251") and str(value) == "38296.251"
    point = ProfilePoint(quantity="1-0:1.8.0", unit="kWh", source="3/1.0.1.8.0.255")
    assert point_value(point, value, "kWh") == Decimal("38296.251")
    assert str(point_value(point, 38296251, "Wh")) == "38296.251"
    assert point_value(point, 42, "kWh") == 42 and type(point_value(point, 42, "kWh")) is int


def test_cosem_values_of_every_kind() -> None:
    assert cosem_value(True, 0, "x") is True
    assert cosem_value(b"SIM00200001", 0, "x") == "SIM00200001"
    assert cosem_value(bytearray(b"\x00\x01\xff"), 0, "x") == b"\x00\x01\xff"
    assert cosem_value("visible", 0, "x") == "visible"
    assert cosem_value(GXBitString("0101"), 0, "x") == BitString("0101")
    assert cosem_value(GXEnum(3), 0, "x") == 3
    with pytest.raises(ProtocolError, match="not a number, text or bit-string"):
        cosem_value([1, 2], 0, "0.0.1.0.0.255")
    assert printable_text(b"\xc3\xa9t\xc3\xa9") == "été"
    assert printable_text(b"a\nb") == b"a\nb"  # control characters: not text


def test_text_cannot_be_scaled() -> None:
    scaled = ProfilePoint(quantity="0-0:42.0.0", unit="", source="1/0.0.42.0.0.255", scale=2.0)
    with pytest.raises(ProtocolError, match="cannot be scaled"):
        point_value(scaled, "SIM", None)
    assert point_value(DEVICE_NAME, b"\x01", None) == b"\x01"
    with pytest.raises(ProtocolError):
        BitString("012")


TEXT_POINTS = [
    DEVICE_NAME,
    ProfilePoint(quantity="0-0:96.1.0", unit="", source="1/0.0.96.1.0.255", purpose=["billing"]),
    ProfilePoint(quantity="1-0:0.2.0", unit="", source="1/1.0.0.2.0.255", purpose=["billing"]),
]


async def test_text_registers_and_a_missing_object_come_back_as_readings_and_one_problem() -> None:
    """Logical device name, serial number, firmware id as text; an object the meter lacks is a problem."""
    from gxami_meterlab.dlms.image_transfer import DEFAULT_FIRMWARE
    from gxami_meterlab.simulators.dlms import serial_number

    missing = ProfilePoint(quantity="1-0:99.7.0", unit="", source="1/1.0.99.7.0.255", purpose=["billing"])
    profile = PROFILE.model_copy(update={"points": [*PROFILE.points, *TEXT_POINTS, missing]})
    async with DlmsFleetSimulator(2, seed=2, clock=lambda: NOW) as sim:
        target = MeterTarget("SIM00200001", f"tcp://127.0.0.1:{sim.meters[1].port}")
        result = await DlmsDriver().read(target, profile, ReadRequest(), timeout=2)
        empty = await DlmsDriver().read(target, profile, ReadRequest(purposes=frozenset({"nothing"})), timeout=2)
    got = {r.quantity: r.value for r in result.readings}
    assert got["0-0:42.0.0"] == meter_id(2, 1)
    assert got.get("0-0:96.1.0") == serial_number(2, 1), result.problems
    assert isinstance(got["0-0:96.1.0"], str)
    assert got["1-0:0.2.0"] == DEFAULT_FIRMWARE.decode()
    assert got["1-0:1.8.0"] == Decimal(expected_register(2, 1, "1-0:1.8.0", NOW)) / 1000
    assert "1-0:99.7.0" not in got
    assert [(p.quantity, p.source) for p in result.problems] == [("1-0:99.7.0", "1/1.0.99.7.0.255")]
    assert "object-undefined" in result.problems[0].reason or "1.0.99.7.0.255" in result.problems[0].reason
    assert empty.readings == [] and empty.meter_time == NOW
    assert [p.reason for p in empty.problems] == [f"profile {PROFILE.name} has no point for purpose nothing"]
