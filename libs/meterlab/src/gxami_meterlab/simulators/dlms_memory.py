"""A simulated DLMS meter in the same process: a :class:`~gxcore.media.Medium` whose far end is a meter core.

What a client sends goes straight into the meter's sans-IO core
(:class:`~gxami_meterlab.dlms.server.CosemMeterCore`, the one the simulator serves per
connection) and its reply is what the next read returns: no sockets, no tasks. Tests and
bench hand :func:`memory_media` to a session or driver as its ``media`` factory
(``DlmsDriver(media=...)``, ``DlmsSession(url, ..., media=...)``), so the real session,
exchange and link code runs end to end with the meter a function call away.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from gxcore.drivers.dlms.transport import MediumFactory, dlms_endpoint
from gxcore.errors import MediaError, MeterTimeoutError
from gxcore.media import Medium
from gxcore.media.medium import SEND_TIMEOUT, BaseMedium, check_max_bytes


class MeterSide(Protocol):
    """The meter end: bytes from the client at ``now`` in, bytes back out (maybe none)."""

    def receive_data(self, data: bytes, now: datetime) -> bytes: ...


def _utc_now() -> datetime:
    return datetime.now(UTC)


class MeterCoreMedium(BaseMedium):
    """One connection to an in-process meter core; a fresh core per open, as the simulator does."""

    def __init__(
        self, meter: Callable[[], MeterSide], *, name: str = "memory", clock: Callable[[], datetime] = _utc_now
    ) -> None:
        super().__init__()
        self._make_meter = meter
        self._name = name
        self._clock = clock
        self._meter: MeterSide | None = None
        self._pending = bytearray()

    async def open(self) -> None:
        if self._meter is None:
            self._meter = self._make_meter()
            self._pending.clear()

    async def close(self) -> None:
        self._meter = None
        self._pending.clear()

    async def send(self, data: bytes, *, timeout: float = SEND_TIMEOUT) -> None:
        meter = self._live()
        self._pending += meter.receive_data(bytes(data), self._clock())

    async def receive(self, max_bytes: int, *, timeout: float) -> bytes:
        check_max_bytes(max_bytes)
        self._live()
        if not self._pending:
            # Nothing will ever come without another send: what a silent meter looks like.
            raise MeterTimeoutError(f"{self.describe()}: no reply within {timeout:g} s")
        out = bytes(self._pending[:max_bytes])
        del self._pending[:max_bytes]
        return out

    async def receive_exactly(self, n: int, *, timeout: float) -> bytes:
        self._live()
        if len(self._pending) < n:
            raise MeterTimeoutError(f"{self.describe()}: {n} bytes not there within {timeout:g} s")
        out = bytes(self._pending[:n])
        del self._pending[:n]
        return out

    async def drain_input(self, quiet: float, *, within: float | None = None) -> int:
        dropped = len(self._pending)
        self._pending.clear()
        return dropped

    def describe(self) -> str:
        return self._name

    def _live(self) -> MeterSide:
        if self._meter is None:
            raise MediaError(f"{self.describe()}: not open")
        return self._meter


def memory_media(meter_for: Callable[[str], MeterSide], *, clock: Callable[[], datetime] = _utc_now) -> MediumFactory:
    """A ``media`` factory: each medium opened for a URL gets a fresh ``meter_for(url)`` at its far end.

    ``clock`` is the meter's time for each request it is handed.
    """

    def make(url: str, timeout: float) -> Medium:
        endpoint = dlms_endpoint(url)
        return MeterCoreMedium(lambda: meter_for(url), name=f"memory {endpoint.host}:{endpoint.port}", clock=clock)

    return make
