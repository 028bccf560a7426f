"""Every field driver reads over a medium it is handed (``read(..., medium=...)``): one end of a memory
pair, with a meterlab simulator answering on the other. The driver uses the medium and leaves it open."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from gxami_meterlab.simulators.dsmr import SimulatedP1Meter
from gxami_meterlab.simulators.iec62056_21 import MeterBaudChange, MeterSend, SimulatedIecMeter
from gxami_meterlab.simulators.mbus import MBusBus, MBusTcpGateway, register_value
from gxami_meterlab.simulators.wmbus import WMBusTelegramGenerator, volume_litres
from gxcore.drivers import MeterTarget, ReadRequest
from gxcore.drivers.dsmr import DsmrDriver, dsmr_readings, obis_point
from gxcore.drivers.iec62056_21 import Iec62056Driver
from gxcore.drivers.loop import drive
from gxcore.drivers.mbus import MBusDriver
from gxcore.drivers.wmbus import WMBusDriver
from gxcore.errors import MediaError, MeterTimeoutError
from gxcore.media import Direction, MemoryMedium, memory_pair
from gxcore.profiles import ProfileCatalog
from gxcore.protocols.dsmr import P1Reader, decode_dsmr_telegram
from gxcore.protocols.dsmr.first import FirstTelegram
from gxcore.protocols.mbus.frame import MAX_FRAME, decode_frame
from gxcore.protocols.mbus.master import MasterConfig, MasterOperation, MBusMaster, SearchComplete

AT = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)
READ_AT = datetime(2024, 1, 15, 12, 0, 30, tzinfo=UTC)
CATALOG = ProfileCatalog()
EVERYTHING = ReadRequest(purposes=frozenset({"billing", "instantaneous", "diagnostics"}))


@asynccontextmanager
async def peer(far: MemoryMedium, answer: Callable[[bytes], bytes]) -> AsyncIterator[None]:
    """Run a scripted meter on ``far``: each chunk received is answered with ``answer(chunk)``."""

    async def serve() -> None:
        with contextlib.suppress(MediaError):
            while True:
                reply = answer(await far.receive(4096, timeout=30))
                if reply:
                    await far.send(reply)

    task = asyncio.create_task(serve())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def mbus_answers(bus: MBusBus, requests: list[bytes]) -> Callable[[bytes], bytes]:
    """The bus behind a gateway: complete request frames in, the slaves' reply bytes out."""
    buffer = bytearray()

    def answer(data: bytes) -> bytes:
        buffer.extend(data)
        out = bytearray()
        while True:
            consumed, frame = decode_frame(buffer)
            if consumed == 0:
                break
            request = bytes(buffer[:consumed])
            del buffer[:consumed]
            if frame is not None:
                requests.append(request)
                out += bus.respond(request) or b""
        del buffer[: max(0, len(buffer) - MAX_FRAME)]
        return bytes(out)

    return answer


# -- M-Bus ------------------------------------------------------------------------------


async def test_mbus_reads_two_meters_over_one_given_medium_and_leaves_it_open() -> None:
    bus = MBusBus(seed=7, count=4)
    requests: list[bytes] = []
    traffic: list[tuple[Direction, bytes]] = []
    near, far = memory_pair("gateway", on_traffic=lambda d, b: traffic.append((d, b)))
    driver = MBusDriver(clock=lambda: READ_AT)
    heat, water = CATALOG.get("generic-mbus-heat"), CATALOG.get("generic-mbus-water")
    async with peer(far, mbus_answers(bus, requests)):
        # The URL still names the meter (address=); the bytes go over the medium given.
        first = await driver.read(
            MeterTarget("heat-1", "tcp://gw.invalid:1?address=1"), heat, ReadRequest(), timeout=1.0, medium=near
        )
        second_target = MeterTarget(
            "water-2", "tcp://gw.invalid:1", {"secondary_address": str(bus.meters[1].secondary)}
        )
        second = await driver.read(second_target, water, ReadRequest(), timeout=1.0, medium=near)
    assert near.is_open  # not the driver's to close
    assert {r.quantity: r.value for r in first.readings}["6-0:1.0.0"] == round(register_value(7, 0, AT))
    assert first.meter_time == AT
    assert second.readings
    assert second.readings[0].extra["meter"] == bus.meters[1].secondary.id_digits
    assert len(requests) == 4  # SND_NKE + REQ_UD2, selection + REQ_UD2
    sent = b"".join(b for d, b in traffic if d == "tx")
    assert sent == b"".join(requests)  # the medium's hook saw every frame the master sent


