"""TcpListener: concurrent dial-ins, garbage, failing handlers, idle timeout, connection limit."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from gxcore.errors import ConfigurationError, FramingError, MediaError
from gxcore.media import ListenerEvent, ListenerSettings, Medium, TcpListener, open_listener

HELLO = b"\x00\x01\x00\x01\x00\x01\x00\x04push"  # a DLMS-wrapper-shaped greeting


async def greet_and_echo(medium: Medium) -> None:
    """Expect the greeting, then echo until the meter hangs up."""
    greeting = await medium.receive_exactly(len(HELLO), timeout=2)
    if greeting != HELLO:
        raise FramingError("not a greeting", offset=0, frame=greeting)
    await medium.send(b"ok")
    while True:
        try:
            data = await medium.receive(1024, timeout=2)
        except MediaError:
            return
        await medium.send(data)


async def dial(port: int, payload: bytes = HELLO) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    return reader, writer


async def hang_up(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def closed_by_listener(reader: asyncio.StreamReader) -> bool:
    """True when the listener closed the connection (EOF, or a reset if our bytes were unread)."""
    try:
        return await asyncio.wait_for(reader.read(10), 2) == b""
    except ConnectionResetError:
        return True


async def wait_for(condition: object, what: str, timeout: float = 2.0) -> None:
    assert callable(condition)
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_many_meters_at_once() -> None:
    events: list[ListenerEvent] = []
    settings = ListenerSettings("127.0.0.1", 0, max_connections=64)
    async with TcpListener(settings, greet_and_echo, on_event=events.append) as listener:

        async def meter(n: int) -> bytes:
            reader, writer = await dial(listener.port)
            assert await reader.readexactly(2) == b"ok"
            writer.write(f"reading {n}".encode())
            reply = await reader.readexactly(len(f"reading {n}"))
            await hang_up(writer)
            return reply

        replies = await asyncio.gather(*(meter(n) for n in range(40)))
        assert replies == [f"reading {n}".encode() for n in range(40)]
        await wait_for(lambda: listener.counts["done"] == 40, "all done")
    assert listener.counts["accepted"] == 40
    assert [e.kind for e in events].count("done") == 40
    assert listener.active == 0


async def test_garbage_then_close_and_a_raising_handler_do_not_kill_it() -> None:
    events: list[ListenerEvent] = []
    async with TcpListener(ListenerSettings("127.0.0.1", 0), greet_and_echo, on_event=events.append) as listener:
        _, writer = await dial(listener.port, b"\xff\xfe garbage \x00\x00\x00\x00\x00\x00")
        await hang_up(writer)
        _, writer = await dial(listener.port, b"\x00\x01")  # half a greeting, then gone
        await hang_up(writer)
        await wait_for(lambda: listener.counts["failed"] == 2, "both failed")
        failures = [e.error for e in events if e.kind == "failed"]
        assert isinstance(failures[0], FramingError)
        assert isinstance(failures[1], MediaError)
        reader, writer = await dial(listener.port)
        assert await reader.readexactly(2) == b"ok"
        await hang_up(writer)


async def test_handler_raising_and_a_raising_hook_do_not_kill_it() -> None:
    calls = 0

    async def flaky(medium: Medium) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("bug in a handler")
        await medium.send(b"fine")

    def broken_hook(event: ListenerEvent) -> None:
        raise ValueError("bug in a metrics hook")

    async with TcpListener(ListenerSettings("127.0.0.1", 0), flaky, on_event=broken_hook) as listener:
        reader, writer = await dial(listener.port)
        assert await closed_by_listener(reader)  # after the handler failed
        await hang_up(writer)
        reader, writer = await dial(listener.port)
        assert await reader.read(10) == b"fine"
        await hang_up(writer)
        await wait_for(lambda: listener.counts["done"] == 1, "second done")
        assert listener.counts["failed"] == 1


async def test_idle_connection_is_closed_and_handler_cancelled() -> None:
    cancelled = asyncio.Event()

    async def patient(medium: Medium) -> None:
        try:
            await medium.receive(10, timeout=30)  # far longer than the idle timeout
            while True:
                await medium.send(await medium.receive(10, timeout=30))
        except asyncio.CancelledError:
            cancelled.set()
            raise

    settings = ListenerSettings("127.0.0.1", 0, idle_timeout=0.3)
    async with TcpListener(settings, patient) as listener:
        reader, writer = await dial(listener.port, b"x")
        await asyncio.sleep(0.2)
        started = time.monotonic()
        writer.write(b"still here")  # activity: the idle clock restarts (else it would fire in 0.1 s)
        assert await reader.readexactly(10) == b"still here"
        assert await closed_by_listener(reader)
        assert 0.25 <= time.monotonic() - started < 1.0
        assert cancelled.is_set()
        assert listener.counts["idle"] == 1
        await hang_up(writer)


async def test_max_connections_is_enforced() -> None:
    release = asyncio.Event()

    async def hold(medium: Medium) -> None:
        await medium.send(b"in")
        await release.wait()

    settings = ListenerSettings("127.0.0.1", 0, max_connections=2)
    async with TcpListener(settings, hold) as listener:
        held = [await dial(listener.port) for _ in range(2)]
        for reader, _ in held:
            assert await reader.readexactly(2) == b"in"
        reader, writer = await dial(listener.port)
        assert await closed_by_listener(reader)
        await hang_up(writer)
        assert listener.counts["rejected"] == 1
        assert listener.active == 2
        release.set()
        await wait_for(lambda: listener.active == 0, "slots free")
        reader, writer = await dial(listener.port)
        assert await reader.readexactly(2) == b"in"
        await hang_up(writer)
        for _, w in held:
            await hang_up(w)


async def test_close_cancels_running_handlers() -> None:
    started = asyncio.Event()

    async def forever(medium: Medium) -> None:
        started.set()
        await asyncio.sleep(3600)

    listener = TcpListener(ListenerSettings("127.0.0.1", 0), forever)
    await listener.start()
    reader, writer = await dial(listener.port)
    await asyncio.wait_for(started.wait(), 2)
    await asyncio.wait_for(listener.close(), 2)
    assert listener.active == 0
    assert await closed_by_listener(reader)
    await hang_up(writer)


async def test_from_url_and_bad_bind() -> None:
    async def nothing(medium: Medium) -> None:
        return None

    listener = open_listener("listen://127.0.0.1:0?max_connections=3&idle_timeout=5", nothing)
    assert listener.settings == ListenerSettings("127.0.0.1", 0, max_connections=3, idle_timeout=5.0)
    async with listener:
        clash = open_listener(f"listen://127.0.0.1:{listener.port}", nothing)
        with pytest.raises(MediaError, match="cannot listen"):
            await clash.start()
    with pytest.raises(ConfigurationError, match="max_connections"):
        open_listener("listen://127.0.0.1:0?max_connections=0", nothing)
    with pytest.raises(ConfigurationError, match="open_listener needs a listen"):
        open_listener("tcp://127.0.0.1:1", nothing)
