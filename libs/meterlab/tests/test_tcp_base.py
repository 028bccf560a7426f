"""SimulatorServer: stop() leaves no connection handler behind, wakes feeds, and logs nothing about it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from gxami_meterlab.simulators.dsmr import DsmrTcpServer, SimulatedP1Meter
from gxami_meterlab.simulators.iec62056_21 import Iec62056TcpServer, SimulatedIecMeter
from gxami_meterlab.simulators.mbus import MBusBus, MBusTcpGateway
from gxami_meterlab.simulators.tcp import SimulatorServer
from gxami_meterlab.simulators.wmbus import WMBusFeedServer, WMBusTelegramGenerator
from gxcore.protocols.iec62056_21.frames import encode_request
from gxcore.protocols.mbus.frame import ShortFrame, encode_frame

AT = datetime(2024, 3, 5, 10, 0, tzinfo=UTC)
LONG = 60.0  # a send interval no test may wait out


class Echo(SimulatorServer):
    """Sends back what it reads; ``b"boom"`` is a bug in the handler."""

    def __init__(self) -> None:
        super().__init__()
        self.finished = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(100):
                if data == b"boom":
                    raise ValueError("simulator bug")
                writer.write(data)
                await writer.drain()
        finally:
            self.finished += 1


class Ticker(SimulatorServer):
    """Pushes ``tick`` every ``interval`` s, the way the DSMR and wM-Bus feeds push."""

    def __init__(self, interval: float) -> None:
        super().__init__()
        self.interval = interval
        self.pauses: list[bool] = []
        self.ended = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                writer.write(b"tick\n")
                await writer.drain()
                self.pauses.append(await self.pause(reader, self.interval))
                if not self.pauses[-1]:
                    return
        finally:
            self.ended.set()


def pending_tasks(before: set[asyncio.Task[Any]]) -> list[asyncio.Task[Any]]:
    """Tasks started since ``before`` that have not finished, without giving the loop a turn."""
    return [t for t in asyncio.all_tasks() - before if not t.done() and t is not asyncio.current_task()]


async def test_stop_waits_for_a_handler_blocked_in_read() -> None:
    before = set(asyncio.all_tasks())
    server = Echo()
    await server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(b"hello")
        assert await asyncio.wait_for(reader.readexactly(5), 2) == b"hello"
        assert server.connections == 1
        await server.stop()
        # stop() itself waited: the handler has run its finally and no task of the server is left.
        assert server.finished == 1
        assert server.connections == 0
        assert pending_tasks(before) == []
        assert await asyncio.wait_for(reader.read(), 2) == b""  # the client sees the connection go
    finally:
        writer.close()
        await writer.wait_closed()


async def test_stop_wakes_a_feed_in_the_middle_of_its_pause() -> None:
    before = set(asyncio.all_tasks())
    server = Ticker(LONG)
    await server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        assert await asyncio.wait_for(reader.readline(), 2) == b"tick\n"
        loop = asyncio.get_running_loop()
        started = loop.time()
        await server.stop()
        assert loop.time() - started < 1.0
        assert server.ended.is_set()
        assert server.pauses == [False]
        assert pending_tasks(before) == []
    finally:
        writer.close()
        await writer.wait_closed()


async def test_a_hang_up_ends_the_pause_at_once_and_talk_does_not() -> None:
    async with Ticker(0.05) as fast:
        reader, writer = await asyncio.open_connection("127.0.0.1", fast.port)
        writer.write(b"anything the client says is dropped" * 500)
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(10), 2) == b"tick\ntick\n"
        writer.close()
        await writer.wait_closed()
    assert fast.pauses[0] is True
    async with Ticker(LONG) as slow:
        reader, writer = await asyncio.open_connection("127.0.0.1", slow.port)
        assert await asyncio.wait_for(reader.readline(), 2) == b"tick\n"
        writer.close()
        await writer.wait_closed()
        await asyncio.wait_for(slow.ended.wait(), 2)  # long before the 60 s interval is up
        assert slow.pauses == [False]


async def test_port_is_known_only_while_listening() -> None:
    server = Echo()
    with pytest.raises(RuntimeError, match="Echo is not started"):
        _ = server.port
    await server.stop()  # stopping a server that never started does nothing
    async with server:
        assert server.port > 0
        with pytest.raises(RuntimeError, match="already started"):
            await server.start()
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.port
    await server.stop()
    async with server:  # a stopped server starts again
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"again")
        assert await asyncio.wait_for(reader.readexactly(5), 2) == b"again"
        writer.close()
        await writer.wait_closed()


async def test_a_handler_bug_is_reported_and_the_listener_lives_on() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        async with Echo() as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"boom")
            assert await asyncio.wait_for(reader.read(), 2) == b""  # the buggy handler's connection closes
            writer.close()
            await writer.wait_closed()
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"still here")
            assert await asyncio.wait_for(reader.readexactly(10), 2) == b"still here"
            writer.close()
            await writer.wait_closed()
    finally:
        loop.set_exception_handler(previous)
    assert [c["message"] for c in reported] == ["Echo connection handler failed"]
    assert isinstance(reported[0]["exception"], ValueError)


async def test_connections_racing_stop_leave_nothing_behind() -> None:
    before = set(asyncio.all_tasks())
    server = Echo()
    for _ in range(20):
        await server.start()
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        await server.stop()
        writer.close()
        await writer.wait_closed()
    for _ in range(3):
        await asyncio.sleep(0)  # asyncio's own accept step may still be finishing; ours never is
    assert pending_tasks(before) == []
    assert server.connections == 0


# One client mid-session with each real simulator; the first exchange proves its handler is running.
Exchange = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bytes]]


async def first_dsmr_telegram(reader: asyncio.StreamReader, _: asyncio.StreamWriter) -> bytes:
    return await reader.readuntil(b"!")


async def first_wmbus_line(reader: asyncio.StreamReader, _: asyncio.StreamWriter) -> bytes:
    return await reader.readline()


async def iec_identification(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    writer.write(encode_request())
    return await reader.readline()


async def mbus_ack(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    writer.write(encode_frame(ShortFrame(0x40, 1)))  # SND_NKE to primary address 1
    return await reader.readexactly(1)


SIMULATORS: dict[str, tuple[Callable[[], SimulatorServer], Exchange, bytes]] = {
    "dsmr": (
        lambda: DsmrTcpServer(SimulatedP1Meter(5), interval=LONG, clock=lambda: AT),
        first_dsmr_telegram,
        b"/GXS5",
    ),
    "wmbus": (lambda: WMBusFeedServer(WMBusTelegramGenerator(5, 2), interval=LONG), first_wmbus_line, b""),
    "iec62056-21": (
        lambda: Iec62056TcpServer(lambda: SimulatedIecMeter(5), clock=lambda: AT, idle_timeout=LONG),
        iec_identification,
        b"/GXS5",
    ),
    "mbus": (lambda: MBusTcpGateway(MBusBus(5, 2)), mbus_ack, b"\xe5"),
}


@pytest.mark.parametrize("name", SIMULATORS)
async def test_simulators_stop_cleanly_with_a_client_attached(name: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="asyncio")
    make, exchange, starts_with = SIMULATORS[name]
    before = set(asyncio.all_tasks())
    server = make()
    await server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        assert (await asyncio.wait_for(exchange(reader, writer), 2)).startswith(starts_with)
        assert server.connections == 1
        loop = asyncio.get_running_loop()
        started = loop.time()
        await server.stop()
        assert loop.time() - started < 1.0
        assert server.connections == 0
        assert pending_tasks(before) == []
        await asyncio.wait_for(reader.read(), 2)  # the rest of what was sent, then the end
        assert reader.at_eof()
    finally:
        writer.close()
        await writer.wait_closed()
    noise = [r for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.WARNING]
    assert noise == [], [r.getMessage() for r in noise]
    assert "Exception in callback" not in caplog.text
