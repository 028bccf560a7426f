"""MBusDriver against the simulated bus behind its TCP gateway, and the record-to-point rule."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest

from gxami_meterlab.simulators.mbus import MBusBus, MBusTcpGateway, register_value
from gxcore.drivers import Driver, MeterTarget, ReadRequest
from gxcore.drivers.mbus import MBusDriver
from gxcore.errors import ConfigurationError, MediaError, MeterTimeoutError, ProtocolError
from gxcore.profiles import DeviceProfile, ProfileCatalog, ProfilePoint
from gxcore.protocols.mbus import decode_mbus_telegram
from gxcore.protocols.mbus.frame import decode_frame
from gxcore.protocols.mbus.points import readings_from, record_point, record_points

AT = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)  # the simulated bus's clock
READ_AT = datetime(2024, 1, 15, 12, 0, 30, tzinfo=UTC)  # the driver's clock
EVERYTHING = ReadRequest(purposes=frozenset({"billing", "instantaneous", "diagnostics"}))
CATALOG = ProfileCatalog()


def profile(*points: dict[str, Any], **parameters: Any) -> DeviceProfile:
    return DeviceProfile.model_validate(
        {"name": "test-mbus", "protocol": "mbus", "parameters": parameters, "points": list(points)}
    )


def point(quantity: str, unit: str, source: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"quantity": quantity, "unit": unit, "source": source or quantity, **extra}


def by_quantity(readings: list[Any]) -> dict[str, float]:
    return {r.quantity: float(r.value) for r in readings}


@pytest.fixture
def driver() -> MBusDriver:
    return MBusDriver(clock=lambda: READ_AT)


def test_driver_satisfies_the_protocol() -> None:
    assert isinstance(MBusDriver(), Driver)
    assert MBusDriver.name == "mbus"


async def test_heat_meter_by_primary_address_equals_the_simulator(driver: MBusDriver) -> None:
    bus = MBusBus(seed=7, count=4)
    heat = CATALOG.get("generic-mbus-heat")
    async with MBusTcpGateway(bus) as gateway:
        target = MeterTarget("heat-1", f"tcp://127.0.0.1:{gateway.port}?address=1")
        result = await driver.read(target, heat, EVERYTHING, timeout=1.0)
    value = register_value(7, 0, AT)
    got = by_quantity(result.readings)
    # The simulated heat meter sends kWh (VIF 06), litres (13), 0.01 °C (59, 5D), no power or flow.
    assert got == {
        "6-0:1.0.0": round(value),
        "6-0:2.0.0": pytest.approx(round(value * 20) / 1000),
        "6-0:10.0.0": pytest.approx(round(6500 + (value * 13) % 1000) / 100),
        "6-0:11.0.0": pytest.approx(round(4000 + (value * 7) % 1000) / 100),
    }
    assert {r.unit for r in result.readings} == {"kWh", "m3", "degC"}
    assert all(r.timestamp == READ_AT for r in result.readings)
    assert result.meter_time == AT
    assert result.readings[0].extra["meter"] == bus.meters[0].secondary.id_digits
    # The profile's points the telegram does not carry are said, one problem each.
    missing = {p.quantity for p in heat.points_for(EVERYTHING.purposes)} - set(got)
    assert missing and sorted(p.quantity for p in result.problems) == sorted(missing)
    assert all(p.reason == "no record of the telegram matches" for p in result.problems)


async def test_billing_purpose_selects_billing_points_only(driver: MBusDriver) -> None:
    bus = MBusBus(seed=7, count=2)
    async with MBusTcpGateway(bus) as gateway:
        target = MeterTarget("heat-1", f"tcp://127.0.0.1:{gateway.port}", {"primary_address": "1"})
        result = await driver.read(target, CATALOG.get("generic-mbus-heat"), ReadRequest(), timeout=1.0)
    assert [r.quantity for r in result.readings] == ["6-0:1.0.0", "6-0:2.0.0"]


async def test_water_meter_by_secondary_address(driver: MBusDriver) -> None:
    bus = MBusBus(seed=3, count=3)
    water = bus.meters[1]
    assert water.profile == "water"
    async with MBusTcpGateway(bus) as gateway:
        target = MeterTarget("w", f"tcp://127.0.0.1:{gateway.port}", {"secondary_address": str(water.secondary)})
        result = await driver.read(target, CATALOG.get("generic-mbus-water"), EVERYTHING, timeout=1.0)
    assert by_quantity(result.readings) == {"8-0:1.0.0": pytest.approx(round(register_value(3, 1, AT) * 10) / 1000)}
    assert result.readings[0].unit == "m3"


async def test_electricity_meter_units_convert_and_phases_map(driver: MBusDriver) -> None:
    bus = MBusBus(seed=5, count=3)
    points = [
        point("1-0:1.8.0", "kWh"),
        point("1-0:1.8.1", "kWh"),
        point("1-0:2.8.0", "kWh"),
        point("1-0:1.7.0", "kW"),
        point("1-0:32.7.0", "V"),
        point("1-0:72.7.0", "V"),
    ]
    async with MBusTcpGateway(bus) as gateway:
        target = MeterTarget("e", f"tcp://127.0.0.1:{gateway.port}?address=3")
        result = await driver.read(target, profile(*points), ReadRequest(), timeout=1.0)
    value = register_value(5, 2, AT)
    assert by_quantity(result.readings) == {
        "1-0:1.8.0": pytest.approx(round(value * 1000) / 1000),
        "1-0:1.8.1": pytest.approx(round(value * 600) / 1000),
        "1-0:2.8.0": pytest.approx(round(value * 50) / 1000),
        "1-0:1.7.0": pytest.approx(round(1000 + (value * 37) % 2000) / 1000),
        "1-0:32.7.0": pytest.approx(230.1),
        "1-0:72.7.0": pytest.approx(230.3),
    }


async def test_history_in_follow_up_telegrams_and_scale_offset(driver: MBusDriver) -> None:
    bus = MBusBus(seed=9, count=4)
    assert bus.meters[3].profile == "heat-history"
    points = [
        point("6-0:1.0.0", "kWh", scale=2.0, offset=1.0),
        point("6-0:1.0.1", "MWh", "6-0:1.0.0*1"),
        point("6-0:1.0.2", "kWh", "6-0:1.0.0*12"),  # storage 12 is in the third telegram
    ]
    async with MBusTcpGateway(bus) as gateway:
        target = MeterTarget("h", f"tcp://127.0.0.1:{gateway.port}?address=4")
        result = await driver.read(target, profile(*points), ReadRequest(), timeout=1.0)
    month_start = datetime(2024, 1, 1, tzinfo=UTC)
    twelve_back = datetime(2023, 2, 1, tzinfo=UTC)
    assert by_quantity(result.readings) == {
        "6-0:1.0.0": round(register_value(9, 3, AT)) * 2.0 + 1.0,
        "6-0:1.0.1": pytest.approx(round(register_value(9, 3, month_start)) / 1000),
        "6-0:1.0.2": round(register_value(9, 3, twelve_back)),
    }


async def test_meter_timezone_parameter_places_the_clock(driver: MBusDriver) -> None:
    bus = MBusBus(seed=1, count=1)
    async with MBusTcpGateway(bus) as gateway:
        target = MeterTarget("h", f"tcp://127.0.0.1:{gateway.port}?address=1")
        heat = profile(point("6-0:1.0.0", "kWh"), timezone="Europe/Amsterdam")
        result = await driver.read(target, heat, ReadRequest(), timeout=1.0)
    assert result.meter_time == datetime(2024, 1, 15, 11, 0, tzinfo=UTC)  # 12:00 CET


async def test_silent_address_times_out(driver: MBusDriver) -> None:
    bus = MBusBus(seed=1, count=1)
    async with MBusTcpGateway(bus) as gateway:
        target = MeterTarget("nobody", f"tcp://127.0.0.1:{gateway.port}?address=42")
        started = asyncio.get_running_loop().time()
        with pytest.raises(MeterTimeoutError):
            await driver.read(target, profile(point("6-0:1.0.0", "kWh"), retries=1), ReadRequest(), timeout=0.2)
        assert asyncio.get_running_loop().time() - started < 2.0


async def test_refused_connection_is_a_media_error(driver: MBusDriver, unused_tcp_port: int) -> None:
    target = MeterTarget("gone", f"tcp://127.0.0.1:{unused_tcp_port}?address=1")
    with pytest.raises(MediaError):
        await driver.read(target, profile(point("6-0:1.0.0", "kWh")), ReadRequest(), timeout=0.5)


async def test_gateway_that_never_answers_is_a_timeout(driver: MBusDriver) -> None:
    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # keeps the connection open and says nothing
        writer.close()

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        target = MeterTarget("m", f"tcp://127.0.0.1:{port}?address=1")
        with pytest.raises(MeterTimeoutError):
            await driver.read(target, profile(point("6-0:1.0.0", "kWh"), retries=0), ReadRequest(), timeout=0.2)
    finally:
        server.close()
        await server.wait_closed()


async def test_reply_without_any_profile_record_is_a_protocol_error(driver: MBusDriver) -> None:
    bus = MBusBus(seed=1, count=2)
    async with MBusTcpGateway(bus) as gateway:
        target = MeterTarget("w", f"tcp://127.0.0.1:{gateway.port}?address=2")
        with pytest.raises(ProtocolError, match="none of the profile's records"):
            await driver.read(target, profile(point("6-0:1.0.0", "kWh")), ReadRequest(), timeout=1.0)


@pytest.mark.parametrize(
    ("points", "parameters", "options", "message"),
    [
        ([point("6-0:1.0.0", "kWh", "energy")], {}, {"primary_address": "1"}, "neither a record quantity"),
        ([point("6-0:1.0.0", "kWh", options={"storage": 1})], {}, {"primary_address": "1"}, "part of a quantity"),
        ([point("6-0:1.0.0", "kWh", "record:Energy", options={"function": "peak"})], {}, {}, "function one of"),
        ([point("6-0:1.0.0", "kWh", options={"colour": "red"})], {}, {}, "unknown M-Bus options"),
        ([point("6-0:1.0.0", "kWh")], {"baud": 2400}, {}, "unknown M-Bus parameters"),
        ([point("6-0:1.0.0", "kWh")], {"timezone": "Mars/Olympus"}, {}, "unknown timezone"),
        ([point("6-0:1.0.0", "kWh")], {"retries": 9}, {}, "retries"),
        ([point("6-0:1.0.0", "kWh")], {}, {"primary_address": "251"}, "outside 0..250"),
        ([point("6-0:1.0.0", "kWh")], {}, {"secondary_address": "12345"}, "16 hex"),
        ([point("6-0:1.0.0", "kWh")], {}, {}, "give options primary_address"),
    ],
)
async def test_bad_profiles_and_targets_are_configuration_errors(
    driver: MBusDriver, points: list[dict[str, Any]], parameters: dict[str, Any], options: dict[str, str], message: str
) -> None:
    target = MeterTarget("m", "tcp://127.0.0.1:1", options)
    with pytest.raises(ConfigurationError, match=message):
        await driver.read(target, profile(*points, **parameters), ReadRequest(), timeout=0.5)


def test_shipped_mbus_profiles_validate() -> None:
    for name in ("generic-mbus-heat", "generic-mbus-water"):
        MBusDriver().validate_profile(CATALOG.get(name))
    with pytest.raises(ConfigurationError, match="not 'mbus'"):
        MBusDriver().validate_profile(CATALOG.get("generic-dlms"))


# rscada/libmbus test/test-frames/kamstrup_multical_601.hex: energy 37351 kWh (in Wh), volume 561.08 m³,
# peak power 44.8 kW (function maximum, no canonical name), on time 985 h.
KAMSTRUP_601 = bytes.fromhex(
    "68 F7 F7 68 08 11 72 17 58 85 06 2D 2C 08 04 04 00 00 00 0C 78 17 58 85 06 04 06 E7 91 00 00 04 14 2C DB"
    "00 00 04 22 D9 03 00 00 04 59 B9 27 00 00 04 5D 08 12 00 00 04 61 B1 15 00 00 04 2D 5B 01 00 00 14 2D C0"
    "01 00 00 04 3B 1F 02 00 00 14 3B 74 02 00 00 84 10 06 00 00 00 00 84 20 06 00 00 00 00 84 40 14 00 00 00"
    "00 84 80 40 14 00 00 00 00 84 C0 40 06 00 00 00 00 04 6D 1A 2F 65 11 44 06 51 82 00 00 44 14 B2 C3 00 00"
    "54 2D 26 02 00 00 54 3B 03 04 00 00 C4 10 06 00 00 00 00 C4 20 06 00 00 00 00 C4 40 14 00 00 00 00 C4 80"
    "40 14 00 00 00 00 C4 C0 40 06 00 00 00 00 42 6C 5F 1C 0F 00 00 00 00 E7 E4 00 00 63 66 00 00 00 00 00 00"
    "00 00 00 00 00 00 00 00 5B C9 A5 02 34 53 00 00 E0 B2 03 00 89 9C 68 00 00 00 00 00 01 00 01 07 07 09 01"
    "03 00 00 00 00 00 98 16"
)


def test_record_sources_with_units_from_a_published_frame() -> None:
    telegram = decode_mbus_telegram(KAMSTRUP_601)
    points = record_points(
        [
            ProfilePoint(quantity="6-0:1.0.0", unit="GJ", source="6-0:1.0.0"),
            ProfilePoint(quantity="6-0:8.0.0", unit="kW", source="record:Power", options={"function": "maximum"}),
            ProfilePoint(quantity="0-0:96.8.0", unit="d", source="record:On time"),
            ProfilePoint(quantity="6-0:2.0.0", unit="l", source="6-0:2.0.0", options={"meter_unit": "m3"}),
        ]
    )
    readings = by_quantity(readings_from([telegram], points, READ_AT))
    assert readings == {
        "6-0:1.0.0": pytest.approx(37351 * 3.6e-3),  # kWh -> GJ
        "6-0:8.0.0": pytest.approx(44.8),
        "0-0:96.8.0": pytest.approx(985 / 24),
        "6-0:2.0.0": pytest.approx(561.08),  # meter_unit m3 and no scale: the profile asked for m3 values
    }


def test_a_unit_of_another_dimension_fails_loudly() -> None:
    telegram = decode_mbus_telegram(KAMSTRUP_601)
    points = [record_point(ProfilePoint(quantity="6-0:1.0.0", unit="m3", source="6-0:1.0.0"))]
    with pytest.raises(ProtocolError, match="does not convert"):
        readings_from([telegram], points, READ_AT)


@contextmanager
def bus_on_a_pty(bus: MBusBus) -> Iterator[str]:
    """Serve ``bus`` on a pseudo-terminal as a level converter would; yields the device path."""
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    loop = asyncio.get_running_loop()
    received = bytearray()

    def readable() -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            received.extend(os.read(master, 512))
        while received:
            consumed, frame = decode_frame(received)
            if consumed == 0:
                return
            request = bytes(received[:consumed])
            del received[:consumed]
            reply = bus.respond(request) if frame is not None else None
            if reply:
                os.write(master, reply)

    loop.add_reader(master, readable)
    try:
        yield os.ttyname(slave)
    finally:
        loop.remove_reader(master)
        os.close(master)
        os.close(slave)


async def test_heat_meter_over_a_serial_line(driver: MBusDriver) -> None:
    bus = MBusBus(seed=7, count=2)
    with bus_on_a_pty(bus) as device:
        target = MeterTarget("heat-serial", f"serial://{device}?baud=9600", {"primary_address": "1"})
        result = await driver.read(target, CATALOG.get("generic-mbus-heat"), ReadRequest(), timeout=1.0)
    assert by_quantity(result.readings)["6-0:1.0.0"] == round(register_value(7, 0, AT))


def test_problems_name_a_missing_record_and_the_bytes_left_unparsed() -> None:
    from gxcore.drivers.common import record_problems
    from gxcore.profiles import ProfilePoint
    from gxcore.protocols.mbus import decode_mbus_telegram
    from gxcore.protocols.mbus.frame import LongFrame, encode_frame
    from gxcore.protocols.mbus.points import readings_from, record_points

    header = bytes.fromhex("78563412 2D2C 01 07 55 00 0000")  # id 12345678, water, access 0x55
    wired = encode_frame(LongFrame(0x08, 1, 0x72, header + bytes.fromhex("0413 39300000")))  # volume 12.345 m3
    telegram = decode_mbus_telegram(wired + b"\x00")  # one byte more than the L field says
    points = record_points(
        [
            ProfilePoint(quantity="8-0:1.0.0", unit="m3", source="8-0:1.0.0"),
            ProfilePoint(quantity="8-0:2.0.0", unit="m3/h", source="record:Volume flow"),
        ]
    )
    assert [r.quantity for r in readings_from([telegram], points, READ_AT)] == ["8-0:1.0.0"]
    problems = record_problems([telegram], points)
    assert [(p.quantity, p.source) for p in problems] == [
        ("8-0:2.0.0", "record:Volume flow"),
        ("", f"telegram 12345678 offset {len(wired)}"),
    ]
    assert problems[0].reason == "no record of the telegram matches"
    assert problems[1].reason == "unparsed 1 bytes: 1 byte(s) after the frame's stop byte"
