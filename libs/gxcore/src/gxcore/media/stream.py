"""The byte-stream medium shared by TCP clients, accepted connections and serial ports.

It sits on an asyncio ``StreamReader``/``StreamWriter`` pair. The reader's buffer is
the bounded input buffer: above twice ``buffer_limit`` bytes asyncio stops reading
from the OS, so a peer that floods us fills its own socket or the UART, not our
memory. Reads that time out are cancelled inside the reader, which keeps what it
holds, so a timeout never loses bytes.

With ``inter_frame_timeout`` set (serial lines framed by silence, e.g. Modbus RTU's
3.5 character times), :meth:`StreamMedium.receive` waits for the first byte within
``timeout``, then keeps reading until the line has been silent that long or
``max_bytes`` arrived, and returns the frame as one piece.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections.abc import Iterator
from typing import NoReturn

from gxcore.errors import MediaError, MeterTimeoutError
from gxcore.media.medium import (
    CLOSE_TIMEOUT,
    SEND_TIMEOUT,
    ActivityHook,
    BaseMedium,
    TrafficHook,
    check_exact,
    check_max_bytes,
    check_quiet,
)


async def read_for(reader: asyncio.StreamReader, n: int, timeout: float) -> bytes | None:
    """Up to ``n`` bytes read within ``timeout`` s; None when the time ran out, b"" at end of stream."""
    scope = asyncio.timeout(timeout)
    try:
        async with scope:
            return await reader.read(n)
    except TimeoutError:
        if scope.expired():
            return None
        raise  # an OS-level ETIMEDOUT, not ours: the caller maps it to MediaError


class StreamMedium(BaseMedium):
    """A :class:`~gxcore.media.medium.Medium` over an asyncio stream pair."""

    def __init__(
        self,
        *,
        buffer_limit: int,
        inter_frame_timeout: float | None = None,
        on_traffic: TrafficHook | None = None,
    ) -> None:
        super().__init__(on_traffic)
        self.buffer_limit = buffer_limit
        self.inter_frame_timeout = inter_frame_timeout
        self.on_activity: ActivityHook | None = None  # the listener's idle watchdog
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._closed_here = False
        self._stuck = False  # a send timed out: the peer does not read, so close must not wait for it

    # -- to be provided by the concrete medium -------------------------------------

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        raise NotImplementedError

    # -- Medium --------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._writer is not None

    async def open(self) -> None:
        if self._writer is not None:
            return
        self._reader, self._writer = await self._connect()
        self._closed_here = False

    def _attach(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is None:
            return
        self._closed_here = True
        transport = writer.transport
        if self._stuck and not transport.is_closing():
            transport.abort()  # the peer does not read: waiting to flush would only run out the clock
        else:
            writer.close()
        self._stuck = False
        scope = asyncio.timeout(CLOSE_TIMEOUT)
        try:
            async with scope:
                await writer.wait_closed()
        except TimeoutError:  # before OSError, of which it is a subclass
            if scope.expired():
                transport.abort()  # a graceful close that does not finish: drop what is queued
        except OSError:
            pass  # the connection had already failed (reset, unplugged): it is closed

    async def send(self, data: bytes, *, timeout: float = SEND_TIMEOUT) -> None:
        writer = self._open_writer()
        self._trace("tx", data)
        scope = asyncio.timeout(timeout)
        with self._os_errors("send"):
            try:
                async with scope:
                    writer.write(data)
                    await writer.drain()
            except TimeoutError:
                if not scope.expired():
                    raise
                self._stuck = True
                raise MeterTimeoutError(
                    f"{self.describe()}: {len(data)} bytes not taken within {timeout:g} s (peer not reading)"
                ) from None
        self._touch()

    async def receive(self, max_bytes: int, *, timeout: float) -> bytes:
        check_max_bytes(max_bytes)
        reader = self._open_reader()
        self._begin_read()
        try:
            with self._os_errors("receive"):
                data = await read_for(reader, max_bytes, timeout)
                if data is None:
                    raise MeterTimeoutError(f"{self.describe()}: no data within {timeout:g} s")
                if not data:
                    self._raise_closed("receive")
                if self.inter_frame_timeout is not None and len(data) < max_bytes:
                    data = await self._until_silence(reader, data, max_bytes, self.inter_frame_timeout)
        finally:
            self._reading = False
        self._touch()
        self._trace("rx", data)
        return data

    async def receive_exactly(self, n: int, *, timeout: float) -> bytes:
        check_exact(n, self.buffer_limit)
        reader = self._open_reader()
        self._begin_read()
        scope = asyncio.timeout(timeout)
        try:
            with self._os_errors("receive"):
                try:
                    async with scope:
                        data = await reader.readexactly(n)
                except TimeoutError:
                    if not scope.expired():
                        raise
                    raise MeterTimeoutError(f"{self.describe()}: {n} bytes not received within {timeout:g} s") from None
        except asyncio.IncompleteReadError as exc:
            self._raise_closed(f"receive: after {len(exc.partial)} of {n} bytes", exc.partial)
        finally:
            self._reading = False
        self._touch()
        self._trace("rx", data)
        return data

    async def drain_input(self, quiet: float, *, within: float | None = None) -> int:
        bound = check_quiet(quiet, within)
        reader = self._open_reader()
        self._begin_read()
        loop = asyncio.get_running_loop()
        end = loop.time() + bound
        discarded = 0
        try:
            with self._os_errors("drain_input"):
                while (remaining := end - loop.time()) > 0:
                    chunk = await read_for(reader, self.buffer_limit, min(quiet, remaining))
                    if chunk is None:
                        if quiet <= remaining:
                            return discarded  # a full quiet interval: the line is clean
                        continue
                    if not chunk:
                        return discarded  # end of stream: nothing late can come any more
                    discarded += len(chunk)
                    self._trace("discard", chunk)
        finally:
            self._reading = False
        raise MediaError(f"{self.describe()}: line not quiet for {quiet:g} s within {bound:g} s ({discarded} bytes)")

    # -- machinery -----------------------------------------------------------------

    async def _until_silence(self, reader: asyncio.StreamReader, first: bytes, max_bytes: int, silence: float) -> bytes:
        frame = bytearray(first)
        while len(frame) < max_bytes:
            more = await read_for(reader, max_bytes - len(frame), silence)
            if not more:  # silence ends the frame; end of stream is reported by the next read
                break
            frame += more
        return bytes(frame)

    def _open_reader(self) -> asyncio.StreamReader:
        if self._reader is None:
            raise MediaError(f"{self.describe()}: not open")
        return self._reader

    def _open_writer(self) -> asyncio.StreamWriter:
        if self._writer is None:
            raise MediaError(f"{self.describe()}: not open")
        return self._writer

    def _touch(self) -> None:
        if self.on_activity is not None:
            self.on_activity()

    def _raise_closed(self, what: str, partial: bytes | None = None) -> NoReturn:
        who = "closed locally" if self._closed_here else "closed by peer (end of stream)"
        raise MediaError(f"{self.describe()}: {what}: {who}", frame=partial or None)

    @contextlib.contextmanager
    def _os_errors(self, what: str) -> Iterator[None]:
        """Turn OS and driver errors into MediaError naming this medium."""
        try:
            yield
        except OSError as exc:  # includes ConnectionError, serial.SerialException
            raise MediaError(f"{self.describe()}: {what}: {os_reason(exc)}") from exc


# The causes a field engineer acts on, by errno: asyncio's "Connect call failed" and pyserial's
# "could not open port" carry the errno but not these words.
_CAUSES = {
    errno.ECONNREFUSED: "connection refused (nothing listens on that port, or a firewall rejects it)",
    errno.ECONNRESET: "connection reset by the peer",
    errno.ETIMEDOUT: "timed out",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ENOENT: "no such device",
    errno.ENODEV: "no such device",
    errno.ENXIO: "no such device",
    errno.EACCES: "permission denied (is the user in the dialout group?)",
    errno.EBUSY: "device busy (another program holds it)",
}


def os_reason(exc: OSError) -> str:
    """The cause of ``exc`` in words (refused, timed out, no such device, ...), else the OS's own."""
    if isinstance(exc, socket.gaierror):
        return f"host name not resolved ({exc.strerror or exc})"
    cause = _CAUSES.get(exc.errno) if isinstance(exc.errno, int) else None
    if cause is not None:
        return cause
    return exc.strerror or str(exc) or type(exc).__name__