async def test_mbus_silent_bus_over_a_given_medium_times_out_after_the_retries() -> None:
    near, far = memory_pair()
    requests: list[bytes] = []
    async with peer(far, mbus_answers(MBusBus(seed=7, count=1), requests)):
        target = MeterTarget("nobody", "tcp://gw.invalid:1?address=42")
        with pytest.raises(MeterTimeoutError, match="no reply to SND_NKE after 3 attempts") as info:
            await MBusDriver().read(target, CATALOG.get("generic-mbus-heat"), ReadRequest(), timeout=0.05, medium=near)
    assert info.value.meter_id == "nobody"
    assert len(requests) == 3


async def test_mbus_search_is_one_more_core_for_the_same_loop() -> None:
    bus = MBusBus(seed=7, count=4)
    near, far = memory_pair()
    async with peer(far, mbus_answers(bus, [])):
        master = MBusMaster(MasterConfig(reply_timeout=0.02, transfer_time=0.05, retries=0))  # no line latency
        master.search(asyncio.get_running_loop().time())
        operation = MasterOperation(master)
        await drive(operation, near, idle_timeout=1.0, clock=asyncio.get_running_loop().time)
    result = operation.result()
    assert isinstance(result, SearchComplete)
    assert sorted(map(str, result.found)) == sorted(str(m.secondary) for m in bus.meters)


async def test_mbus_traffic_hook_of_the_driver_goes_to_the_medium_it_opens() -> None:
    counted: dict[Direction, int] = {"tx": 0, "rx": 0, "discard": 0}

    def count(direction: Direction, data: bytes) -> None:
        counted[direction] += len(data)

    driver = MBusDriver(clock=lambda: READ_AT, on_traffic=count)
    async with MBusTcpGateway(MBusBus(seed=7, count=2)) as gateway:
        target = MeterTarget("heat-1", f"tcp://127.0.0.1:{gateway.port}?address=1")
        result = await driver.read(target, CATALOG.get("generic-mbus-heat"), ReadRequest(), timeout=1.0)
    assert result.readings
    assert counted["tx"] == 5 + 5  # SND_NKE and REQ_UD2 are short frames of five bytes
    assert counted["rx"] > 1 + 20  # E5 and one long frame


# -- IEC 62056-21 -------------------------------------------------------------------------


def iec_answers(
    meter: SimulatedIecMeter, client: MemoryMedium, seen: list[tuple[int, int]]
) -> Callable[[bytes], bytes]:
    """The meter behind an optical head; records (client line speed, meter speed) at each reply."""

    def answer(data: bytes) -> bytes:
        out = bytearray()
        for output in meter.receive_data(data, AT):
            if isinstance(output, MeterSend):
                line = next((c.baudrate for c in reversed(client.line_changes) if c.baudrate), 0)
                seen.append((line, meter.baud))
                out += output.data
            else:
                assert isinstance(output, MeterBaudChange)
        return bytes(out)

    return answer


@pytest.mark.parametrize(("baud_char", "bauds"), [("5", [300, 9600]), ("4", [300, 4800])])
async def test_iec_mode_c_switches_the_line_speed_between_ack_and_readout(baud_char: str, bauds: list[int]) -> None:
    meter = SimulatedIecMeter(3, 0, baud_char=baud_char)
    near, far = memory_pair("probe", serial=True)
    seen: list[tuple[int, int]] = []
    async with peer(far, iec_answers(meter, near, seen)):
        target = MeterTarget("iec-1", "serial:///dev/optical0")
        result = await Iec62056Driver(clock=lambda: READ_AT).read(
            target, CATALOG.get("generic-iec62056-21"), ReadRequest(), timeout=1.0, medium=near
        )
    assert [c.baudrate for c in near.line_changes] == bauds
    assert meter.baud == bauds[-1]
    assert seen == [(300, 300), (bauds[-1], bauds[-1])]  # identification at 300, readout at the new speed
    assert meter.readouts == 1
    assert result.readings
    assert near.is_open


async def test_iec_mode_b_switches_before_the_readout_and_mode_a_never() -> None:
    for baud_char, bauds in (("E", [300, 9600]), ("J", [300])):  # B: 'E' = 9600; A: any other letter, no switch
        meter = SimulatedIecMeter(3, 0, baud_char=baud_char)
        near, far = memory_pair(serial=True)
        async with peer(far, iec_answers(meter, near, [])):
            result = await Iec62056Driver().read(
                MeterTarget("iec", "serial:///dev/x"), CATALOG.get("generic-iec62056-21"), ReadRequest(), timeout=1.0,
                medium=near,
            )  # fmt: skip
        assert result.readings
        assert [c.baudrate for c in near.line_changes] == bauds


async def test_iec_over_a_medium_without_line_control_reads_and_switches_nothing() -> None:
    meter = SimulatedIecMeter(3, 0)
    near, far = memory_pair()  # like a TCP bridge: the bridge retunes its own UART
    async with peer(far, iec_answers(meter, near, [])):
        result = await Iec62056Driver().read(
            MeterTarget("iec", "tcp://bridge.invalid:1"), CATALOG.get("generic-iec62056-21"), ReadRequest(),
            timeout=1.0, medium=near,
        )  # fmt: skip
    assert result.readings
    assert meter.baud == 9600


