"""The DSMR simulator: deterministic telegrams for every variant and a P1-to-TCP bridge server."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from gxami_meterlab.simulators.dsmr import VARIANTS, DsmrTcpServer, SimulatedP1Meter
from gxcore.drivers import MeterTarget, ReadRequest
from gxcore.drivers.dsmr import DsmrDriver, dsmr_readings, obis_point
from gxcore.drivers.loop import drive
from gxcore.errors import MeterTimeoutError
from gxcore.media import open_medium
from gxcore.profiles import ProfileCatalog
from gxcore.protocols.dsmr import P1Reader, decode_dsmr_telegram
from gxcore.protocols.dsmr.first import FirstTelegram

AT = datetime(2024, 10, 27, 0, 40, tzinfo=UTC)  # inside the repeated hour of the autumn switch
EXPECTED_VARIANT = {
    "2.2": "dsmr2.2/3",
    "3": "dsmr2.2/3",
    "4.2": "dsmr4",
    "5.0": "dsmr5",
    "e-mucs": "e-mucs",
    "smarty": "smarty",
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_same_inputs_same_bytes_and_other_seed_other_bytes(variant: str) -> None:
    first = SimulatedP1Meter(42, 7, variant=variant).telegram_at(AT)
    assert SimulatedP1Meter(42, 7, variant=variant).telegram_at(AT) == first
    assert SimulatedP1Meter(43, 7, variant=variant).telegram_at(AT) != first
    assert SimulatedP1Meter(42, 8, variant=variant).telegram_at(AT) != first


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_decodes_with_its_clock_and_crc(variant: str) -> None:
    telegram = decode_dsmr_telegram(SimulatedP1Meter(1, 0, variant=variant).telegram_at(AT))
    assert telegram.variant == EXPECTED_VARIANT[variant]
    assert (telegram.crc is None) == (variant in ("2.2", "3"))
    if variant not in ("2.2", "3"):
        assert telegram.timestamp == AT
    media = {r.medium for r in telegram.records}
    assert "electricity" in media
    assert "gas" in media


def test_variants_carry_their_special_objects() -> None:
    emucs = decode_dsmr_telegram(SimulatedP1Meter(3, variant="e-mucs").telegram_at(AT))
    assert len(emucs.find("0-0:98.1.0")) == 3
    assert emucs.find("1-0:1.6.0")
    assert emucs.find("1-0:1.4.0")
    assert emucs.find("0-2:24.2.1")[0].medium == "water"
    v42 = decode_dsmr_telegram(SimulatedP1Meter(3, variant="4.2").telegram_at(AT))
    assert len(v42.find("1-0:99.97.0")) == 2
    (heat,) = v42.find("0-2:24.2.1")
    assert (heat.medium, heat.unit) == ("heat", "GJ")
    v22 = decode_dsmr_telegram(SimulatedP1Meter(3, variant="2.2").telegram_at(AT))
    assert v22.find("0-1:24.3.0")[0].timestamp == AT.replace(minute=0)


@pytest.mark.parametrize("variant", ["4.2", "smarty"])
def test_registers_never_run_backwards(variant: str) -> None:
    meter = SimulatedP1Meter(11, 4, variant=variant)
    quantity = "1-0:1.8.1" if variant == "4.2" else "1-0:1.8.0"
    values = []
    for minutes in range(0, 3 * 24 * 60, 37):
        (record,) = decode_dsmr_telegram(meter.telegram_at(AT + timedelta(minutes=minutes))).find(quantity)
        assert isinstance(record.value, Decimal)
        values.append(record.value)
    assert values == sorted(values)
    assert values[0] < values[-1]


def test_naive_instant_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        SimulatedP1Meter(1).telegram_at(datetime(2024, 1, 1))


async def test_tcp_bridge_pushes_telegrams() -> None:
    meter = SimulatedP1Meter(9, 1, variant="5.0")
    async with (
        DsmrTcpServer(meter, port=0, interval=0.05, clock=lambda: AT) as server,
        open_medium(f"tcp://127.0.0.1:{server.port}") as medium,
    ):
        clock = asyncio.get_running_loop().time
        p1 = P1Reader()
        first = FirstTelegram(p1, now=clock(), wait=2.0)
        await drive(first, medium, idle_timeout=2.0, clock=clock)
        second = FirstTelegram(p1, now=clock(), wait=2.0)
        await drive(second, medium, idle_timeout=2.0, clock=clock)
    assert first.result().raw == meter.telegram_at(AT).rstrip(b"\r\n")
    assert second.result().timestamp == AT


async def test_the_driver_reads_the_bridge_twice_over_one_connection() -> None:
    meter = SimulatedP1Meter(9, 1, variant="5.0")
    dsmr5 = ProfileCatalog().get("dsmr5")
    driver = DsmrDriver(clock=lambda: AT)
    async with DsmrTcpServer(meter, port=0, interval=0.05, clock=lambda: AT) as server:
        target = MeterTarget("p1", f"tcp://127.0.0.1:{server.port}")
        async with open_medium(target.url) as medium:
            first = await driver.read(target, dsmr5, ReadRequest(), timeout=2.0, medium=medium)
            second = await driver.read(target, dsmr5, ReadRequest(), timeout=2.0, medium=medium)
        assert server.connections == 1
    points = [obis_point(p) for p in dsmr5.points_for(ReadRequest().purposes)]
    assert first.readings == dsmr_readings(decode_dsmr_telegram(meter.telegram_at(AT)), points, AT)
    assert second.readings == first.readings  # the simulator's clock stands still
    assert first.meter_time == AT


async def test_read_times_out_on_a_silent_bridge() -> None:
    accepted: list[asyncio.StreamWriter] = []
    server = await asyncio.start_server(lambda r, w: accepted.append(w), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(MeterTimeoutError, match="no valid P1 telegram"):
            await DsmrDriver().read(
                MeterTarget("p1", f"tcp://127.0.0.1:{port}"), ProfileCatalog().get("dsmr5"), ReadRequest(), timeout=0.1
            )
    finally:
        for w in accepted:
            w.close()
            await w.wait_closed()
        server.close()
        await server.wait_closed()
