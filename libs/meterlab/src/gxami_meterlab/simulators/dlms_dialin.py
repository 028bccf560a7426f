"""DLMS meters that dial in: each opens a TCP connection to a collector, answers as a server on it, hangs up.

The same meters as :mod:`gxami_meterlab.simulators.dlms` (values a pure function of seed, index
and instant; the same COSEM objects), but the meter calls: call ``n`` of meter ``i`` goes to a
target picked at random (seeded by ``(seed, i, n)``, so a run is repeatable), optionally sends an
identification line first (``<meter id>\\r\\n``, as a modem announcing itself), then answers
every request that comes over the connection. The call ends when the collector hangs up (the
normal end, after it released the association), when nothing comes for ``idle_timeout``, or
the meter gives up after ``max_call_s``.

Fault case: ``stall`` maps a meter index to a number of requests; on its *first* call that meter
answers that many, then goes silent while keeping the line open (a modem that lost its radio
link mid-session). Its later calls are normal. Every call is reported as a :class:`DialInCall`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from gxami_meterlab.dlms.server import CosemMeterCore
from gxami_meterlab.simulators.dlms import (
    EVENT_LOGS,
    OBJECTS,
    PROFILES,
    REGISTERS,
    MeterState,
    _MeterValues,
    meter_id,
    meter_security,
    utc_now,
)
from gxcore.errors import ConfigurationError, GxError
from gxcore.protocols.dlms.ciphering import SecurityPolicy
from gxcore.protocols.dlms.parameters import Authentication
from gxcore.secrets import Secret

CallEnd = Literal["hung-up", "idle", "stalled", "unreachable", "garbled", "too-long"]
READ_CHUNK: Final = 65536


@dataclass(frozen=True, slots=True)
class DialInCall:
    """One call a simulated meter made: where, how many requests it answered, how it ended."""

    meter_id: str
    index: int
    call: int
    target: str
    answered: int
    ended: CallEnd
    started_at: datetime
    finished_at: datetime


class DialInMeters:
    """``meters`` simulated DLMS meters that call ``targets``; see the module doc."""

    def __init__(
        self,
        meters: int,
        targets: Sequence[tuple[str, int]],
        *,
        seed: int = 1,
        authentication: Authentication = "none",
        password: str | Secret | None = None,
        security_policy: SecurityPolicy = "authenticated-encrypted",
        ident: bool = True,
        stall: Mapping[int, int] | None = None,
        idle_timeout: float = 10.0,
        max_call_s: float = 120.0,
        connect_timeout: float = 10.0,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        if not targets:
            raise ConfigurationError("dial-in simulator: no collector to call")
        if authentication == "low" and not password:
            raise ConfigurationError("a simulator with low authentication needs a password")
        self.count = meters
        self.targets = list(targets)
        self.seed = seed
        self.authentication: Authentication = authentication
        self.password = Secret(password) if isinstance(password, str) else password
        self.security_policy: SecurityPolicy = security_policy
        self.ident = ident
        self.stall = dict(stall or {})
        self.idle_timeout = idle_timeout
        self.max_call_s = max_call_s
        self.connect_timeout = connect_timeout
        self.clock = clock
        self.states = [MeterState() for _ in range(meters)]  # counters and clock survive calls
        self.calls_made = [0] * meters

    def target_of(self, index: int, call: int) -> tuple[str, int]:
        """Where call ``call`` of meter ``index`` goes (random, but the same in every run)."""
        return random.Random(f"{self.seed}:{index}:{call}").choice(self.targets)  # noqa: S311 - not security

    def _core(self, index: int) -> CosemMeterCore:
        return CosemMeterCore(
            _MeterValues(self.seed, index, self.states[index]),
            REGISTERS,
            PROFILES + EVENT_LOGS,
            objects=OBJECTS,
            authentication=self.authentication,
            password=self.password,
            security=(
                meter_security(self.seed, index, self.security_policy) if self.authentication == "high-gmac" else None
            ),
            counters=self.states[index].counters,
        )

    async def call(self, index: int) -> DialInCall:
        """Meter ``index`` calls once: connect, announce, answer until hung up on (or idle)."""
        n = self.calls_made[index]
        self.calls_made[index] += 1
        host, port = self.target_of(index, n)
        started = self.clock()
        stall_after = self.stall.get(index) if n == 0 else None
        answered = 0

        def done(ended: CallEnd) -> DialInCall:
            mid = meter_id(self.seed, index)
            return DialInCall(mid, index, n, f"{host}:{port}", answered, ended, started, self.clock())

        try:
            async with asyncio.timeout(self.connect_timeout):
                reader, writer = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError):
            return done("unreachable")
        ended: CallEnd = "hung-up"
        try:
            async with asyncio.timeout(self.max_call_s):
                if self.ident:
                    writer.write(f"{meter_id(self.seed, index)}\r\n".encode())
                    await writer.drain()
                core = self._core(index)
                while True:
                    try:
                        data = await asyncio.wait_for(reader.read(READ_CHUNK), timeout=self.idle_timeout)
                    except TimeoutError:
                        ended = "stalled" if stall_after is not None and answered >= stall_after else "idle"
                        break
                    if not data:
                        ended = "stalled" if stall_after is not None and answered >= stall_after else "hung-up"
                        break
                    if stall_after is not None and answered >= stall_after:
                        continue  # the radio link is gone: requests go unanswered
                    try:
                        out = core.receive_data(data, self.clock())
                    except GxError:
                        ended = "garbled"
                        break
                    if out:
                        writer.write(out)
                        await writer.drain()
                        answered += 1
        except TimeoutError:
            ended = "too-long"
        except (ConnectionError, asyncio.IncompleteReadError):
            ended = "hung-up"
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        return done(ended)


async def run_dialer(
    fleet: DialInMeters,
    stop: asyncio.Event,
    *,
    calls: int = 1,
    every_s: float = 900.0,
    spread_s: float = 0.0,
    only: Sequence[int] | None = None,
    on_call: Callable[[DialInCall], None] | None = None,
) -> list[DialInCall]:
    """Each meter (or those in ``only``) calls ``calls`` times (0: until ``stop``), ``every_s`` apart.

    Meter ``i`` first waits ``spread_s * i / meters``, so a fleet does not call in one burst.
    """
    indexes = list(only) if only is not None else list(range(fleet.count))
    made: list[DialInCall] = []

    async def meter(position: int, index: int) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=spread_s * position / max(len(indexes), 1))
        n = 0
        while not stop.is_set() and (calls <= 0 or n < calls):
            record = await fleet.call(index)
            made.append(record)
            if on_call is not None:
                on_call(record)
            n += 1
            if calls > 0 and n >= calls:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=every_s)

    await asyncio.gather(*(meter(p, i) for p, i in enumerate(indexes)))
    return made