# -- DSMR ---------------------------------------------------------------------------------


async def test_dsmr_takes_the_next_telegram_of_a_given_stream_twice() -> None:
    meter = SimulatedP1Meter(3, 0, variant="5.0")
    dsmr5 = CATALOG.get("dsmr5")
    near, far = memory_pair("p1")
    driver = DsmrDriver(clock=lambda: READ_AT)
    target = MeterTarget("p1-home", "serial:///dev/ttyUSB0")
    await far.send(b"\x00garbage from the middle of a telegram\r\n" + meter.telegram_at(AT))
    first = await driver.read(target, dsmr5, EVERYTHING, timeout=1.0, medium=near)
    later = AT + timedelta(seconds=1)
    await far.send(meter.telegram_at(later))
    second = await driver.read(target, dsmr5, EVERYTHING, timeout=1.0, medium=near)
    points = [obis_point(p) for p in dsmr5.points_for(EVERYTHING.purposes)]
    assert first.readings == dsmr_readings(decode_dsmr_telegram(meter.telegram_at(AT)), points, READ_AT)
    assert (first.meter_time, second.meter_time) == (AT, later)
    assert near.is_open


async def test_dsmr_quiet_stream_times_out_and_a_closed_one_is_a_media_error() -> None:
    near, far = memory_pair()
    target = MeterTarget("p1", "tcp://bridge.invalid:1")
    with pytest.raises(MeterTimeoutError, match=r"no valid P1 telegram within 0\.05 s"):
        await DsmrDriver().read(target, CATALOG.get("dsmr5"), ReadRequest(), timeout=0.05, medium=near)
    await far.close()
    with pytest.raises(MediaError, match="closed by peer"):
        await DsmrDriver().read(target, CATALOG.get("dsmr5"), ReadRequest(), timeout=1.0, medium=near)


async def test_p1_reader_core_through_the_loop_keeps_its_buffer_across_reads() -> None:
    meter = SimulatedP1Meter(9, 1, variant="5.0")
    raw = meter.telegram_at(AT)
    near, far = memory_pair()
    reader = P1Reader()
    clock = asyncio.get_running_loop().time
    await far.send(raw[:50])  # the first read sees half a telegram only
    core = FirstTelegram(reader, now=clock(), wait=0.05)
    await drive(core, near, idle_timeout=1.0, clock=clock)
    with pytest.raises(MeterTimeoutError):
        core.result()
    await far.send(raw[50:])
    core = FirstTelegram(reader, now=clock(), wait=1.0)
    await drive(core, near, idle_timeout=1.0, clock=clock)
    assert core.result().raw == raw.rstrip(b"\r\n")


# -- wM-Bus -------------------------------------------------------------------------------


async def test_wmbus_waits_on_a_given_feed_for_its_meter() -> None:
    generator = WMBusTelegramGenerator(seed=4, count=6)
    meter = generator.meters[5]  # odd index: not encrypted
    near, far = memory_pair("receiver")
    others = [t for i, t in enumerate(generator.telegrams(AT)) if i != 5]
    await far.send(b"not hex\n" + b"".join(t.hex().encode() + b"\n" for t in others))
    await far.send(generator.telegram(5, AT).hex().upper().encode() + b"\n")
    target = MeterTarget(meter.id, "tcp://receiver.invalid:1")
    result = await WMBusDriver(clock=lambda: READ_AT).read(
        target, CATALOG.get("generic-wmbus-water"), ReadRequest(), timeout=1.0, medium=near
    )
    assert [(r.quantity, r.value) for r in result.readings] == [("8-0:1.0.0", Decimal(volume_litres(4, 5, AT)) / 1000)]
    assert result.meter_time == AT
    assert near.is_open


async def test_wmbus_feed_framing_comes_from_the_target_url_also_over_a_given_medium() -> None:
    generator = WMBusTelegramGenerator(seed=4, count=2)
    meter = generator.meters[1]
    raw = generator.telegram(1, AT, with_crc=True)
    near, far = memory_pair()
    await far.send(len(raw).to_bytes(2, "big") + raw)
    target = MeterTarget(meter.id, "tcp://receiver.invalid:1?framing=length&crc=present")
    result = await WMBusDriver().read(
        target, CATALOG.get("generic-wmbus-water"), ReadRequest(), timeout=1.0, medium=near
    )
    assert result.readings[0].value == Decimal(volume_litres(4, 1, AT)) / 1000
    with pytest.raises(MeterTimeoutError, match=f"no telegram from wM-Bus meter {meter.id} within 0.05 s"):
        await WMBusDriver().read(target, CATALOG.get("generic-wmbus-water"), ReadRequest(), timeout=0.05, medium=near)
