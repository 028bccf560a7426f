"""Two connected in-memory media: a null modem for tests and in-process peers.

:func:`memory_pair` returns two :class:`MemoryMedium` ends; what one sends, the other
receives. Each end keeps the :class:`~gxcore.media.medium.Medium` contract of the real
media, so a driver or :func:`gxcore.drivers.loop.drive` runs over one end unchanged
while a test (a scripted peer, a meterlab simulator core) answers on the other:

* reads wait at most ``timeout`` and raise MeterTimeoutError, consuming nothing;
* each end buffers at most ``buffer_limit`` bytes; a send to a full end waits for the
  peer to read, and raises MeterTimeoutError when it does not within its timeout;
* after :meth:`MemoryMedium.close` on one end, the other still gets what was sent
  before, then MediaError ("closed by peer"); sends to a closed peer raise MediaError;
* ``set_line`` is accepted when the pair was made with ``serial=True`` (a simulated
  serial line) and recorded in :attr:`MemoryMedium.line_changes`, so a test can check
  that a protocol switched speed; otherwise it raises MediaError as TCP does;
* traffic goes to each end's ``on_traffic`` hook (``tx`` / ``rx`` / ``discard``).

A pair is made open; a closed end does not reopen (the "connection" is gone).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from gxcore.errors import MediaError, MeterTimeoutError
from gxcore.media.medium import (
    DEFAULT_BUFFER_LIMIT,
    LINE_TIMEOUT,
    SEND_TIMEOUT,
    BaseMedium,
    Direction,
    Parity,
    TrafficHook,
    check_buffer_limit,
    check_exact,
    check_max_bytes,
    check_quiet,
)


@dataclass(frozen=True, slots=True)
class LineChange:
    """One ``set_line`` call on a serial-like memory end (None: left as it was)."""

    baudrate: int | None
    bytesize: int | None
    parity: Parity | None
    stopbits: float | None


class _Wire:
    """What the two ends share: one wake-up for every change, so no waiter misses one."""

    def __init__(self) -> None:
        self.changed = asyncio.Event()

    def poke(self) -> None:
        self.changed.set()

    async def until(self, ready: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``ready()`` (True) or ``timeout`` s passed (False)."""
        if ready():
            return True
        if timeout <= 0:
            return False
        scope = asyncio.timeout(timeout)
        try:
            async with scope:
                while not ready():
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            if scope.expired():
                return ready()
            raise
        return True


