"""ModbusDriver against the simulator over real localhost TCP (and RTU on a pty)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import pytest
import pytest_asyncio

from gxami_meterlab.simulators.modbus import ModbusMeterSimulator
from gxcore.drivers import Driver, MeterTarget, ReadRequest
from gxcore.drivers import modbus_link as link
from gxcore.drivers.api import DriverCommand
from gxcore.drivers.modbus import ModbusDriver
from gxcore.errors import ConfigurationError, MeterTimeoutError, ProtocolError
from gxcore.profiles import DeviceProfile, ProfilePoint
from gxcore.protocols.modbus.planner import plan_reads
from gxcore.protocols.modbus.profile import modbus_parameters, register_points

BILLING = ReadRequest(purposes=frozenset({"billing"}))
EVERYTHING = ReadRequest(purposes=frozenset({"billing", "diagnostics", "instantaneous"}))
SimFactory = Callable[..., "asyncio.Future[ModbusMeterSimulator]"]


def with_parameters(profile: DeviceProfile, **parameters: Any) -> DeviceProfile:
    return profile.model_copy(update={"parameters": {**profile.parameters, **parameters}})


def with_points(profile: DeviceProfile, *points: ProfilePoint) -> DeviceProfile:
    return profile.model_copy(update={"points": [*profile.points, *points]})


@pytest_asyncio.fixture(loop_scope="function")
async def simulators() -> AsyncIterator[list[ModbusMeterSimulator]]:
    started: list[ModbusMeterSimulator] = []
    yield started
    for sim in started:
        await sim.stop()
    leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert leftovers == []  # no pymodbus reconnect loop, no simulator task outlives a test


@pytest.fixture
def start(simulators: list[ModbusMeterSimulator], at: datetime) -> Callable[..., Any]:
    async def start(profile: DeviceProfile, **kwargs: Any) -> ModbusMeterSimulator:
        kwargs.setdefault("clock", lambda: at)
        sim = ModbusMeterSimulator(profile, **kwargs)
        simulators.append(sim)
        await sim.start()
        return sim

    return start


@pytest.fixture
def driver(at: datetime) -> ModbusDriver:
    return ModbusDriver(clock=lambda: at)


def assert_matches(sim: ModbusMeterSimulator, index: int, profile: DeviceProfile, result: Any, at: datetime) -> None:
    by_quantity = {p.quantity: p for p in profile.points}
    for reading in result.readings:
        point = by_quantity[reading.quantity]
        assert reading.value == sim.expected(index, point, at), reading.quantity
        assert reading.unit == point.unit
        assert reading.timestamp == at


def test_driver_satisfies_the_protocol() -> None:
    assert isinstance(ModbusDriver(), Driver)
    assert ModbusDriver.name == "modbus"


async def test_sdm630_billing_points_equal_the_simulated_meter(
    start: Any, driver: ModbusDriver, sdm630: DeviceProfile, at: datetime
) -> None:
    sim = await start(sdm630, meters=3, seed=42)
    result = await driver.read(sim.target(2), sdm630, BILLING, timeout=1.0)
    assert {r.quantity for r in result.readings} == {p.quantity for p in sdm630.points_for(BILLING.purposes)}
    assert_matches(sim, 2, sdm630, result, at)
    assert result.meter_time is None
    energy = next(r for r in result.readings if r.quantity == "1-0:1.8.0")
    assert energy.value > 1000.0
    assert energy.value != sim.expected(1, next(p for p in sdm630.points if p.quantity == "1-0:1.8.0"), at)
    # The fewest requests the device allows: one per planned block, no more.
    plan = plan_reads(register_points(sdm630, sdm630.points_for(BILLING.purposes)), modbus_parameters(sdm630))
    assert [(r.device_id, r.function, r.address, r.count) for r in sim.requests] == [
        (2, 0x04, 0x0048, 8),
        (2, 0x04, 0x0156, 2),
    ]
    assert len(sim.requests) == len(plan)


@pytest.mark.parametrize("name", ["sdm630", "b23"])
async def test_every_point_of_the_shipped_profiles(
    start: Any, driver: ModbusDriver, name: str, request: pytest.FixtureRequest, at: datetime
) -> None:
    profile: DeviceProfile = request.getfixturevalue(name)
    sim = await start(profile, meters=2, seed=5)
    result = await driver.read(sim.target(1), profile, EVERYTHING, timeout=1.0)
    numeric = {p.quantity for p in profile.points if p.options.get("type") != "string"}
    assert {r.quantity for r in result.readings} == numeric
    assert_matches(sim, 1, profile, result, at)
    if name == "b23":  # the firmware string rides along with every reading
        assert all(r.extra == {"1-0:0.2.0": "SIM5-1"} for r in result.readings)


async def test_silent_meter_times_out_in_time_and_the_bus_still_works(
    start: Any, driver: ModbusDriver, sdm630: DeviceProfile, at: datetime
) -> None:
    sim = await start(sdm630, meters=2)
    sim.silence(2)
    one_shot = with_parameters(sdm630, retries=0)
    began = time.monotonic()
    with pytest.raises(MeterTimeoutError, match=r"read input registers \(0x04\) at address 0x0048"):
        await driver.read(sim.target(2), one_shot, BILLING, timeout=0.3)
    assert 0.29 <= time.monotonic() - began < 0.8
    result = await driver.read(sim.target(1), one_shot, BILLING, timeout=0.3)
    assert_matches(sim, 1, sdm630, result, at)
    assert len(result.readings) == 5
    # With a retry the wait is bounded by (retries + 1) * timeout.
    began = time.monotonic()
    with pytest.raises(MeterTimeoutError):
        await driver.read(sim.target(2), with_parameters(sdm630, retries=1), BILLING, timeout=0.3)
    assert 0.59 <= time.monotonic() - began < 1.2


async def test_gateway_exception_0x0b_is_a_timeout(start: Any, driver: ModbusDriver, sdm630: DeviceProfile) -> None:
    sim = await start(sdm630, meters=2)
    sim.silence(2, gateway_exception=True)
    began = time.monotonic()
    with pytest.raises(MeterTimeoutError, match="0x0b"):
        await driver.read(sim.target(2), sdm630, BILLING, timeout=2.0)
    assert time.monotonic() - began < 1.0  # answered at once: no waiting for a deadline


async def test_late_reply_is_not_taken_for_the_next_answer_tcp(
    start: Any, driver: ModbusDriver, sdm630: DeviceProfile, at: datetime
) -> None:
    sim = await start(sdm630)
    sim.delay_replies(1, 0.45)  # the first reply comes after the 0.3 s deadline
    result = await driver.read(sim.target(1), with_parameters(sdm630, retries=1), EVERYTHING, timeout=0.3)
    assert len(result.readings) == len(sdm630.points)
    assert_matches(sim, 1, sdm630, result, at)
    assert sim.connections == 2  # the retry went out on a fresh connection


async def test_late_reply_does_not_poison_the_next_read(
    start: Any, driver: ModbusDriver, sdm630: DeviceProfile, at: datetime
) -> None:
    sim = await start(sdm630)
    sim.delay_replies(1, 0.4)
    one_shot = with_parameters(sdm630, retries=0)
    with pytest.raises(MeterTimeoutError):
        await driver.read(sim.target(1), one_shot, BILLING, timeout=0.2)
    result = await driver.read(sim.target(1), one_shot, EVERYTHING, timeout=1.0)
    assert_matches(sim, 1, sdm630, result, at)
    await asyncio.sleep(0.3)  # let the late reply fall on its closed connection


def _two_same_sized_blocks() -> DeviceProfile:
    """Two reads of equal function and size: a stale reply to one fits the other."""
    points = [
        ProfilePoint(quantity="1-0:32.7.0", unit="V", source="input:0x0000", options={"type": "float32"}),
        ProfilePoint(quantity="1-0:14.7.0", unit="Hz", source="input:0x0046", options={"type": "float32"}),
    ]
    return DeviceProfile(name="two-blocks", protocol="modbus", parameters={"retries": 1}, points=points)


@pytest.mark.parametrize("settle", [link.RTU_SETTLE, 0.0])
async def test_late_reply_through_a_transparent_rtu_converter(
    start: Any, driver: ModbusDriver, at: datetime, settle: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A transparent serial converter hands every reply, late ones too, to whichever TCP
    # client is connected, and RTU has no transaction id. Without the settle pause the
    # stale voltage reply answers the retry and its duplicate answers the frequency read.
    monkeypatch.setattr(link, "RTU_SETTLE", settle)
    profile = _two_same_sized_blocks()
    sim = await start(profile, rtu_over_tcp=True)
    sim.delay_replies(1, 0.4)
    result = await driver.read(sim.target(1), profile, BILLING, timeout=0.3)
    values = {r.quantity: r.value for r in result.readings}
    frequency = sim.expected(1, profile.points[1], at)
    if settle:
        assert values["1-0:14.7.0"] == frequency
        assert_matches(sim, 1, profile, result, at)
    else:
        assert values["1-0:14.7.0"] != frequency  # the hazard the pause exists for
    await asyncio.sleep(0.2)


async def test_an_illegal_address_costs_that_point_only_and_comes_back_as_a_problem(
    start: Any, driver: ModbusDriver, sdm630: DeviceProfile, at: datetime
) -> None:
    sim = await start(sdm630)
    beyond = ProfilePoint(
        quantity="1-0:99.7.0", unit="", source="input:0x0400", purpose=["billing"], options={"type": "float32"}
    )
    result = await driver.read(sim.target(1), with_points(sdm630, beyond), BILLING, timeout=1.0)
    assert {r.quantity for r in result.readings} == {p.quantity for p in sdm630.points_for(BILLING.purposes)}
    assert_matches(sim, 1, sdm630, result, at)
    assert [(p.quantity, p.source) for p in result.problems] == [("1-0:99.7.0", "input:0x0400")]
    assert "(0x04) at address 0x0400: exception 0x02 (illegal data address)" in result.problems[0].reason
    # A profile of that one point only: nothing read, so the read fails with the reason.
    alone = sdm630.model_copy(update={"points": [beyond]})
    with pytest.raises(ProtocolError, match=r"\(0x04\) at address 0x0400: exception 0x02 \(illegal data address\)"):
        await driver.read(sim.target(1), alone, BILLING, timeout=1.0)
    # A merged block the device refuses (too many registers, 0x03): its points are read one by one.
    greedy = with_parameters(sdm630, max_registers_per_request=125, max_gap=400)
    sim.requests.clear()
    every = await driver.read(sim.target(1), greedy, EVERYTHING, timeout=1.0)
    assert {r.quantity for r in every.readings} == {p.quantity for p in sdm630.points_for(EVERYTHING.purposes)}
    assert every.problems == []
    assert_matches(sim, 1, sdm630, every, at)
    assert len(sim.requests) > len(plan_reads(register_points(greedy, greedy.points), modbus_parameters(greedy)))


async def test_no_point_selected_says_why(start: Any, driver: ModbusDriver, sdm630: DeviceProfile) -> None:
    sim = await start(sdm630)
    result = await driver.read(sim.target(1), sdm630, ReadRequest(purposes=frozenset({"load-profile"})), timeout=1.0)
    assert result.readings == []
    assert [p.reason for p in result.problems] == [f"profile {sdm630.name} has no point for purpose load-profile"]
    assert sim.requests == []


async def test_write_holding_register_and_read_it_back(start: Any, driver: ModbusDriver, sdm630: DeviceProfile) -> None:
    sim = await start(sdm630, meters=2)
    await driver.write_point(sim.target(2), sdm630, "1-0:0.8.0", 15, timeout=1.0)
    assert [(r.device_id, r.function, r.address) for r in sim.requests] == [(2, 0x10, 0x0002)]
    result = await driver.read(sim.target(2), sdm630, ReadRequest(purposes=frozenset({"diagnostics"})), timeout=1.0)
    assert {r.quantity: r.value for r in result.readings}["1-0:0.8.0"] == 15.0
    other = await driver.read(sim.target(1), sdm630, ReadRequest(purposes=frozenset({"diagnostics"})), timeout=1.0)
    assert {r.quantity: r.value for r in other.readings}["1-0:0.8.0"] != 15.0


async def test_write_coil_and_single_register(start: Any, driver: ModbusDriver) -> None:
    profile = DeviceProfile(
        name="relay",
        protocol="modbus",
        parameters={"single_register_write": True},
        points=[
            ProfilePoint(quantity="0-0:96.3.10", unit="", source="coil:4"),
            ProfilePoint(quantity="0-0:96.50.1", unit="", source="holding:9", scale=0.5),
        ],
    )
    sim = await start(profile)
    target = sim.target(1)
    await driver.write_point(target, profile, "coil:4", True, timeout=1.0)
    await driver.write_point(target, profile, "0-0:96.50.1", 21.5, timeout=1.0)
    assert [r.function for r in sim.requests] == [0x05, 0x06]
    values = {r.quantity: r.value for r in (await driver.read(target, profile, BILLING, timeout=1.0)).readings}
    assert values == {"0-0:96.3.10": 1.0, "0-0:96.50.1": 21.5}
    await driver.write_point(target, profile, "0-0:96.3.10", False, timeout=1.0)
    values = {r.quantity: r.value for r in (await driver.read(target, profile, BILLING, timeout=1.0)).readings}
    assert values["0-0:96.3.10"] == 0.0


async def test_writes_that_cannot_be_made_fail_before_any_traffic(
    start: Any, driver: ModbusDriver, sdm630: DeviceProfile, b23: DeviceProfile
) -> None:
    sim = await start(sdm630)
    for key, value, profile in [
        ("1-0:1.8.0", 1.0, sdm630),  # input registers are read-only
        ("1-0:99.9.9", 1.0, sdm630),  # no such point
        ("holding:0x9999", 1.0, sdm630),
        ("1-0:14.7.0", 700.0, b23),  # uint16 in 0.01 Hz ends at 655.35
        ("1-0:0.8.0", "15", sdm630),
    ]:
        with pytest.raises(ConfigurationError):
            await driver.write_point(sim.target(1), profile, key, value, timeout=1.0)
    assert sim.requests == []


async def test_invalid_marker_yields_no_reading(start: Any, driver: ModbusDriver, b23: DeviceProfile) -> None:
    sim = await start(b23)
    await driver.write_point(sim.target(1), b23, "1-0:14.7.0", 655.35, timeout=1.0)  # raw 0xFFFF
    result = await driver.read(sim.target(1), b23, ReadRequest(purposes=frozenset({"instantaneous"})), timeout=1.0)
    quantities = {r.quantity for r in result.readings}
    assert "1-0:14.7.0" not in quantities
    assert "1-0:32.7.0" in quantities


async def test_one_port_per_meter(start: Any, driver: ModbusDriver, sdm630: DeviceProfile, at: datetime) -> None:
    sim = await start(sdm630, meters=2, port_per_meter=True, seed=3)
    assert len(set(sim.ports)) == 2
    for index in (1, 2):
        target = MeterTarget(meter_id=f"m{index}", url=sim.url(index))  # default unit id 1
        assert_matches(sim, index, sdm630, await driver.read(target, sdm630, BILLING, timeout=1.0), at)


async def test_rtu_on_a_serial_line(start: Any, driver: ModbusDriver, sdm630: DeviceProfile, at: datetime) -> None:
    sim = await start(sdm630, meters=3, seed=9)
    await sim.start_rtu()
    result = await driver.read(sim.target(3, serial=True), sdm630, BILLING, timeout=1.0)
    assert len(result.readings) == 5
    assert_matches(sim, 3, sdm630, result, at)
    sim.silence(2)
    with pytest.raises(MeterTimeoutError):
        await driver.read(sim.target(2, serial=True), with_parameters(sdm630, retries=0), BILLING, timeout=0.2)
    assert_matches(sim, 1, sdm630, await driver.read(sim.target(1, serial=True), sdm630, BILLING, timeout=1.0), at)


async def test_reads_on_one_medium_are_serialised(
    start: Any, driver: ModbusDriver, sdm630: DeviceProfile, at: datetime
) -> None:
    sim = await start(sdm630, meters=4)
    results = await asyncio.gather(*(driver.read(sim.target(i), sdm630, BILLING, timeout=1.0) for i in range(1, 5)))
    for index, result in enumerate(results, start=1):
        assert_matches(sim, index, sdm630, result, at)
    devices = [r.device_id for r in sim.requests]
    assert devices == sorted(devices)  # one meter's requests never interleave with another's


async def test_execute_write_point_reads_the_point_back(start: Any, driver: ModbusDriver) -> None:
    profile = DeviceProfile(
        name="relay",
        protocol="modbus",
        parameters={"single_register_write": True},
        points=[
            ProfilePoint(quantity="0-0:96.3.10", unit="", source="coil:4"),
            ProfilePoint(quantity="0-0:96.50.1", unit="", source="holding:9", scale=0.5),
            ProfilePoint(quantity="1-0:1.8.0", unit="kWh", source="input:0x0156", options={"type": "float32"}),
        ],
    )
    sim = await start(profile)
    target = sim.target(1)
    done = await driver.execute(
        target, profile, DriverCommand("write-point", point="0-0:96.50.1", value=21.5), timeout=1
    )
    assert [(r.quantity, r.value) for r in done.readings] == [("0-0:96.50.1", 21.5)]
    assert [r.function for r in sim.requests] == [0x06, 0x03]  # the write, then the read back
    coil = await driver.execute(target, profile, DriverCommand("write-point", point="coil:4", value=True), timeout=1)
    assert [(r.quantity, r.value) for r in coil.readings] == [("0-0:96.3.10", 1.0)]
    assert "coil" in coil.detail
    sent = len(sim.requests)
    for command, message in [
        (DriverCommand("write-point", point="1-0:1.8.0", value=1.0), "read-only"),
        (DriverCommand("write-point", value=1.0), "needs a point"),
        (DriverCommand("write-point", point="0-0:96.50.1", value=b"\x01"), "needs a number"),
        (DriverCommand("disconnect"), "cannot run 'disconnect'"),
    ]:
        with pytest.raises(ConfigurationError, match=message):
            await driver.execute(target, profile, command, timeout=1)
    assert len(sim.requests) == sent  # refused before any traffic
    with pytest.raises(ConfigurationError, match="connection the meter opened"):
        await driver.read(target, profile, BILLING, timeout=1, medium=object())  # type: ignore[arg-type]
