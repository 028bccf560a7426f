"""The TCP listener under the simulators: start, stop, bound port, one handler task per connection.

A subclass only writes :meth:`SimulatorServer.handle` for one connection. The base keeps
the connection handler tasks and guarantees that :meth:`SimulatorServer.stop` returns only
once every one of them has finished, so nothing of the server outlives it.

stop() never cancels a handler. It aborts the connection instead: a handler waiting in
``reader.read()`` then sees end of stream, ``drain()`` raises ConnectionResetError, and a
push feed waiting between sends in :meth:`SimulatorServer.pause` wakes up. (Cancelling a
task that asyncio started for a stream callback makes Python 3.11 log "Exception in
callback": its done-callback asks the cancelled task for its exception.) The handler
tasks here are the server's own, created in the connection callback, so a connection is
known to the server from the moment asyncio reports it.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from typing import Self

_DISCARD_CHUNK = 4096  # bytes read at a time from a client whose input a feed ignores


class SimulatorServer(ABC):
    """An asyncio TCP server on ``host:port`` (0: a free port) running :meth:`handle` per connection."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._requested_port = port
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    @abstractmethod
    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one client; return at end of stream. The base closes ``writer`` afterwards."""

    @property
    def port(self) -> int:
        """The bound port (the real one when constructed with port 0); RuntimeError unless started."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def connections(self) -> int:
        """Clients connected right now."""
        return len(self._connections)

    async def start(self) -> None:
        """Listen on ``host:port``."""
        if self._server is not None:
            raise RuntimeError(f"{type(self).__name__} is already started")
        self._server = await asyncio.start_server(self._accept, self.host, self._requested_port)

    async def stop(self) -> None:
        """Stop listening, drop every client and wait until every connection handler has returned."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for writer in self._connections.values():
            writer.transport.abort()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await server.wait_closed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def pause(self, reader: asyncio.StreamReader, seconds: float) -> bool:
        """Wait ``seconds``, dropping what the client sends; False at once if it hangs up or the server stops."""
        try:
            async with asyncio.timeout(seconds):
                while await reader.read(_DISCARD_CHUNK):
                    pass  # a feed has nothing to say to what its clients send
        except TimeoutError:
            return True
        return False

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._server is None:
            # Accepted by asyncio just before stop() closed the listener: stop() cannot see it.
            writer.transport.abort()
            return
        task = asyncio.get_running_loop().create_task(self._run(reader, writer))
        self._connections[task] = writer
        task.add_done_callback(self._forget)

    async def _run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self.handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away, or stop() dropped it: nothing to tell anyone
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._connections.pop(task, None)
        if task.cancelled():
            return  # the event loop is shutting down (asyncio.run cancels what is left)
        exc = task.exception()
        if exc is not None:
            # A simulator bug, not a client's fault: say so loudly, the listener lives on.
            task.get_loop().call_exception_handler(
                {"message": f"{type(self).__name__} connection handler failed", "exception": exc, "task": task}
            )