class MemoryMedium(BaseMedium):
    """One end of a :func:`memory_pair`."""

    def __init__(
        self,
        wire: _Wire,
        name: str,
        *,
        buffer_limit: int,
        serial: bool,
        on_traffic: TrafficHook | None,
    ) -> None:
        super().__init__(on_traffic)
        self._wire = wire
        self._name = name
        self.buffer_limit = buffer_limit
        self._serial = serial
        self._inbox = bytearray()
        self._closed = False
        self.peer: MemoryMedium = self  # set by memory_pair
        self.line_changes: list[LineChange] = []

    # -- Medium --------------------------------------------------------------------

    @property
    def can_set_line(self) -> bool:
        return self._serial

    @property
    def is_open(self) -> bool:
        return not self._closed

    def describe(self) -> str:
        return self._name

    async def open(self) -> None:
        if self._closed:
            raise MediaError(f"{self.describe()}: closed; a memory pair does not reconnect")

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._inbox.clear()
            self._wire.poke()

    async def send(self, data: bytes, *, timeout: float = SEND_TIMEOUT) -> None:
        self._check_open("send")
        peer = self.peer
        self._trace("tx", data)
        view = memoryview(bytes(data))
        while view:
            if peer._closed:
                raise MediaError(f"{self.describe()}: send: closed by peer")
            room = self.buffer_limit - len(peer._inbox)
            if room > 0:
                peer._inbox += view[:room]
                view = view[room:]
                self._wire.poke()
                continue
            if not await self._wire.until(lambda: self._ended() or len(peer._inbox) < self.buffer_limit, timeout):
                raise MeterTimeoutError(
                    f"{self.describe()}: {len(view)} of {len(data)} bytes not taken within {timeout:g} s"
                    " (peer not reading)"
                )
            self._check_open("send")

    async def receive(self, max_bytes: int, *, timeout: float) -> bytes:
        check_max_bytes(max_bytes)
        self._check_open("receive")
        self._begin_read()
        try:
            if not await self._wire.until(lambda: bool(self._inbox) or self._ended(), timeout):
                raise MeterTimeoutError(f"{self.describe()}: no data within {timeout:g} s")
            if not self._inbox:
                self._raise_ended("receive")
            return self._take(max_bytes, "rx")
        finally:
            self._reading = False

    async def receive_exactly(self, n: int, *, timeout: float) -> bytes:
        check_exact(n, self.buffer_limit)
        self._check_open("receive")
        self._begin_read()
        try:
            if not await self._wire.until(lambda: len(self._inbox) >= n or self._ended(), timeout):
                raise MeterTimeoutError(f"{self.describe()}: {n} bytes not received within {timeout:g} s")
            if len(self._inbox) < n:
                self._raise_ended(f"receive: after {len(self._inbox)} of {n} bytes")
            return self._take(n, "rx")
        finally:
            self._reading = False

    async def drain_input(self, quiet: float, *, within: float | None = None) -> int:
        bound = check_quiet(quiet, within)
        self._check_open("drain_input")
        self._begin_read()
        loop = asyncio.get_running_loop()
        end = loop.time() + bound
        discarded = 0
        try:
            while (remaining := end - loop.time()) > 0:
                if not await self._wire.until(lambda: bool(self._inbox) or self._ended(), min(quiet, remaining)):
                    if quiet <= remaining:
                        return discarded  # a full quiet interval: the line is clean
                    continue
                if not self._inbox:
                    return discarded  # the peer is gone: nothing late can come any more
                discarded += len(self._take(len(self._inbox), "discard"))
        finally:
            self._reading = False
        raise MediaError(f"{self.describe()}: line not quiet for {quiet:g} s within {bound:g} s ({discarded} bytes)")

    async def set_line(
        self,
        *,
        baudrate: int | None = None,
        bytesize: int | None = None,
        parity: Parity | None = None,
        stopbits: float | None = None,
        timeout: float = LINE_TIMEOUT,
    ) -> None:
        if not self._serial:
            await super().set_line(baudrate=baudrate, bytesize=bytesize, parity=parity, stopbits=stopbits)
        self._check_open("set_line")
        self.line_changes.append(LineChange(baudrate, bytesize, parity, stopbits))

    # -- machinery -----------------------------------------------------------------

    def _ended(self) -> bool:
        return self._closed or self.peer._closed

    def _take(self, n: int, direction: Direction) -> bytes:
        out = bytes(self._inbox[:n])
        del self._inbox[:n]
        self._wire.poke()  # room for a sender waiting on this end
        self._trace(direction, out)
        return out

    def _check_open(self, what: str) -> None:
        if self._closed:
            raise MediaError(f"{self.describe()}: {what}: closed locally")

    def _raise_ended(self, what: str) -> NoReturn:
        who = "closed locally" if self._closed else "closed by peer (end of stream)"
        raise MediaError(f"{self.describe()}: {what}: {who}")


def memory_pair(
    name: str = "memory",
    *,
    buffer_limit: int = DEFAULT_BUFFER_LIMIT,
    serial: bool = False,
    on_traffic: TrafficHook | None = None,
    peer_on_traffic: TrafficHook | None = None,
) -> tuple[MemoryMedium, MemoryMedium]:
    """Two open, connected ends: ``memory://<name>`` (the driver's) and ``memory://<name>/peer``.

    ``serial=True`` makes both ends accept ``set_line`` (recorded, see the module doc).
    """
    check_buffer_limit(buffer_limit)
    wire = _Wire()
    near = MemoryMedium(wire, f"memory://{name}", buffer_limit=buffer_limit, serial=serial, on_traffic=on_traffic)
    far = MemoryMedium(
        wire, f"memory://{name}/peer", buffer_limit=buffer_limit, serial=serial, on_traffic=peer_on_traffic
    )
    near.peer, far.peer = far, near
    return near, far
