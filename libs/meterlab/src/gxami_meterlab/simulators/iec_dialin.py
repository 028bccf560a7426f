"""IEC 62056-21 meters that dial in: each calls a collector and answers its sign-on and readout requests.

The meter is :class:`~gxami_meterlab.simulators.iec62056_21.SimulatedIecMeter` (its identification
carries the meter id as the ident part, ``/GXS5SIM00100003``), behind a modem that opens a TCP
connection to the collector and then only relays bytes: the collector sends ``/?!``, the meter
answers as over its optical port. The call ends when the collector hangs up or after
``idle_timeout`` of silence. Each call is reported as a
:class:`~gxami_meterlab.simulators.dlms_dialin.DialInCall`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from gxami_meterlab.simulators.dlms import meter_id
from gxami_meterlab.simulators.dlms_dialin import CallEnd, DialInCall
from gxami_meterlab.simulators.iec62056_21 import MeterSend, SimulatedIecMeter
from gxcore.errors import ConfigurationError


def _utc_now() -> datetime:
    return datetime.now(UTC)


class IecDialInMeters:
    """``meters`` IEC 62056-21 meters calling ``targets`` in turn (call n of meter i: ``targets[(i + n) % k]``)."""

    def __init__(
        self,
        meters: int,
        targets: Sequence[tuple[str, int]],
        *,
        seed: int = 1,
        idle_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        if not targets:
            raise ConfigurationError("dial-in simulator: no collector to call")
        self.count, self.targets, self.seed = meters, list(targets), seed
        self.idle_timeout, self.connect_timeout, self.clock = idle_timeout, connect_timeout, clock
        self.meters = [SimulatedIecMeter(seed, i, ident=meter_id(seed, i)) for i in range(meters)]
        self.calls_made = [0] * meters

    async def call(self, index: int) -> DialInCall:
        """Meter ``index`` calls once and answers until hung up on (or idle)."""
        n = self.calls_made[index]
        self.calls_made[index] += 1
        host, port = self.targets[(index + n) % len(self.targets)]
        started, answered = self.clock(), 0
        meter = self.meters[index]

        def done(ended: CallEnd) -> DialInCall:
            return DialInCall(
                meter_id(self.seed, index), index, n, f"{host}:{port}", answered, ended, started, self.clock()
            )

        try:
            async with asyncio.timeout(self.connect_timeout):
                reader, writer = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError):
            return done("unreachable")
        ended: CallEnd = "hung-up"
        try:
            while True:
                try:
                    data = await asyncio.wait_for(reader.read(1024), timeout=self.idle_timeout)
                except TimeoutError:
                    ended = "idle"
                    break
                if not data:
                    break
                for output in meter.receive_data(data, self.clock()):
                    if isinstance(output, MeterSend):  # a speed change means nothing over the modem's TCP
                        writer.write(output.data)
                        await writer.drain()
                        answered += 1
        except ConnectionError:
            ended = "hung-up"
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        return done(ended)
