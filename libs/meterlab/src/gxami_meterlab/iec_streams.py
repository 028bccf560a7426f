"""Thin asyncio adapter: drive an ``Iec62056Session`` over a stream pair (TCP bridge or serial port).

The protocol stays in the sans-IO session; this module only moves bytes and keeps
time. Over a TCP bridge (optical probe on a ser2net-like port) baud-rate changes
are the bridge's business, so ``on_baud_rate`` is left out; a serial transport passes
a coroutine that sets the port speed once the written bytes have drained.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from gxcore.errors import MediaError, ProtocolError
from gxcore.protocols.iec62056_21.readout import Iec62056Readout
from gxcore.protocols.iec62056_21.session import (
    Iec62056Session,
    ReadoutReceived,
    SendBytes,
    SessionEvent,
    SessionFailed,
    SwitchBaudRate,
)

_READ_CHUNK = 4096


async def run_session(
    session: Iec62056Session,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    on_baud_rate: Callable[[int], Awaitable[None]] | None = None,
) -> Iec62056Readout:
    """Run ``session`` to its end; return the readout or raise the session's gxcore error."""
    clock = asyncio.get_running_loop().time
    events: list[SessionEvent] = session.start(clock())
    while True:
        for event in events:
            if isinstance(event, SendBytes):
                writer.write(event.data)
                await writer.drain()
            elif isinstance(event, SwitchBaudRate) and on_baud_rate is not None:
                await on_baud_rate(event.baud)
            elif isinstance(event, ReadoutReceived):
                return event.readout
            elif isinstance(event, SessionFailed):
                raise event.error
        deadline = session.next_deadline()
        if deadline is None:
            raise ProtocolError(f"IEC 62056-21 session stalled in state {session.state.value}")
        try:
            data = await asyncio.wait_for(reader.read(_READ_CHUNK), max(0.0, deadline - clock()))
        except TimeoutError:
            events = session.handle_timer(clock())
            continue
        except OSError as exc:
            raise MediaError(f"reading from the meter link failed: {exc.strerror or exc}") from None
        if not data:
            raise MediaError("the meter link closed during the session")
        events = session.receive_data(data, clock())
