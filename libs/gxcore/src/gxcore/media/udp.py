"""UDP medium: datagrams to and from one peer (DLMS/UDP, M-Bus or Modbus over UDP gateways).

Datagram semantics: :meth:`UdpEndpoint.receive` never mixes two datagrams. It returns
the next datagram, or what is left of the current one when a datagram was longer than
``max_bytes`` (nothing is cut off and lost). :meth:`UdpEndpoint.receive_exactly` may
span datagrams. Zero-length datagrams carry nothing and are skipped.

The socket is connected to the peer, so the OS drops datagrams from anyone else, and
an ICMP "port unreachable" for a sent datagram surfaces as MediaError on the next read.
At most ``max_datagrams`` unread datagrams are queued; further ones are dropped and
counted in :attr:`UdpEndpoint.dropped` (a meter that floods us cannot grow memory).
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Final

from gxcore.errors import ConfigurationError, MediaError, MeterTimeoutError
from gxcore.media.medium import (
    SEND_TIMEOUT,
    BaseMedium,
    TrafficHook,
    check_exact,
    check_max_bytes,
    check_port,
    check_positive,
    check_quiet,
)
from gxcore.media.stream import os_reason

MAX_DATAGRAM: Final = 65_507  # largest UDP payload over IPv4
EXACT_LIMIT: Final = 65_536  # receive_exactly never waits for more than this


@dataclass(frozen=True, slots=True)
class UdpSettings:
    """The peer, how many unread datagrams to keep, and how long resolving may take."""

    host: str
    port: int
    max_datagrams: int = 64
    open_timeout: float = 5.0

    def __post_init__(self) -> None:
        if not self.host:
            raise ConfigurationError("host must not be empty")
        check_port(self.port)
        if not 1 <= self.max_datagrams <= 4096:
            raise ConfigurationError(f"max_datagrams must be 1..4096, got {self.max_datagrams}")
        check_positive("open_timeout", self.open_timeout)


class _Inbox(asyncio.DatagramProtocol):
    """Bounded queue of received datagrams plus the socket's last error."""

    def __init__(self, max_datagrams: int) -> None:
        self.datagrams: deque[bytes] = deque()
        self.max_datagrams = max_datagrams
        self.dropped = 0
        self.error: Exception | None = None
        self.lost = False
        self.changed = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if not data:
            return
        if len(self.datagrams) >= self.max_datagrams:
            self.dropped += 1
            return
        self.datagrams.append(data)
        self.changed.set()

    def error_received(self, exc: Exception) -> None:
        self.error = exc
        self.changed.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.error = exc or self.error
        self.changed.set()

    def queued(self) -> int:
        return sum(len(datagram) for datagram in self.datagrams)


