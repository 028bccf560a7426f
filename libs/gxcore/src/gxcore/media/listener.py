"""TCP listener for meters that dial in (GPRS/LTE with dynamic addresses) or push data.

Each accepted connection becomes a :class:`DialInConnection` (a Medium) handed to an
``async`` handler in a task of its own. The listener outlives every connection:

* at most ``max_connections`` handlers run at once; a connection beyond that is
  closed at once (reported as ``rejected``; meters dial again later) rather than
  queued behind a slow meter;
* a handler that raises, or a peer that sends garbage or vanishes, ends only its
  own connection (``failed``); the connection is always closed afterwards;
* a connection that moves no bytes through its medium for ``idle_timeout`` seconds
  has its handler cancelled and is closed (``idle``).

Outcomes are reported through the optional ``on_event`` hook; the listener itself
never logs. :meth:`TcpListener.close` stops accepting, cancels running handlers and
waits for them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Self

from gxcore.errors import ConfigurationError, MediaError
from gxcore.media.medium import (
    DEFAULT_BUFFER_LIMIT,
    check_buffer_limit,
    check_port,
    check_positive,
)
from gxcore.media.stream import StreamMedium

EventKind = Literal["accepted", "rejected", "done", "idle", "failed"]


@dataclass(frozen=True, slots=True)
class ListenerEvent:
    """One connection's fate: ``peer`` is ``host:port``; ``error`` is set for ``failed``."""

    kind: EventKind
    peer: str
    error: BaseException | None = None


ListenerHook = Callable[[ListenerEvent], None]


@dataclass(frozen=True, slots=True)
class ListenerSettings:
    """Where to listen, how many meters at once, and when a silent one is dropped."""

    host: str
    port: int
    max_connections: int = 64
    idle_timeout: float = 120.0
    buffer_limit: int = DEFAULT_BUFFER_LIMIT
    # Connections the kernel queues before we accept them: meters pushing at the quarter hour
    # arrive together, and a full queue drops their SYNs (each then waits a second to retry).
    backlog: int = 1024

    def __post_init__(self) -> None:
        check_port(self.port, allow_zero=True)
        if not 1 <= self.max_connections <= 100_000:
            raise ConfigurationError(f"max_connections must be 1..100000, got {self.max_connections}")
        check_positive("idle_timeout", self.idle_timeout)
        check_buffer_limit(self.buffer_limit)
        if not 1 <= self.backlog <= 65535:
            raise ConfigurationError(f"backlog must be 1..65535, got {self.backlog}")


def _peer_name(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)


class DialInConnection(StreamMedium):
    """A connection a meter opened to us; it cannot be reopened once closed."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, via: str, buffer_limit: int
    ) -> None:
        super().__init__(buffer_limit=buffer_limit)
        self.peer = _peer_name(writer.get_extra_info("peername"))
        self._via = via
        self._attach(reader, writer)

    def describe(self) -> str:
        return f"tcp {self.peer} (dial-in on {self._via})"

    async def open(self) -> None:
        if not self.is_open:
            raise MediaError(f"{self.describe()}: a dial-in connection cannot be reopened")


ConnectionHandler = Callable[[DialInConnection], Awaitable[None]]
"""Serves one dial-in connection and returns when done; raising ends only that connection.

A handler written against plain :class:`~gxcore.media.medium.Medium` fits too.
"""


class TcpListener:
    """Accepts dial-in connections and serves each with ``handler``; bad connections never stop it."""

    def __init__(
        self, settings: ListenerSettings, handler: ConnectionHandler, *, on_event: ListenerHook | None = None
    ) -> None:
        self.settings = settings
        self.handler = handler
        self.on_event = on_event
        self.counts: Counter[EventKind] = Counter()
        self._server: asyncio.Server | None = None
        self._accepting = False
        self._tasks: set[asyncio.Task[None]] = set()

    def describe(self) -> str:
        host = self.settings.host or "*"
        return f"listen [{host}]:{self.port}" if ":" in host else f"listen {host}:{self.port}"

    @property
    def port(self) -> int:
        """The bound port once started (useful with port 0), else the configured one."""
        if self._server is not None and self._server.sockets:
            return int(self._server.sockets[0].getsockname()[1])
        return self.settings.port

    @property
    def active(self) -> int:
        """Connections being served now."""
        return len(self._tasks)

    async def start(self) -> None:
        """Bind and start accepting; MediaError when the address cannot be bound."""
        if self._server is not None:
            return
        self._accepting = True
        try:
            self._server = await asyncio.start_server(
                self._accept,
                self.settings.host or None,
                self.settings.port,
                limit=self.settings.buffer_limit,
                backlog=self.settings.backlog,
            )
        except OSError as exc:
            self._accepting = False
            raise MediaError(f"{self.describe()}: cannot listen: {exc.strerror or exc}") from exc

    async def close(self) -> None:
        """Stop accepting, cancel running handlers, wait for them; never raises."""
        self._accepting = False
        server, self._server = self._server, None
        if server is not None:
            server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- per connection ------------------------------------------------------------

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _peer_name(writer.get_extra_info("peername"))
        if not self._accepting or len(self._tasks) >= self.settings.max_connections:
            writer.transport.abort()  # nothing to flush; a meter retries on its own schedule
            self._report(ListenerEvent("rejected", peer))
            return
        connection = DialInConnection(reader, writer, via=self.describe(), buffer_limit=self.settings.buffer_limit)
        self._report(ListenerEvent("accepted", peer))
        task = asyncio.get_running_loop().create_task(self._serve(connection))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, connection: DialInConnection) -> None:
        loop = asyncio.get_running_loop()
        idle = self.settings.idle_timeout
        watchdog = asyncio.timeout(idle)
        try:
            async with watchdog:
                connection.on_activity = lambda: watchdog.reschedule(loop.time() + idle)
                await self.handler(connection)
            event = ListenerEvent("done", connection.peer)
        except TimeoutError as exc:
            event = ListenerEvent("idle", connection.peer) if watchdog.expired() else _failed(connection, exc)
        except Exception as exc:  # noqa: BLE001 - any handler fault ends this connection only
            event = _failed(connection, exc)
        finally:
            connection.on_activity = None
            await connection.close()
        self._report(event)

    def _report(self, event: ListenerEvent) -> None:
        self.counts[event.kind] += 1
        if self.on_event is not None:
            # A broken reporting hook must not take the listener down with it.
            with contextlib.suppress(Exception):
                self.on_event(event)


def _failed(connection: DialInConnection, exc: BaseException) -> ListenerEvent:
    return ListenerEvent("failed", connection.peer, exc)
