"""Serial medium: an RS-232/RS-485 port or USB adapter through pyserial-asyncio 0.6.

The port is opened exclusively by default (``flock``: a second opener fails fast
instead of both reading half of each frame). RS-485 direction control, when asked
for, is handed to the kernel driver (``TIOCSRS485`` through pyserial's
``RS485Settings``) before the port is opened, so RTS is right before the first byte;
a driver without kernel RS-485 support makes :meth:`SerialPort.open` fail with
MediaError rather than talk half-duplex blind.

:meth:`SerialPort.set_line` waits until pending output has left the UART before
changing the line, as IEC 62056-21 requires when switching baud rate after the
option-select message.

Timing caveat: USB adapters deliver bytes in bursts every 1-16 ms, so an
``inter_frame_timeout`` of 3.5 character times at 9600 Bd and above (a few ms) is
not reliably resolvable from user space; use :func:`modbus_rtu_silence` with a
floor suited to the adapter.
"""

from __future__ import annotations

import asyncio
import contextlib
import termios
from dataclasses import dataclass, replace
from typing import Any, Final, cast

import serial
import serial.rs485
import serial_asyncio

from gxcore.errors import ConfigurationError, MediaError
from gxcore.media.medium import (
    DEFAULT_BUFFER_LIMIT,
    LINE_TIMEOUT,
    Parity,
    TrafficHook,
    check_buffer_limit,
    check_positive,
)
from gxcore.media.stream import StreamMedium, os_reason

PARITIES: Final[dict[str, str]] = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD}
STOPBITS: Final = (1, 1.5, 2)
BYTESIZES: Final = (5, 6, 7, 8)
_POLL: Final = 0.005  # seconds between checks that output has left the port


