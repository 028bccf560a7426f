"""DsmrDriver against the simulated P1-to-TCP bridge (plain and Smarty-encrypted)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from gxami_meterlab.simulators.dsmr import DsmrTcpServer, SimulatedP1Meter
from gxcore.drivers import Driver, MeterTarget, ReadRequest
from gxcore.drivers.dsmr import DsmrDriver, dsmr_problems, dsmr_readings, obis_point
from gxcore.errors import ConfigurationError, DecryptionError, KeyMissingError, MeterTimeoutError, ProtocolError
from gxcore.profiles import DeviceProfile, ProfileCatalog, ProfilePoint
from gxcore.protocols.dsmr import decode_dsmr_telegram
from gxcore.secrets import Secret

AT = datetime(2024, 3, 5, 14, 7, 30, tzinfo=UTC)
RECEIVED = datetime(2024, 3, 5, 14, 7, 31, tzinfo=UTC)
DSMR5 = ProfileCatalog().get("dsmr5")
EVERYTHING = ReadRequest(purposes=frozenset({"billing", "instantaneous", "diagnostics"}))
KEY = bytes.fromhex("000102030405060708090A0B0C0D0E0F")


@pytest.fixture
def driver() -> DsmrDriver:
    return DsmrDriver(clock=lambda: RECEIVED)


def number(telegram: Any, reference: str) -> Decimal:
    (record,) = telegram.find(reference)
    assert isinstance(record.value, Decimal)
    return record.value


@asynccontextmanager
async def bridge(send: Callable[[asyncio.StreamWriter], Awaitable[None]]) -> AsyncIterator[int]:
    """A P1 bridge that runs ``send`` for each client and then waits for it to hang up."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await send(writer)
        await reader.read()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def test_driver_satisfies_the_protocol() -> None:
    assert isinstance(DsmrDriver(), Driver)
    assert DsmrDriver.name == "dsmr"


async def test_dsmr5_round_trip_equals_the_simulated_meter(driver: DsmrDriver) -> None:
    meter = SimulatedP1Meter(3, 0, variant="5.0")
    telegram = decode_dsmr_telegram(meter.telegram_at(AT))
    async with DsmrTcpServer(meter, interval=0.05, clock=lambda: AT) as server:
        target = MeterTarget("p1-home", f"tcp://127.0.0.1:{server.port}")
        result = await driver.read(target, DSMR5, EVERYTHING, timeout=2.0)
    got = {r.quantity: r for r in result.readings}
    assert {p.quantity for p in DSMR5.points} == set(got)
    # Totals DSMR does not send are the sum of the tariffs, and equal the simulator's integral.
    assert got["1-0:1.8.0"].value == number(telegram, "1-0:1.8.1") + number(telegram, "1-0:1.8.2")
    assert float(got["1-0:1.8.0"].value) == pytest.approx(meter.load.energy(AT), abs=0.002)
    assert float(got["1-0:2.8.0"].value) == pytest.approx(meter.solar.energy(AT), abs=0.002)
    assert got["1-0:1.8.2"].value == number(telegram, "1-0:1.8.2")
    assert float(got["1-0:1.7.0"].value) == pytest.approx(meter.load.power(AT), abs=0.0005)
    assert got["1-0:32.7.0"].value == number(telegram, "1-0:32.7.0")
    assert got["1-0:32.7.0"].unit == "V"
    assert got["0-0:96.14.0"].value == 2.0
    # Gas: found on its M-Bus channel by medium, stamped with the 5-minute capture time.
    capture = datetime(2024, 3, 5, 14, 5, tzinfo=UTC)
    assert float(got["7-0:3.0.0"].value) == pytest.approx(round(meter.gas.energy(capture), 3))
    assert (got["7-0:3.0.0"].unit, got["7-0:3.0.0"].timestamp) == ("m3", capture)
    assert got["1-0:1.8.0"].timestamp == AT  # the telegram clock, not the time of receipt
    assert result.meter_time == AT
    assert result.problems == []  # every point found, every line parsed


