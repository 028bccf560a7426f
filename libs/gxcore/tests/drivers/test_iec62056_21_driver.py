"""Iec62056Driver against the simulated optical probe on TCP (modes A, B, C)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from gxami_meterlab.simulators.dsmr import DailyCurve
from gxami_meterlab.simulators.iec62056_21 import Iec62056TcpServer, MeterSend, SimulatedIecMeter, readout_lines
from gxcore.drivers import Driver, MeterTarget, ReadRequest
from gxcore.drivers.iec62056_21 import Iec62056Driver, data_set_point, iec_readings
from gxcore.errors import ConfigurationError, MediaError, MeterTimeoutError, ProtocolError
from gxcore.profiles import DeviceProfile, ProfileCatalog, ProfilePoint
from gxcore.protocols.iec62056_21 import decode_iec62056_21_readout, encode_data_message

AT = datetime(2024, 3, 5, 14, 7, 30, tzinfo=UTC)
RECEIVED = datetime(2024, 3, 5, 14, 7, 33, tzinfo=UTC)
GENERIC = ProfileCatalog().get("generic-iec62056-21")
EVERYTHING = ReadRequest(purposes=frozenset({"billing", "instantaneous", "diagnostics"}))


@pytest.fixture
def driver() -> Iec62056Driver:
    return Iec62056Driver(clock=lambda: RECEIVED)


def expected(seed: int, index: int = 0) -> dict[str, float]:
    """Values of the simulated readout at AT, by reduced address (first value of each data set)."""
    readout = decode_iec62056_21_readout(encode_data_message(readout_lines(seed, index, AT)))
    values: dict[str, float] = {}
    for record in readout.records:
        if record.index == 0 and not isinstance(record.value, str):
            values.setdefault(record.quantity, float(record.value))
    return values


def test_driver_satisfies_the_protocol() -> None:
    assert isinstance(Iec62056Driver(), Driver)
    assert Iec62056Driver.name == "iec62056-21"


async def test_mode_c_readout_equals_the_simulated_meter(driver: Iec62056Driver) -> None:
    async with Iec62056TcpServer(lambda: SimulatedIecMeter(3, 0), clock=lambda: AT) as server:
        target = MeterTarget("iec-1", f"tcp://127.0.0.1:{server.port}")
        result = await driver.read(target, GENERIC, EVERYTHING, timeout=2.0)
        assert server.meters[0].readouts == 1
    want = expected(3)
    got = {r.quantity: r for r in result.readings}
    assert {q: float(r.value) for q, r in got.items()} == {
        "1-0:1.8.0": want["1.8.0"],
        "1-0:1.8.1": want["1.8.1"],
        "1-0:1.8.2": want["1.8.2"],
        "1-0:2.8.0": want["2.8.0"],
        "1-0:1.6.0": want["1.6.0"],
        "1-0:32.7.0": want["32.7.0"],
        "1-0:52.7.0": want["52.7.0"],
        "1-0:72.7.0": want["72.7.0"],
        "1-0:31.7.0": want["31.7.0"],
    }
    load = DailyCurve.for_meter(3, 0, "load", mean=0.5, base=5000.0)
    assert float(got["1-0:1.8.0"].value) == pytest.approx(load.energy(AT), abs=0.0005)
    assert got["1-0:1.8.0"].timestamp == AT  # the meter clock 0.9.1/0.9.2
    assert got["1-0:1.6.0"].timestamp == datetime(2024, 3, 5, tzinfo=UTC)  # when the maximum happened
    assert result.meter_time == AT
    missing = {p.quantity for p in GENERIC.points_for(EVERYTHING.purposes)} - set(got)
    assert sorted(p.quantity for p in result.problems) == sorted(missing)


@pytest.mark.parametrize("baud_char", ["A", "E", "Z"])  # mode B at 600 / 9600 Bd; 'Z' is mode A
async def test_modes_a_and_b_read_the_same_values(driver: Iec62056Driver, baud_char: str) -> None:
    async with Iec62056TcpServer(lambda: SimulatedIecMeter(4, 1, baud_char=baud_char), clock=lambda: AT) as server:
        target = MeterTarget("iec-ab", f"tcp://127.0.0.1:{server.port}")
        result = await driver.read(target, GENERIC, ReadRequest(), timeout=2.0)
    assert {r.quantity: float(r.value) for r in result.readings}["1-0:1.8.0"] == expected(4, 1)["1.8.0"]


async def test_device_address_from_options_query_and_profile(driver: Iec62056Driver) -> None:
    addressed = GENERIC.model_copy(update={"parameters": {**GENERIC.parameters, "device_address": "20240305"}})
    async with Iec62056TcpServer(lambda: SimulatedIecMeter(3, 0, address="20240305"), clock=lambda: AT) as server:
        url = f"tcp://127.0.0.1:{server.port}"
        for target, profile in [
            (MeterTarget("a", url, {"device_address": "20240305"}), GENERIC),
            (MeterTarget("b", f"{url}?address=20240305"), GENERIC),
            (MeterTarget("c", url), addressed),
        ]:
            result = await driver.read(target, profile, ReadRequest(), timeout=2.0)
            assert result.readings
        # Another meter's address: this one keeps quiet, and the read times out.
        started = asyncio.get_running_loop().time()
        with pytest.raises(MeterTimeoutError):
            await driver.read(MeterTarget("d", url, {"device_address": "99"}), GENERIC, ReadRequest(), timeout=0.3)
        assert asyncio.get_running_loop().time() - started < 1.5


async def test_meter_clock_in_its_own_timezone(driver: Iec62056Driver) -> None:
    cet = timezone(timedelta(hours=1))
    local = GENERIC.model_copy(update={"parameters": {**GENERIC.parameters, "timezone": "Europe/Amsterdam"}})
    meter = lambda: SimulatedIecMeter(3, 0, tz=cet)  # noqa: E731 - a one-line factory
    async with Iec62056TcpServer(meter, clock=lambda: AT) as server:
        result = await driver.read(MeterTarget("tz", f"tcp://127.0.0.1:{server.port}"), local, ReadRequest(), timeout=2)
    assert result.meter_time == AT


async def test_a_bridge_that_hangs_up_is_a_media_error(driver: Iec62056Driver) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"/GXS5")  # half an identification, then gone
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    try:
        target = MeterTarget("x", f"tcp://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        with pytest.raises(MediaError):
            await driver.read(target, GENERIC, ReadRequest(), timeout=1.0)
    finally:
        server.close()
        await server.wait_closed()


def test_mapping_rules_on_a_decoded_readout() -> None:
    readout = decode_iec62056_21_readout(
        encode_data_message(["1-0:1.8.0*255(001234.5*Wh)", "1.6.0(01.5*kW)(24-01-15 12:30)", "C.1.0(12345678)"])
    )
    points = [
        data_set_point(ProfilePoint(quantity="1-0:1.8.0", unit="kWh", source="1.8.0")),
        data_set_point(ProfilePoint(quantity="1-0:1.8.1", unit="kWh", source="1-0:1.8.0")),  # exact: no match
        data_set_point(ProfilePoint(quantity="1-0:1.6.0", unit="W", source="1.6.0", offset=-1.0)),
    ]
    readings = {r.quantity: r for r in iec_readings(readout, points, RECEIVED)}
    assert set(readings) == {"1-0:1.8.0", "1-0:1.6.0"}
    assert float(readings["1-0:1.8.0"].value) == pytest.approx(1.2345)
    assert readings["1-0:1.8.0"].timestamp == RECEIVED  # no meter clock in this readout
    assert float(readings["1-0:1.6.0"].value) == pytest.approx(1499.0)
    assert readings["1-0:1.6.0"].timestamp == datetime(2024, 1, 15, 12, 30, tzinfo=UTC)
    with pytest.raises(ProtocolError, match="none of the profile's data sets"):
        iec_readings(readout, points[1:2], RECEIVED)


@pytest.mark.parametrize(
    ("source", "options", "parameters", "message"),
    [
        ("1.8.0(", {}, {}, "not a data-set address"),
        ("1.8.0", {"index": -1}, {}, "index must be"),
        ("1.8.0", {"register": 3}, {}, "unknown IEC 62056-21 options"),
        ("1.8.0", {}, {"max_baud": 12345}, "max_baud"),
        ("1.8.0", {}, {"device_address": "a/b"}, "device address"),
        ("1.8.0", {}, {"mode": "C"}, "unknown IEC 62056-21 parameters"),
    ],
)
def test_bad_profiles_are_configuration_errors(
    source: str, options: dict[str, Any], parameters: dict[str, Any], message: str
) -> None:
    profile = DeviceProfile(
        name="bad",
        protocol="iec62056-21",
        parameters=parameters,
        points=[ProfilePoint(quantity="1-0:1.8.0", unit="kWh", source=source, options=options)],
    )
    with pytest.raises(ConfigurationError, match=message):
        Iec62056Driver().validate_profile(profile)


def test_shipped_profile_validates() -> None:
    Iec62056Driver().validate_profile(GENERIC)


@contextmanager
def meter_on_a_pty(meter: SimulatedIecMeter) -> Iterator[str]:
    """An optical probe on a pseudo-terminal talking to ``meter``; yields the device path."""
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    loop = asyncio.get_running_loop()

    def readable() -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            for output in meter.receive_data(os.read(master, 512), AT):
                if isinstance(output, MeterSend):
                    os.write(master, output.data)

    loop.add_reader(master, readable)
    try:
        yield os.ttyname(slave)
    finally:
        loop.remove_reader(master)
        os.close(master)
        os.close(slave)


async def test_mode_c_over_a_serial_line_switches_speed(driver: Iec62056Driver) -> None:
    meter = SimulatedIecMeter(3, 0)
    with meter_on_a_pty(meter) as device:
        target = MeterTarget("iec-serial", f"serial://{device}")
        result = await driver.read(target, GENERIC, ReadRequest(), timeout=2.0)
    assert {r.quantity: float(r.value) for r in result.readings}["1-0:1.8.0"] == expected(3)["1.8.0"]
    assert meter.baud == 9600  # the speed the meter offered ('5') and the profile allows (max_baud 9600)