@dataclass(frozen=True, slots=True)
class RS485Direction:
    """Kernel RS-485 direction control: RTS drives the transceiver's driver-enable pin."""

    rts_level_for_tx: bool = True
    rts_level_for_rx: bool = False
    delay_before_tx: float | None = None  # seconds, after RTS is raised, before the first bit
    delay_before_rx: float | None = None  # seconds, after the last bit, before RTS drops

    def __post_init__(self) -> None:
        for name in ("delay_before_tx", "delay_before_rx"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                raise ConfigurationError(f"rs485 {name} must be 0..1 s, got {value}")

    def to_pyserial(self) -> Any:
        """The equivalent ``serial.rs485.RS485Settings``."""
        return serial.rs485.RS485Settings(
            rts_level_for_tx=self.rts_level_for_tx,
            rts_level_for_rx=self.rts_level_for_rx,
            delay_before_tx=self.delay_before_tx,
            delay_before_rx=self.delay_before_rx,
        )


@dataclass(frozen=True, slots=True)
class SerialSettings:
    """Device and line settings; ``inter_frame_timeout`` frames input by silence when set."""

    device: str
    baudrate: int = 9600
    bytesize: int = 8
    parity: Parity = "N"
    stopbits: float = 1
    inter_frame_timeout: float | None = None
    rs485: RS485Direction | None = None
    exclusive: bool = True
    buffer_limit: int = DEFAULT_BUFFER_LIMIT

    def __post_init__(self) -> None:
        if not self.device:
            raise ConfigurationError("serial device path must not be empty")
        if not 50 <= self.baudrate <= 4_000_000:
            raise ConfigurationError(f"serial baudrate must be 50..4000000, got {self.baudrate}")
        if self.bytesize not in BYTESIZES:
            raise ConfigurationError(f"serial bytesize must be one of {BYTESIZES}, got {self.bytesize}")
        if self.parity not in PARITIES:
            raise ConfigurationError(f"serial parity must be N, E or O, got {self.parity!r}")
        if self.stopbits not in STOPBITS:
            raise ConfigurationError(f"serial stopbits must be 1, 1.5 or 2, got {self.stopbits}")
        if self.inter_frame_timeout is not None:
            check_positive("serial inter_frame_timeout", self.inter_frame_timeout)
        check_buffer_limit(self.buffer_limit)

    @property
    def char_time(self) -> float:
        """Seconds one character takes on the line (start + data + parity + stop bits)."""
        bits = 1 + self.bytesize + (0 if self.parity == "N" else 1) + self.stopbits
        return bits / self.baudrate

    def line(self) -> str:
        """The line in the usual short form, e.g. ``2400 8E1``."""
        return f"{self.baudrate} {self.bytesize}{self.parity}{self.stopbits:g}"

    def pyserial_line(self) -> dict[str, Any]:
        """The line as pyserial's settings dict."""
        return {
            "baudrate": self.baudrate,
            "bytesize": self.bytesize,
            "parity": PARITIES[self.parity],
            "stopbits": self.stopbits,
        }


def modbus_rtu_silence(baudrate: int, *, floor: float = 0.0) -> float:
    """Modbus RTU's inter-frame silence: 3.5 characters of 11 bits, fixed 1.75 ms above 19200 Bd."""
    silence = 0.00175 if baudrate > 19_200 else 3.5 * 11 / baudrate
    return max(silence, floor)


class SerialPort(StreamMedium):
    """A serial port behind the Medium interface; the one medium whose line can change."""

    def __init__(self, settings: SerialSettings, *, on_traffic: TrafficHook | None = None) -> None:
        super().__init__(
            buffer_limit=settings.buffer_limit,
            inter_frame_timeout=settings.inter_frame_timeout,
            on_traffic=on_traffic,
        )
        self.settings = settings
        self._port: Any = None  # the open serial.Serial

    @property
    def can_set_line(self) -> bool:
        return True

    def describe(self) -> str:
        rs485 = " rs485" if self.settings.rs485 is not None else ""
        return f"serial {self.settings.device} {self.settings.line()}{rs485}"

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        settings = self.settings
        try:
            port = _Port(None, exclusive=settings.exclusive, timeout=0, write_timeout=0, **settings.pyserial_line())
            port.port = settings.device
            if settings.rs485 is not None:
                port.rs485_mode = settings.rs485.to_pyserial()
            port.open()
        except (OSError, ValueError, termios.error) as exc:
            what = "open (kernel RS-485 mode not supported?)" if settings.rs485 is not None else "open"
            raise MediaError(f"{self.describe()}: {what}: {_reason(exc)}") from exc
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=settings.buffer_limit)
        protocol = asyncio.StreamReaderProtocol(reader)
        try:
            # As open_serial_connection() does, but with our port object, configured before it opened.
            transport, _ = await serial_asyncio.connection_for_serial(loop, lambda: protocol, port)
        except BaseException:
            port.close()  # never leave the device open (and locked) behind a failed open
            raise
        self._port = port
        return reader, asyncio.StreamWriter(transport, protocol, reader, loop)

    async def close(self) -> None:
        self._port = None
        await super().close()

    async def set_line(
        self,
        *,
        baudrate: int | None = None,
        bytesize: int | None = None,
        parity: Parity | None = None,
        stopbits: float | None = None,
        timeout: float = LINE_TIMEOUT,
    ) -> None:
        changes: dict[str, Any] = {
            name: value
            for name, value in (
                ("baudrate", baudrate),
                ("bytesize", bytesize),
                ("parity", parity),
                ("stopbits", stopbits),
            )
            if value is not None
        }
        new = replace(self.settings, **changes)  # validates: ConfigurationError names the setting
        writer = self._open_writer()
        port = self._port
        await self._wait_output_gone(writer, port, timeout)
        try:
            port.apply_settings(new.pyserial_line())
        except (OSError, ValueError, termios.error) as exc:
            # pyserial applies settings one by one: put the whole old line back (best effort).
            with contextlib.suppress(OSError, ValueError, termios.error):
                port.apply_settings(self.settings.pyserial_line())
            raise MediaError(f"{self.describe()}: set line {new.line()}: {_reason(exc)}") from exc
        self.settings = new

    async def _wait_output_gone(self, writer: asyncio.StreamWriter, port: Any, timeout: float) -> None:
        """Return when our buffer, the kernel's and the UART's shift register are empty."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while writer.transport.get_write_buffer_size() > 0 or _out_waiting(port) > 0:
            if loop.time() >= end:
                raise MediaError(f"{self.describe()}: set line: output did not drain within {timeout:g} s")
            await asyncio.sleep(max(_POLL, self.settings.char_time))
        # out_waiting counts the kernel's buffer only; the last characters are still shifting out.
        await asyncio.sleep(2 * self.settings.char_time)


class _Port(serial.Serial):  # type: ignore[misc]  # pyserial ships no type hints
    """pyserial's Serial, minus rewriting termios when a timeout is set to the value it has.

    SerialTransport sets both timeouts to 0 on every port it wraps. Each set would call
    tcsetattr again for nothing: some drivers flush their FIFOs on it, and some
    pseudo-terminals reject a repeated request for parity they do not emulate.
    """

    @property
    def timeout(self) -> float | None:
        return cast(float | None, self._timeout)

    @timeout.setter
    def timeout(self, value: float | None) -> None:
        if not (self.is_open and value == self._timeout):
            serial.Serial.timeout.fset(self, value)

    @property
    def write_timeout(self) -> float | None:
        return cast(float | None, self._write_timeout)

    @write_timeout.setter
    def write_timeout(self, value: float | None) -> None:
        if not (self.is_open and value == self._write_timeout):
            serial.Serial.write_timeout.fset(self, value)


def _out_waiting(port: Any) -> int:
    try:
        return int(port.out_waiting)
    except (OSError, termios.error):
        return 0  # drivers without TIOCOUTQ: rely on the settle time


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return os_reason(exc)
    return str(exc) or type(exc).__name__
