"""M-Bus meters that dial in: a modem on one meter's M-Bus line calls a collector and relays frames.

Each caller is the one slave of its own :class:`~gxami_meterlab.simulators.mbus.MBusBus` (seeded
per meter, so its secondary address and values are those of ``MBusBus(seed, 1)`` of that seed).
The collector's frames go to the bus and the bus's replies come back, as through an M-Bus TCP
gateway, until the collector hangs up or nothing comes for ``idle_timeout``. Each call is
reported as a :class:`~gxami_meterlab.simulators.dlms_dialin.DialInCall`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from gxami_meterlab.simulators.dlms_dialin import CallEnd, DialInCall
from gxami_meterlab.simulators.mbus import MBusBus
from gxcore.errors import ConfigurationError
from gxcore.protocols.mbus.frame import MAX_FRAME, decode_frame


def _utc_now() -> datetime:
    return datetime.now(UTC)


class MBusDialInMeters:
    """``meters`` M-Bus meters (meter ``i``: the single slave of ``MBusBus(seeds[i], 1)``) calling ``targets``."""

    def __init__(
        self,
        seeds: Sequence[int],
        targets: Sequence[tuple[str, int]],
        *,
        idle_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        if not targets:
            raise ConfigurationError("dial-in simulator: no collector to call")
        self.targets = list(targets)
        self.buses = [MBusBus(seed, 1, clock=clock) for seed in seeds]
        self.idle_timeout, self.connect_timeout, self.clock = idle_timeout, connect_timeout, clock
        self.calls_made = [0] * len(self.buses)

    def secondary_address(self, index: int) -> str:
        """The 16-character secondary address meter ``index`` answers with."""
        sec = self.buses[index].meters[0].secondary
        return f"{sec.id_digits}{sec.manufacturer:04X}{sec.version:02X}{sec.medium:02X}"

    async def call(self, index: int) -> DialInCall:
        """Meter ``index`` calls once and relays frames until hung up on (or idle)."""
        n = self.calls_made[index]
        self.calls_made[index] += 1
        host, port = self.targets[(index + n) % len(self.targets)]
        started, answered, bus = self.clock(), 0, self.buses[index]

        def done(ended: CallEnd) -> DialInCall:
            name = self.secondary_address(index)
            return DialInCall(name, index, n, f"{host}:{port}", answered, ended, started, self.clock())

        try:
            async with asyncio.timeout(self.connect_timeout):
                reader, writer = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError):
            return done("unreachable")
        ended: CallEnd = "hung-up"
        buffer = bytearray()
        try:
            while True:
                try:
                    chunk = await asyncio.wait_for(reader.read(512), timeout=self.idle_timeout)
                except TimeoutError:
                    ended = "idle"
                    break
                if not chunk:
                    break
                buffer += chunk
                while buffer:
                    consumed, frame = decode_frame(buffer)
                    if consumed == 0:
                        break
                    request = bytes(buffer[:consumed])
                    del buffer[:consumed]
                    reply = bus.respond(request) if frame is not None else None
                    if reply:
                        writer.write(reply)
                        await writer.drain()
                        answered += 1
                del buffer[: max(0, len(buffer) - MAX_FRAME)]
        except ConnectionError:
            ended = "hung-up"
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        return done(ended)