async def test_heat_channel_converts_gigajoules(driver: DsmrDriver) -> None:
    meter = SimulatedP1Meter(3, 0, variant="5.0")
    heat = DeviceProfile(
        name="p1-heat",
        protocol="dsmr",
        points=[ProfilePoint(quantity="6-0:1.0.0", unit="kWh", source="0-*:24.2.1", options={"medium": "heat"})],
    )
    async with DsmrTcpServer(meter, interval=0.05, clock=lambda: AT) as server:
        result = await driver.read(
            MeterTarget("p1", f"tcp://127.0.0.1:{server.port}"), heat, ReadRequest(), timeout=2.0
        )
    capture = datetime(2024, 3, 5, 14, 5, tzinfo=UTC)
    assert float(result.readings[0].value) == pytest.approx(
        round(meter.heat.energy(capture), 3) * 1000 / 3.6
    )  # GJ -> kWh


async def test_smarty_frames_are_decrypted_with_the_meter_key(driver: DsmrDriver) -> None:
    meter = SimulatedP1Meter(5, 1, variant="smarty")
    smarty = DeviceProfile(
        name="smarty",
        protocol="dsmr",
        parameters={"smarty": True},
        points=[
            ProfilePoint(quantity="1-0:1.8.0", unit="kWh", source="1-0:1.8.0"),
            ProfilePoint(quantity="1-0:3.8.0", unit="kvarh", source="1-0:3.8.0"),
        ],
    )
    async with DsmrTcpServer(meter, interval=0.05, clock=lambda: AT, smarty_key=Secret(KEY)) as server:
        target = MeterTarget("lux", f"tcp://127.0.0.1:{server.port}", secrets={"key": Secret(KEY.hex())})
        result = await driver.read(target, smarty, ReadRequest(), timeout=2.0)
        with pytest.raises(KeyMissingError):
            await driver.read(MeterTarget("lux", target.url), smarty, ReadRequest(), timeout=2.0)
        wrong = MeterTarget("lux", target.url, secrets={"key": Secret(bytes(16))})
        with pytest.raises(DecryptionError) as caught:
            await driver.read(wrong, smarty, ReadRequest(), timeout=2.0)
    assert [float(r.value) for r in result.readings] == [
        pytest.approx(round(meter.load.energy(AT), 3)),
        pytest.approx(round(meter.load.energy(AT) * 0.1, 3)),
    ]
    assert KEY.hex() not in str(caught.value).lower()