class UdpEndpoint(BaseMedium):
    """A connected UDP socket behind the Medium interface."""

    def __init__(self, settings: UdpSettings, *, on_traffic: TrafficHook | None = None) -> None:
        super().__init__(on_traffic)
        self.settings = settings
        self._transport: asyncio.DatagramTransport | None = None
        self._inbox: _Inbox | None = None
        self._current = b""  # unread rest of the datagram being returned piecewise

    @property
    def dropped(self) -> int:
        """Datagrams dropped because the queue was full (since open)."""
        return self._inbox.dropped if self._inbox is not None else 0

    def describe(self) -> str:
        host = self.settings.host
        return f"udp [{host}]:{self.settings.port}" if ":" in host else f"udp {host}:{self.settings.port}"

    async def open(self) -> None:
        if self._transport is not None:
            return
        inbox = _Inbox(self.settings.max_datagrams)
        loop = asyncio.get_running_loop()
        scope = asyncio.timeout(self.settings.open_timeout)
        try:
            async with scope:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: inbox, remote_addr=(self.settings.host, self.settings.port)
                )
        except TimeoutError as exc:
            if scope.expired():
                raise MeterTimeoutError(
                    f"{self.describe()}: open: not resolved within {self.settings.open_timeout:g} s"
                ) from None
            raise MediaError(f"{self.describe()}: open: {os_reason(exc)}") from exc
        except OSError as exc:
            raise MediaError(f"{self.describe()}: open: {os_reason(exc)}") from exc
        self._transport, self._inbox, self._current = transport, inbox, b""

    async def close(self) -> None:
        transport, self._transport, self._inbox = self._transport, None, None
        self._current = b""
        if transport is not None:
            transport.close()
            await asyncio.sleep(0)  # let connection_lost run so the socket is really closed

    async def send(self, data: bytes, *, timeout: float = SEND_TIMEOUT) -> None:
        """Send ``data`` as one datagram (UDP has no back-pressure; ``timeout`` is unused)."""
        transport, _ = self._open()
        if len(data) > MAX_DATAGRAM:
            raise MediaError(f"{self.describe()}: a datagram holds at most {MAX_DATAGRAM} bytes, got {len(data)}")
        self._trace("tx", data)
        try:
            transport.sendto(data)
        except OSError as exc:
            raise MediaError(f"{self.describe()}: send: {os_reason(exc)}") from exc

    async def receive(self, max_bytes: int, *, timeout: float) -> bytes:
        check_max_bytes(max_bytes)
        self._begin_read()
        try:
            if not self._current:
                await self._wait_for(1, timeout)
                self._current = self._inbox_or_fail().datagrams.popleft()
            data, self._current = self._current[:max_bytes], self._current[max_bytes:]
        finally:
            self._reading = False
        self._trace("rx", data)
        return data

    async def receive_exactly(self, n: int, *, timeout: float) -> bytes:
        check_exact(n, EXACT_LIMIT)
        self._begin_read()
        try:
            await self._wait_for(n, timeout)
            inbox = self._inbox_or_fail()
            out = bytearray()
            while len(out) < n:
                if not self._current:
                    self._current = inbox.datagrams.popleft()
                take = n - len(out)
                out += self._current[:take]
                self._current = self._current[take:]
        finally:
            self._reading = False
        data = bytes(out)
        self._trace("rx", data)
        return data

    async def drain_input(self, quiet: float, *, within: float | None = None) -> int:
        bound = check_quiet(quiet, within)
        self._begin_read()
        loop = asyncio.get_running_loop()
        end = loop.time() + bound
        discarded = self._discard()
        try:
            while (remaining := end - loop.time()) > 0:
                inbox = self._inbox_or_fail()
                inbox.changed.clear()
                try:
                    async with asyncio.timeout(min(quiet, remaining)):
                        await inbox.changed.wait()
                except TimeoutError:
                    if quiet <= remaining:
                        return discarded
                    continue
                self._raise_error()
                discarded += self._discard()
        finally:
            self._reading = False
        raise MediaError(f"{self.describe()}: line not quiet for {quiet:g} s within {bound:g} s ({discarded} bytes)")

    # -- machinery -----------------------------------------------------------------

    def _open(self) -> tuple[asyncio.DatagramTransport, _Inbox]:
        if self._transport is None or self._inbox is None:
            raise MediaError(f"{self.describe()}: not open")
        return self._transport, self._inbox

    def _inbox_or_fail(self) -> _Inbox:
        return self._open()[1]

    def _raise_error(self) -> None:
        inbox = self._inbox_or_fail()
        error, inbox.error = inbox.error, None
        if isinstance(error, OSError):
            raise MediaError(f"{self.describe()}: {os_reason(error)}") from error
        if error is not None:
            raise MediaError(f"{self.describe()}: {type(error).__name__}") from error
        if inbox.lost:
            raise MediaError(f"{self.describe()}: socket closed")

    async def _wait_for(self, n: int, timeout: float) -> None:
        """Wait until ``n`` bytes are buffered (current datagram plus queue)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            inbox = self._inbox_or_fail()
            if len(self._current) + inbox.queued() >= n:
                return
            self._raise_error()
            remaining = end - loop.time()
            if remaining <= 0:
                raise MeterTimeoutError(f"{self.describe()}: no datagram within {timeout:g} s")
            inbox.changed.clear()
            try:
                async with asyncio.timeout(remaining):
                    await inbox.changed.wait()
            except TimeoutError:
                continue  # the loop re-checks before reporting the timeout

    def _discard(self) -> int:
        inbox = self._inbox_or_fail()
        count = len(self._current)
        self._trace("discard", self._current)
        self._current = b""
        while inbox.datagrams:
            datagram = inbox.datagrams.popleft()
            count += len(datagram)
            self._trace("discard", datagram)
        return count
