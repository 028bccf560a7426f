"""TCP client medium: one outbound connection to a meter, gateway or TCP-to-serial converter."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from gxcore.errors import ConfigurationError, MediaError, MeterTimeoutError
from gxcore.media.medium import DEFAULT_BUFFER_LIMIT, TrafficHook, check_buffer_limit, check_port, check_positive
from gxcore.media.stream import StreamMedium, os_reason


@dataclass(frozen=True, slots=True)
class TcpSettings:
    """Where to connect and how long connecting may take."""

    host: str
    port: int
    connect_timeout: float = 5.0
    buffer_limit: int = DEFAULT_BUFFER_LIMIT

    def __post_init__(self) -> None:
        if not self.host:
            raise ConfigurationError("host must not be empty")
        check_port(self.port)
        check_positive("connect_timeout", self.connect_timeout)
        check_buffer_limit(self.buffer_limit)


class TcpClient(StreamMedium):
    """A TCP connection opened by us; each :meth:`open` after :meth:`close` is a new connection."""

    def __init__(self, settings: TcpSettings, *, on_traffic: TrafficHook | None = None) -> None:
        super().__init__(buffer_limit=settings.buffer_limit, on_traffic=on_traffic)
        self.settings = settings

    def describe(self) -> str:
        host = self.settings.host
        return f"tcp [{host}]:{self.settings.port}" if ":" in host else f"tcp {host}:{self.settings.port}"

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        timeout = self.settings.connect_timeout
        scope = asyncio.timeout(timeout)
        try:
            async with scope:
                return await asyncio.open_connection(
                    self.settings.host, self.settings.port, limit=self.settings.buffer_limit
                )
        except TimeoutError as exc:
            if scope.expired():
                raise MeterTimeoutError(f"{self.describe()}: connect: no answer within {timeout:g} s") from None
            raise MediaError(f"{self.describe()}: connect: {os_reason(exc)}") from exc
        except OSError as exc:  # refused, unreachable, name not resolved
            raise MediaError(f"{self.describe()}: connect: {os_reason(exc)}") from exc
