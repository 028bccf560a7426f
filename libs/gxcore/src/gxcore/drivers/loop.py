"""The one loop that drives a sans-IO protocol core over a :class:`~gxcore.media.Medium`.

Every protocol core under :mod:`gxcore.protocols` has the same shape (:class:`SansIoCore`):

* ``data_to_send()``: bytes to write now (empty when waiting or done);
* ``receive_data(data, now)``: bytes that arrived, with the monotonic time they arrived;
* ``next_deadline()``: the monotonic time by which the core needs bytes or a timer tick,
  or None when it waits for nothing;
* ``handle_timeout(now)``: the deadline passed with nothing received;
* ``done``: the core reached a final state (its result, or its failure, is the core's to report).

:func:`drive` is the only code that moves bytes between a core and a medium: it sends,
waits for the medium until the core's deadline, hands bytes or the timeout back with
``now``, and repeats until the core is done. The core decides what a quiet line means
(a retry, the next telegram, a failure); the loop never guesses. Reads never wait
without a bound: a core that is not done and reports no deadline waits at most
``idle_timeout`` and then gets ``handle_timeout``.

Frames and bytes can be counted with the medium's traffic hook
(:data:`~gxcore.media.TrafficHook`), which every medium takes when it is built.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Final, Protocol

from gxcore.errors import ConfigurationError, MeterTimeoutError
from gxcore.media.medium import SEND_TIMEOUT, Medium

READ_CHUNK: Final = 65536

Clock = Callable[[], float]


class SansIoCore(Protocol):
    """What :func:`drive` needs from a protocol core (see the module doc)."""

    @property
    def done(self) -> bool: ...

    def data_to_send(self) -> bytes: ...

    def receive_data(self, data: bytes, now: float) -> None: ...

    def next_deadline(self) -> float | None: ...

    def handle_timeout(self, now: float) -> None: ...


async def drive(
    core: SansIoCore,
    medium: Medium,
    *,
    idle_timeout: float,
    send_timeout: float = SEND_TIMEOUT,
    clock: Clock = time.monotonic,
    between: Callable[[], Awaitable[None]] | None = None,
    chunk: int = READ_CHUNK,
) -> None:
    """Run ``core`` over the open ``medium`` until ``core.done``.

    ``between`` is awaited after each step that left the core not done and with nothing to
    send (a driver applies what the core asked for that is not bytes, such as a new baud
    rate, there); bytes the core queued behind that request are sent right after it. Media errors
    propagate as gxcore errors (MediaError, MeterTimeoutError for a send that would not go);
    a quiet line is the core's :meth:`~SansIoCore.handle_timeout`, never an exception here.
    """
    if not idle_timeout > 0:
        raise ConfigurationError(f"idle timeout must be positive, not {idle_timeout!r}")
    while True:
        out = core.data_to_send()
        if out:
            await medium.send(out, timeout=send_timeout)
            continue  # a core may queue several frames; the next call returns b"" when it is waiting
        if core.done:
            return
        if between is not None:
            await between()
            out = core.data_to_send()  # what the core held back until ``between`` ran (bytes at a new speed)
            if out:
                await medium.send(out, timeout=send_timeout)
                continue
            if core.done:
                return
        now = clock()
        deadline = core.next_deadline()
        wait = idle_timeout if deadline is None else deadline - now
        if wait <= 0:
            core.handle_timeout(now)
            continue
        try:
            data = await medium.receive(chunk, timeout=wait)
        except MeterTimeoutError:
            core.handle_timeout(clock())
            continue
        core.receive_data(data, clock())
