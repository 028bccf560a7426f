"""Modbus profile conventions and the shipped meter profiles."""

from __future__ import annotations

from typing import Any

import pytest

from gxcore.drivers.modbus import ModbusDriver
from gxcore.errors import ConfigurationError
from gxcore.profiles import DeviceProfile, ProfilePoint
from gxcore.protocols.modbus.profile import (
    ModbusParameters,
    Table,
    ValueType,
    modbus_parameters,
    parse_source,
    register_point,
    register_points,
    validate_modbus_profile,
)


def profile(parameters: dict[str, Any] | None = None, **point: Any) -> DeviceProfile:
    spec = {"quantity": "1-0:1.8.0", "unit": "kWh", "source": "input:0", **point}
    return DeviceProfile(name="t", protocol="modbus", parameters=parameters or {}, points=[ProfilePoint(**spec)])


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("input:0x0048", (Table.INPUT, 0x48)),
        ("holding:342", (Table.HOLDING, 342)),
        ("HOLDING: 7", (Table.HOLDING, 7)),
        ("coil:0", (Table.COIL, 0)),
        ("discrete:3", (Table.DISCRETE, 3)),
        ("input:65535", (Table.INPUT, 0xFFFF)),
    ],
)
def test_sources(source: str, expected: tuple[Table, int]) -> None:
    assert parse_source(source) == expected


@pytest.mark.parametrize("source", ["input", "register:1", "input:x", "input:65536", "input:-1", ":3"])
def test_bad_sources(source: str) -> None:
    with pytest.raises(ConfigurationError, match="Modbus source"):
        parse_source(source)


def test_point_defaults_and_widths() -> None:
    rp = register_point(ProfilePoint(quantity="1-0:1.8.0", unit="kWh", source="input:4"))
    assert (rp.value_type, rp.count, rp.byte_order, rp.word_order, rp.end) == (ValueType.UINT16, 1, "big", "big", 5)
    text = register_point(
        ProfilePoint(quantity="1-0:0.2.0", unit="", source="holding:0x8908", options={"type": "string", "length": 8})
    )
    assert (text.count, text.end) == (8, 0x8910)


@pytest.mark.parametrize(
    ("source", "options", "message"),
    [
        ("input:0", {"type": "float16"}, "is not one of"),
        ("input:0", {"type": "string"}, "length"),
        ("input:0", {"type": "string", "length": 126}, "length"),
        ("input:0", {"type": "float32", "length": 2}, "strings only"),
        ("input:0", {"word_order": "middle"}, "word_order"),
        ("input:0", {"scale": 2}, "unknown Modbus option"),
        ("input:0", {"invalid": "none"}, "invalid"),
        ("input:0xFFFF", {"type": "float32"}, "past address"),
        ("coil:0", {"type": "uint16"}, "single bits"),
    ],
)
def test_bad_point_options(source: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        register_point(ProfilePoint(quantity="1-0:1.8.0", unit="kWh", source=source, options=options))


def test_parameters_defaults_and_values() -> None:
    assert modbus_parameters(profile()) == ModbusParameters()
    params = modbus_parameters(
        profile({"unit_id": 17, "max_registers_per_request": 80, "max_gap": 4, "timeout": 2, "retries": 0})
    )
    assert (params.unit_id, params.max_count(Table.INPUT), params.max_count(Table.COIL)) == (17, 80, 2000)
    assert (params.max_gap, params.timeout, params.retries) == (4, 2.0, 0)


@pytest.mark.parametrize(
    "parameters",
    [
        {"unit_id": 256},
        {"max_registers_per_request": 126},
        {"max_registers_per_request": True},
        {"timeout": 0},
        {"retries": -1},
        {"baudrate": 9600},  # belongs in the URL
        {"single_register_write": "yes"},
    ],
)
def test_bad_parameters(parameters: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        modbus_parameters(profile(parameters))


def test_profile_validation() -> None:
    with pytest.raises(ConfigurationError, match="not 'modbus'"):
        validate_modbus_profile(profile().model_copy(update={"protocol": "dlms"}))
    too_long = profile({"max_registers_per_request": 10}, options={"type": "string", "length": 20})
    with pytest.raises(ConfigurationError, match="max_registers_per_request"):
        ModbusDriver().validate_profile(too_long)


def test_sdm630_profile_matches_the_eastron_map(sdm630: DeviceProfile) -> None:
    ModbusDriver().validate_profile(sdm630)
    points = {rp.point.quantity: rp for rp in register_points(sdm630)}
    expected = {
        "1-0:32.7.0": 0x0000,
        "1-0:31.7.0": 0x0006,
        "1-0:16.7.0": 0x0034,
        "1-0:14.7.0": 0x0046,
        "1-0:1.8.0": 0x0048,
        "1-0:2.8.0": 0x004A,
        "1-0:15.8.0": 0x0156,
    }
    for quantity, address in expected.items():
        rp = points[quantity]
        assert (rp.table, rp.address, rp.value_type, rp.word_order) == (
            Table.INPUT,
            address,
            ValueType.FLOAT32,
            "big",
        )
    billing = {p.quantity for p in sdm630.points_for(frozenset({"billing"}))}
    assert billing == {"1-0:1.8.0", "1-0:2.8.0", "1-0:3.8.0", "1-0:4.8.0", "1-0:15.8.0"}
    assert points["1-0:16.7.0"].point.unit == "kW"
    assert points["1-0:16.7.0"].point.scale == 0.001  # the meter reports watts
    assert modbus_parameters(sdm630).max_registers_per_request == 80


def test_b23_profile_matches_the_abb_map(b23: DeviceProfile) -> None:
    ModbusDriver().validate_profile(b23)
    points = {rp.point.quantity: rp for rp in register_points(b23)}
    energy = points["1-0:1.8.0"]
    assert (energy.table, energy.address, energy.value_type, energy.point.scale) == (
        Table.HOLDING,
        0x5000,
        ValueType.UINT64,
        0.01,
    )
    assert energy.invalid == 0xFFFFFFFFFFFFFFFF
    assert (points["1-0:2.8.0"].address, points["1-0:32.7.0"].address, points["1-0:14.7.0"].address) == (
        0x5004,
        0x5B00,
        0x5B2C,
    )
    assert points["1-0:16.7.0"].value_type is ValueType.INT32
    assert points["1-0:0.2.0"].value_type is ValueType.STRING
