"""A plain TCP relay with a cut switch for some processes' connections (development and demos only).

Why per process: one broker advertises one address, so every client, central or edge, reconnects
to the address in the broker's metadata. The relay sits at that address in front of the broker;
``cut(pid)`` closes the connections a given process (the edge collector) holds and refuses its new
ones, while every other process's traffic flows on: the edge's uplink goes down, the centre keeps
running. A connection's owner is found by its source port among the process's own sockets (psutil).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterable

import psutil

__all__ = ["CutRelay"]

_CONNECT_TIMEOUT_S = 5.0
_CHUNK = 1 << 16
_IDLE_S = 900.0  # a relayed connection idle this long is closed (aiokafka's own idle limit is 540 s)


def _local_ports(pids: Iterable[int]) -> set[int]:
    """The local TCP ports the processes hold (a process gone holds none)."""
    ports: set[int] = set()
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            ports |= {c.laddr.port for c in psutil.Process(pid).net_connections(kind="tcp") if c.laddr}
    return ports


class CutRelay:
    """Relays 127.0.0.1:``port`` to 127.0.0.1:``backend_port`` on a thread of its own."""

    def __init__(self, port: int, backend_port: int, host: str = "127.0.0.1") -> None:
        self.host, self.port, self.backend_port = host, port, backend_port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="cut-relay", daemon=True)
        self._server: asyncio.Server | None = None
        self._cut: set[int] = set()
        self._open: dict[int, tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = {}  # peer port -> both ends
        self.refused = 0  # connections of a cut process closed at once

    def start(self) -> None:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        future.result(timeout=10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)

    def cut(self, pids: Iterable[int]) -> None:
        """Close the processes' relayed connections and refuse their new ones until ``mend``."""
        asyncio.run_coroutine_threadsafe(self._cut_now(set(pids)), self._loop).result(timeout=10)

    async def _cut_now(self, pids: set[int]) -> None:
        self._cut |= pids
        theirs = _local_ports(pids)
        for peer, ends in list(self._open.items()):
            if peer in theirs:
                for w in ends:
                    w.transport.abort()

    def mend(self) -> None:
        """Let every process through again."""
        self._loop.call_soon_threadsafe(self._cut.clear)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")[1]
        if self._cut and peer in _local_ports(self._cut):
            self.refused += 1
            writer.transport.abort()
            return
        try:
            up_r, up_w = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.backend_port), _CONNECT_TIMEOUT_S
            )
        except (OSError, TimeoutError):
            writer.transport.abort()
            return
        self._open[peer] = (writer, up_w)
        try:
            await asyncio.gather(self._pipe(reader, up_w), self._pipe(up_r, writer))
        finally:
            self._open.pop(peer, None)
            for w in (writer, up_w):
                w.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ConnectionError, TimeoutError):
            while data := await asyncio.wait_for(reader.read(_CHUNK), _IDLE_S):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for ends in list(self._open.values()):
                for w in ends:
                    w.transport.abort()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()
