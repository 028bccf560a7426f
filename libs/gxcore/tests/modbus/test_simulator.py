"""The Modbus meter simulator: deterministic values, the wire format, device-like refusals."""

from __future__ import annotations

import asyncio
import itertools
import struct
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from gxami_meterlab.simulators.modbus import ModbusMeterSimulator, expected_value, ideal_value
from gxcore.errors import ConfigurationError
from gxcore.profiles import DeviceProfile, ProfilePoint
from gxcore.readings import shortest_real32


def point(profile: DeviceProfile, quantity: str) -> ProfilePoint:
    return next(p for p in profile.points if p.quantity == quantity)


def test_values_are_pure_functions_of_seed_index_point_and_instant(sdm630: DeviceProfile, at: datetime) -> None:
    energy = point(sdm630, "1-0:1.8.0")
    assert expected_value(1, 2, energy, at) == expected_value(1, 2, energy, at)
    assert expected_value(1, 2, energy, at) != expected_value(2, 2, energy, at)
    assert expected_value(1, 2, energy, at) != expected_value(1, 3, energy, at)
    volts = expected_value(1, 2, point(sdm630, "1-0:32.7.0"), at)
    hertz = expected_value(1, 2, point(sdm630, "1-0:14.7.0"), at)
    assert isinstance(volts, Decimal)
    assert isinstance(hertz, Decimal)
    assert 225 < volts < 235
    assert Decimal("49.9") < hertz < Decimal("50.1")
    # float32 registers: the expected value is the shortest decimal of what a float32 carries
    assert shortest_real32(struct.unpack(">f", struct.pack(">f", float(volts)))[0]) == volts


def test_energy_grows_along_a_daily_curve(sdm630: DeviceProfile) -> None:
    energy = point(sdm630, "1-0:1.8.0")
    midnight = datetime(2024, 5, 17, tzinfo=UTC)
    hourly = [ideal_value(0, 1, energy, midnight + timedelta(hours=h)) for h in range(25)]
    steps = [b - a for a, b in itertools.pairwise(hourly)]
    assert all(step > 0 for step in steps)
    assert steps[12] > 2 * steps[3]  # midday draws far more than the small hours
    power = point(sdm630, "1-0:16.7.0")  # in kW with scale 0.001 on watts: same curve
    assert ideal_value(0, 1, power, midnight + timedelta(hours=16)) > ideal_value(
        0, 1, power, midnight + timedelta(hours=4)
    )


def test_overlapping_points_cannot_be_simulated() -> None:
    profile = DeviceProfile(
        name="overlap",
        protocol="modbus",
        points=[
            ProfilePoint(quantity="1-0:1.8.0", unit="kWh", source="input:0", options={"type": "uint32"}),
            ProfilePoint(quantity="1-0:2.8.0", unit="kWh", source="input:1"),
        ],
    )
    with pytest.raises(ConfigurationError, match="overlaps"):
        ModbusMeterSimulator(profile)


async def _exchange(port: int, request: bytes, timeout: float = 1.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        header = await asyncio.wait_for(reader.readexactly(7), timeout)
        body = await asyncio.wait_for(reader.readexactly(int.from_bytes(header[4:6], "big") - 1), timeout)
        return header + body
    finally:
        writer.close()
        await writer.wait_closed()


async def test_wire_format_of_a_float32_input_register_read(sdm630: DeviceProfile, at: datetime) -> None:
    sim = ModbusMeterSimulator(sdm630, meters=2, seed=4, clock=lambda: at)
    await sim.start()
    port = sim.ports[0]
    try:
        # MBAP: tid 0x0102, protocol 0, length 6, unit 2 | PDU: 04, address 0x0048, count 2
        reply = await _exchange(sim.ports[0], bytes.fromhex("0102 0000 0006 02 04 0048 0002"))
        value = sim.expected(2, point(sdm630, "1-0:1.8.0"), at)
        assert isinstance(value, Decimal)
        assert reply == bytes.fromhex("0102 0000 0007 02 04 04") + struct.pack(">f", float(value))
        # Refusals a device gives: unknown function, a count beyond 80, an address outside the map
        assert (await _exchange(sim.ports[0], bytes.fromhex("0001 0000 0002 01 2B")))[7:] == b"\xab\x01"
        assert (await _exchange(sim.ports[0], bytes.fromhex("0002 0000 0006 01 04 0000 0051")))[7:] == b"\x84\x03"
        assert (await _exchange(sim.ports[0], bytes.fromhex("0003 0000 0006 01 03 1000 0002")))[7:] == b"\x83\x02"
        assert [(r.device_id, r.function) for r in sim.requests] == [(2, 4), (1, 0x2B), (1, 4), (1, 3)]
    finally:
        await sim.stop()
    with pytest.raises(OSError):  # stopped means stopped listening
        await asyncio.open_connection("127.0.0.1", port)


async def test_unknown_device_ids_get_no_answer(sdm630: DeviceProfile) -> None:
    sim = ModbusMeterSimulator(sdm630, meters=1)
    await sim.start()
    try:
        with pytest.raises(TimeoutError):
            await _exchange(sim.ports[0], bytes.fromhex("0001 0000 0006 05 04 0048 0002"), timeout=0.2)
    finally:
        await sim.stop()
