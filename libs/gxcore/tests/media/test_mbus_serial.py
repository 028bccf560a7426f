"""End to end: the sans-IO M-Bus master reads the simulated bus through SerialPort over a pty at 2400 8E1."""

from __future__ import annotations

import asyncio
import contextlib
import termios
from collections.abc import AsyncIterator

import pytest

from gxami_meterlab.simulators.mbus import MBusBus
from gxcore.drivers.loop import drive
from gxcore.errors import MeterTimeoutError
from gxcore.media import Medium, open_medium
from gxcore.protocols.mbus.frame import MAX_FRAME, decode_frame
from gxcore.protocols.mbus.master import (
    Event,
    Failed,
    MasterConfig,
    MasterOperation,
    MBusMaster,
    ReadComplete,
    SearchComplete,
)

from .conftest import PtyPeer


async def serve_bus(bus: MBusBus, peer: PtyPeer, requests: list[bytes]) -> None:
    """The slaves' side of the line: answer each complete request frame as the bus would."""
    buffer = bytearray()
    while True:
        try:
            buffer += await peer.read(512, timeout=3600)
        except BlockingIOError:
            continue  # woken without data (the line was merely touched)
        while buffer:
            consumed, frame = decode_frame(buffer)
            if consumed == 0:
                break
            request = bytes(buffer[:consumed])
            del buffer[:consumed]
            if frame is not None:
                requests.append(request)
                reply = bus.respond(request)
                if reply:
                    peer.write(reply)
        del buffer[: max(0, len(buffer) - MAX_FRAME)]


async def run(master: MBusMaster, medium: Medium) -> Event:
    """Drive the started master over ``medium`` through the driver loop until it reports an event."""
    operation = MasterOperation(master)
    await drive(operation, medium, idle_timeout=5.0, clock=asyncio.get_running_loop().time)
    assert operation.outcome is not None
    return operation.outcome


@pytest.fixture
async def line(pty_peer: PtyPeer) -> AsyncIterator[tuple[MBusBus, Medium, list[bytes]]]:
    bus = MBusBus(seed=7, count=4)
    requests: list[bytes] = []
    slaves = asyncio.create_task(serve_bus(bus, pty_peer, requests))
    medium = open_medium(f"serial://{pty_peer.path}?baud=2400&parity=E&stopbits=1&bytesize=8")
    async with medium:
        yield bus, medium, requests
    slaves.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await slaves


async def test_read_by_primary_address_over_serial(
    line: tuple[MBusBus, Medium, list[bytes]], pty_peer: PtyPeer
) -> None:
    bus, medium, requests = line
    assert medium.describe() == f"serial {pty_peer.path} 2400 8E1"
    assert termios.tcgetattr(pty_peer.slave)[5] == termios.B2400
    master = MBusMaster()
    master.read_primary(1, now=asyncio.get_running_loop().time())
    event = await run(master, medium)
    assert isinstance(event, ReadComplete), event
    telegram = event.telegrams[0]
    assert telegram.secondary_address == str(bus.meters[0].secondary)
    energy = [r for r in telegram.records if r.quantity == "6-0:1.0.0"]
    assert energy, [r.quantity for r in telegram.records]
    assert requests[0] == bytes.fromhex("10400141" + "16")  # SND_NKE to address 1


async def test_multi_telegram_and_secondary_reads_over_serial(line: tuple[MBusBus, Medium, list[bytes]]) -> None:
    bus, medium, _ = line
    clock = asyncio.get_running_loop().time
    history = next(meter for meter in bus.meters if meter.profile == "heat-history")
    master = MBusMaster()
    master.read_primary(history.primary_address, now=clock())
    event = await run(master, medium)
    assert isinstance(event, ReadComplete), event
    assert len(event.telegrams) == 3
    assert [t.more_records_follow for t in event.telegrams] == [True, True, False]

    water = next(meter for meter in bus.meters if meter.profile == "water")
    master.read_secondary(water.secondary, now=clock())
    event = await run(master, medium)
    assert isinstance(event, ReadComplete), event
    assert event.telegrams[0].secondary_address == str(water.secondary)


async def test_search_and_silence_over_serial(line: tuple[MBusBus, Medium, list[bytes]]) -> None:
    bus, medium, _ = line
    clock = asyncio.get_running_loop().time
    # 30 ms was too short for a pseudo-terminal on a busy 2-core machine with the loop in debug mode
    master = MBusMaster(MasterConfig(reply_timeout=0.3, transfer_time=0.5))
    master.search(now=clock())
    event = await run(master, medium)
    assert isinstance(event, SearchComplete), event
    assert sorted(map(str, event.found)) == sorted(str(meter.secondary) for meter in bus.meters)

    master.read_primary(200, now=clock())  # nobody there
    event = await run(master, medium)
    assert isinstance(event, Failed)
    assert isinstance(event.error, MeterTimeoutError)
