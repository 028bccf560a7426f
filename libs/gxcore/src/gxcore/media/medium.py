"""The one interface protocol adapters use to move bytes: :class:`Medium`.

A medium is a TCP connection, a UDP endpoint, a serial port or a connection accepted
by a listener. Adapters above it are written once against this protocol and work on
every medium unchanged.

The contract every implementation keeps:

* every read has a timeout; it raises :class:`~gxcore.errors.MeterTimeoutError` when
  nothing came in time, and consumes nothing in that case;
* a refused, reset, locally closed or peer-closed medium raises
  :class:`~gxcore.errors.MediaError`; a read never returns ``b""``;
* end of stream: on TCP the peer's FIN. Bytes received before it are still returned;
  the first read after them raises MediaError ("closed by peer"). A serial port has
  no end of stream, only errors (device unplugged: MediaError). UDP has none either;
* buffers are bounded (``buffer_limit`` bytes on streams, ``max_datagrams`` on UDP);
* one reader at a time: a second concurrent read raises MediaError;
* traffic is reported only through the optional ``on_traffic(direction, data)``
  hook, never logged; ``describe()`` names the medium without secrets.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Final, Literal, Protocol, Self, runtime_checkable

from gxcore.errors import ConfigurationError, MediaError

Direction = Literal["tx", "rx", "discard"]
"""``tx`` sent, ``rx`` returned by a read, ``discard`` thrown away by :meth:`Medium.drain_input`."""

TrafficHook = Callable[[Direction, bytes], None]
"""Trace callback (like pymodbus trace hooks). It must be quick and must not raise."""

ActivityHook = Callable[[], None]

Parity = Literal["N", "E", "O"]

DEFAULT_BUFFER_LIMIT: Final = 65_536  # bytes a stream buffers before reading from the OS pauses
SEND_TIMEOUT: Final = 10.0  # seconds a send may wait for a peer that does not read
LINE_TIMEOUT: Final = 5.0  # seconds set_line may wait for pending output to leave the port
CLOSE_TIMEOUT: Final = 2.0  # seconds a graceful close may take before the transport is aborted


@runtime_checkable
class Medium(Protocol):
    """Moves bytes to and from one meter or bus; the only I/O protocol adapters see."""

    @property
    def can_set_line(self) -> bool:
        """True when :meth:`set_line` changes a real line (serial ports)."""
        ...

    async def open(self) -> None:
        """Connect or open; no-op when open. A closed medium opens afresh (new connection)."""
        ...

    async def close(self) -> None:
        """Release the medium; never raises, idempotent."""
        ...

    async def send(self, data: bytes, *, timeout: float = SEND_TIMEOUT) -> None:
        """Queue ``data`` and wait (at most ``timeout``) until the OS has taken it."""
        ...

    async def receive(self, max_bytes: int, *, timeout: float) -> bytes:
        """Return 1..``max_bytes`` bytes as they arrive (one datagram's worth on UDP)."""
        ...

    async def receive_exactly(self, n: int, *, timeout: float) -> bytes:
        """Return exactly ``n`` bytes; on timeout nothing is consumed."""
        ...

    async def drain_input(self, quiet: float, *, within: float | None = None) -> int:
        """Discard input until the line has been quiet ``quiet`` s; return the bytes discarded."""
        ...

    async def set_line(
        self,
        *,
        baudrate: int | None = None,
        bytesize: int | None = None,
        parity: Parity | None = None,
        stopbits: float | None = None,
        timeout: float = LINE_TIMEOUT,
    ) -> None:
        """Change serial line settings after pending output has left; MediaError elsewhere."""
        ...

    def describe(self) -> str:
        """Short name for errors and logs, e.g. ``tcp 10.0.0.5:4059``; never secrets."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


def check_max_bytes(max_bytes: int) -> None:
    """Reject a read size that could only mean a caller bug."""
    if max_bytes < 1:
        raise ConfigurationError(f"receive: max_bytes must be >= 1, got {max_bytes}")


def check_exact(n: int, limit: int) -> None:
    """Reject an exact-read size that is negative or larger than the medium buffers."""
    if not 0 <= n <= limit:
        raise ConfigurationError(f"receive_exactly: n must be 0..{limit} (buffer_limit), got {n}")


def check_quiet(quiet: float, within: float | None) -> float:
    """Validate drain_input's arguments; return the overall bound to use."""
    if quiet <= 0:
        raise ConfigurationError(f"drain_input: quiet must be > 0 s, got {quiet}")
    bound = within if within is not None else max(1.0, 20 * quiet)
    if bound < quiet:
        raise ConfigurationError(f"drain_input: within ({bound} s) must be >= quiet ({quiet} s)")
    return bound


def check_buffer_limit(buffer_limit: int) -> None:
    """A stream buffer between 256 bytes and 16 MiB."""
    if not 256 <= buffer_limit <= 1 << 24:
        raise ConfigurationError(f"buffer_limit must be 256..16777216 bytes, got {buffer_limit}")


def check_port(port: int, *, allow_zero: bool = False) -> None:
    """A TCP/UDP port number (0 only where the OS may choose one)."""
    if not (0 if allow_zero else 1) <= port <= 65535:
        raise ConfigurationError(f"port must be {'0' if allow_zero else '1'}..65535, got {port}")


def check_positive(name: str, value: float) -> None:
    """A duration that must be strictly positive."""
    if not value > 0:
        raise ConfigurationError(f"{name} must be > 0 s, got {value}")


class BaseMedium:
    """What every medium shares: the trace hook, ``async with`` and the no-line default."""

    def __init__(self, on_traffic: TrafficHook | None = None) -> None:
        self.on_traffic = on_traffic
        self._reading = False  # a read is waiting: a second concurrent one is a caller bug

    @property
    def can_set_line(self) -> bool:
        return False

    def describe(self) -> str:
        raise NotImplementedError

    async def open(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def set_line(
        self,
        *,
        baudrate: int | None = None,
        bytesize: int | None = None,
        parity: Parity | None = None,
        stopbits: float | None = None,
        timeout: float = LINE_TIMEOUT,
    ) -> None:
        raise MediaError(f"{self.describe()}: line settings cannot be changed on this medium")

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _trace(self, direction: Direction, data: bytes) -> None:
        if self.on_traffic is not None and data:
            self.on_traffic(direction, data)

    def _begin_read(self) -> None:
        if self._reading:
            raise MediaError(f"{self.describe()}: another read is already waiting (one reader at a time)")
        self._reading = True

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"
