"""Byte streams for the field drivers (M-Bus, wM-Bus, DSMR, IEC 62056-21): a thin shim over gxcore.media.

The drivers' read loops want "the next bytes, or None when the line stayed quiet": a
quiet line is a normal event for a sans-IO core with its own deadlines, not an error.
:class:`MeterStream` gives them that over a :class:`gxcore.media.Medium`; everything
else (bounded buffers, errors naming the medium, exclusive serial ports, RS-485) is
the media layer's.

URLs: ``tcp://host:port`` and ``serial:///dev/ttyUSB0``. The media parameters of the
URL query (``connect_timeout``, ``baud``, ``parity``, ``rs485`` ..., see
:mod:`gxcore.media.url`) are passed on; a driver's own query parameters (``address``,
``framing`` ...) are not. Serial line settings the URL leaves out come from the
protocol's defaults (M-Bus 2400 8E1, IEC 62056-21 300 7E1, DSMR 5 115200 8N1); the TCP
connect timeout defaults to the read's timeout.
"""

from __future__ import annotations

from dataclasses import dataclass

from gxcore.errors import ConfigurationError, MeterTimeoutError
from gxcore.media import KNOWN_PARAMETERS, Medium, SerialPort, SerialSettings, TcpClient, TcpSettings, medium_settings
from gxcore.media.endpoint import Endpoint


@dataclass(frozen=True, slots=True)
class LineDefaults:
    """A protocol's serial line settings, used where the URL does not give its own."""

    baud: int
    bytesize: int = 8
    parity: str = "N"
    stopbits: float = 1


class MeterStream:
    """One open medium, read as "bytes or None when quiet"; every failure a gxcore error."""

    def __init__(self, medium: Medium, *, meter_id: str) -> None:
        self.medium = medium
        self.meter_id = meter_id

    async def write(self, data: bytes, *, timeout: float) -> None:
        """Send ``data``; MediaError if the link is gone, MeterTimeoutError if it will not take it."""
        await self.medium.send(data, timeout=timeout)

    async def read_some(self, *, timeout: float, size: int = 4096) -> bytes | None:
        """The next bytes, or None when nothing came within ``timeout``; MediaError when the peer closed."""
        if timeout <= 0:
            return None
        try:
            return await self.medium.receive(size, timeout=timeout)
        except MeterTimeoutError:
            return None

    async def set_baud(self, baud: int) -> None:
        """Change the serial line speed once our bytes have left; nothing to do over TCP."""
        if self.medium.can_set_line:
            await self.medium.set_line(baudrate=baud)

    async def close(self) -> None:
        """Close the medium; never raises."""
        await self.medium.close()


def medium_url(endpoint: Endpoint) -> str:
    """The endpoint's URL without its query (the parameters travel as keywords)."""
    if endpoint.scheme == "serial":
        return f"serial://{endpoint.path}"
    host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
    return f"{endpoint.scheme}://{host}:{endpoint.port}"


async def open_stream(
    endpoint: Endpoint, *, timeout: float, meter_id: str, serial_defaults: LineDefaults | None = None
) -> MeterStream:
    """Open ``endpoint`` (tcp or serial) within ``timeout`` seconds."""
    if not timeout > 0:
        raise ConfigurationError(f"timeout must be positive, not {timeout}")
    if endpoint.scheme not in ("tcp", "serial"):
        raise ConfigurationError(f"{endpoint.scheme}:// is not supported here; use tcp:// or serial://")
    if endpoint.scheme == "serial" and serial_defaults is None:
        raise ConfigurationError("this protocol is not read over a serial line; use tcp://")
    known = KNOWN_PARAMETERS[endpoint.scheme]
    params: dict[str, str | int | float | bool] = {k: v for k, v in endpoint.query.items() if k in known}
    if endpoint.scheme == "tcp":
        params.setdefault("connect_timeout", timeout)
    elif serial_defaults is not None:
        params.setdefault("baud", serial_defaults.baud)
        params.setdefault("bytesize", serial_defaults.bytesize)
        params.setdefault("parity", serial_defaults.parity)
        params.setdefault("stopbits", serial_defaults.stopbits)
    settings = medium_settings(medium_url(endpoint), **params)
    medium: Medium
    if isinstance(settings, TcpSettings):
        medium = TcpClient(settings)
    elif isinstance(settings, SerialSettings):
        medium = SerialPort(settings)
    else:  # medium_settings keeps the scheme, and only tcp and serial get here
        raise ConfigurationError(f"{endpoint.scheme}:// is not supported here; use tcp:// or serial://")
    await medium.open()
    return MeterStream(medium, meter_id=meter_id)
