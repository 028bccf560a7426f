"""Peers for the media tests: a local TCP server and the far end of a pseudo-terminal."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

ServeFn = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class TcpPeer:
    """A local asyncio TCP server whose per-connection behaviour a test chooses."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, serve: ServeFn) -> int:
        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.writers.append(writer)
            task = asyncio.current_task()
            assert task is not None
            self._tasks.add(task)
            try:
                await serve(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()
                self._tasks.discard(task)

        self.server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self.writers:
            writer.close()
        if self.server is not None:
            await self.server.wait_closed()
        await asyncio.sleep(0)


@pytest.fixture
async def tcp_peer() -> AsyncIterator[TcpPeer]:
    peer = TcpPeer()
    yield peer
    await peer.stop()


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Send back whatever arrives until the client closes."""
    while data := await reader.read(4096):
        writer.write(data)
        await writer.drain()


class PtyPeer:
    """The master side of a pseudo-terminal: what a meter or a bus would be on a real port."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)
        self._closed = False

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self.master, view)
            view = view[written:]

    async def read(self, n: int = 4096, *, timeout: float = 2.0) -> bytes:
        """Whatever is readable (at most ``n`` bytes), waiting up to ``timeout`` for the first byte."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(BlockingIOError):
            return os.read(self.master, n)
        ready: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(self.master, wake)
        try:
            async with asyncio.timeout(timeout):
                await ready
        finally:
            loop.remove_reader(self.master)
        return os.read(self.master, n)

    async def read_exactly(self, n: int, *, timeout: float = 2.0) -> bytes:
        out = bytearray()
        async with asyncio.timeout(timeout):
            while len(out) < n:
                out += await self.read(n - len(out), timeout=timeout)
        return bytes(out)

    def hang_up(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self.master)

    def close(self) -> None:
        self.hang_up()
        os.close(self.slave)


@pytest.fixture
def pty_peer() -> Iterator[PtyPeer]:
    peer = PtyPeer()
    yield peer
    peer.close()