async def test_telegrams_with_bad_crc_are_skipped(driver: DsmrDriver) -> None:
    meter = SimulatedP1Meter(3, 0, variant="5.0")
    good = meter.telegram_at(AT)
    damaged = good.replace(b"1-0:1.8.1(", b"1-0:1.8.1(1", 1)[:-6] + good[-6:]

    async def send(writer: asyncio.StreamWriter) -> None:
        writer.write(b"noise before the header" + damaged + good[: len(good) // 2])
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(good[len(good) // 2 :])
        await writer.drain()

    async with bridge(send) as port:
        result = await driver.read(MeterTarget("p1", f"tcp://127.0.0.1:{port}"), DSMR5, ReadRequest(), timeout=2.0)
    telegram = decode_dsmr_telegram(good)
    assert result.readings[1].quantity == "1-0:1.8.1"
    assert result.readings[1].value == number(telegram, "1-0:1.8.1")


async def test_only_damaged_telegrams_time_out_naming_the_damage(driver: DsmrDriver) -> None:
    good = SimulatedP1Meter(3, 0, variant="5.0").telegram_at(AT)
    damaged = good.replace(b"1-0:1.8.1(", b"1-0:1.8.1(1", 1)[:-6] + good[-6:]

    async def send(writer: asyncio.StreamWriter) -> None:
        writer.write(damaged)
        await writer.drain()

    async with bridge(send) as port:
        with pytest.raises(MeterTimeoutError, match="CRC"):
            await driver.read(MeterTarget("p1", f"tcp://127.0.0.1:{port}"), DSMR5, ReadRequest(), timeout=0.3)


async def test_a_silent_port_times_out_within_the_timeout(driver: DsmrDriver) -> None:
    async def send(writer: asyncio.StreamWriter) -> None:
        return None

    async with bridge(send) as port:
        started = asyncio.get_running_loop().time()
        with pytest.raises(MeterTimeoutError):
            await driver.read(MeterTarget("p1", f"tcp://127.0.0.1:{port}"), DSMR5, ReadRequest(), timeout=0.2)
        assert asyncio.get_running_loop().time() - started < 1.0


def test_mapping_rules_on_a_decoded_telegram() -> None:
    telegram = decode_dsmr_telegram(SimulatedP1Meter(3, 0, variant="5.0").telegram_at(AT))
    points = [
        obis_point(ProfilePoint(quantity="1-0:1.8.0", unit="MWh", source="1-0:1.8.1 + 1-0:1.8.2", scale=2.0)),
        obis_point(ProfilePoint(quantity="1-0:99.1.0", unit="kWh", source="1-0:1.8.1+1-0:9.9.9")),  # a missing part
        obis_point(ProfilePoint(quantity="7-0:3.0.0", unit="m3", source="0-*:24.2.1", options={"medium": "water"})),
    ]
    readings = dsmr_readings(telegram, points, RECEIVED)
    assert [r.quantity for r in readings] == ["1-0:1.8.0"]
    total = number(telegram, "1-0:1.8.1") + number(telegram, "1-0:1.8.2")
    assert readings[0].value == total / 1000 * 2
    with pytest.raises(ProtocolError, match="none of the profile's references"):
        dsmr_readings(telegram, points[1:], RECEIVED)
    volts = obis_point(ProfilePoint(quantity="1-0:32.7.0", unit="A", source="1-0:32.7.0"))
    with pytest.raises(ProtocolError, match="does not convert"):
        dsmr_readings(telegram, [volts], RECEIVED)


def test_problems_name_missing_points_and_unparsed_lines() -> None:
    raw = SimulatedP1Meter(3, 0, variant="5.0").telegram_at(AT)
    odd = raw[: raw.rindex(b"!")] + b"0-0:96.99.0(odd\r\n!\r\n"  # an older meter: no CRC, one odd line
    telegram = decode_dsmr_telegram(odd)
    points = [
        obis_point(ProfilePoint(quantity="1-0:1.8.1", unit="kWh", source="1-0:1.8.1")),
        obis_point(ProfilePoint(quantity="1-0:99.1.0", unit="kWh", source="1-0:9.9.9")),
    ]
    assert [r.quantity for r in dsmr_readings(telegram, points, RECEIVED)] == ["1-0:1.8.1"]
    problems = dsmr_problems(telegram, points)
    assert [(p.quantity, p.source) for p in problems] == [("1-0:99.1.0", "1-0:9.9.9"), ("", "line 41")]
    assert problems[1].reason.startswith("unparsed: expected one or more '(value)' groups")
    assert problems[1].describe() == f"line 41: {problems[1].reason}"


@pytest.mark.parametrize(
    ("source", "options", "parameters", "message"),
    [
        ("1.8.1", {}, {}, "not an OBIS reference"),
        ("1-0:1.8.1+", {}, {}, "not an OBIS reference"),
        ("0-*:24.2.1", {"medium": 3}, {}, "medium must be text"),
        ("1-0:1.8.1", {"channel": 1}, {}, "unknown DSMR options"),
        ("1-0:1.8.1", {}, {"baud": 115200}, "unknown DSMR parameters"),
        ("1-0:1.8.1", {}, {"smarty": "yes"}, "smarty must be true or false"),
        ("1-0:1.8.1", {}, {"timeout": 0}, "timeout must be seconds"),
    ],
)
def test_bad_profiles_are_configuration_errors(
    source: str, options: dict[str, Any], parameters: dict[str, Any], message: str
) -> None:
    profile = DeviceProfile(
        name="bad",
        protocol="dsmr",
        parameters=parameters,
        points=[ProfilePoint(quantity="1-0:1.8.1", unit="kWh", source=source, options=options)],
    )
    with pytest.raises(ConfigurationError, match=message):
        DsmrDriver().validate_profile(profile)


def test_shipped_dsmr5_profile_validates() -> None:
    DsmrDriver().validate_profile(DSMR5)
