"""Listening to a wM-Bus receiver for as long as it talks: every telegram it hears, as it hears it.

:func:`receive_telegrams` runs a :class:`~gxcore.protocols.wmbus.heard.ReceiverCore` over
an open medium with :func:`gxcore.drivers.loop.drive` and yields each
:class:`~gxcore.protocols.wmbus.heard.HeardTelegram` (link header, security, RSSI; the raw
telegram to decrypt later with that meter's key). It never closes the medium. It ends
with MeterTimeoutError when the line has been quiet for ``idle_timeout`` seconds, and with
MediaError when the receiver hangs up or the link fails; garbage, comments and dongle
messages that are not telegrams go to ``on_skipped`` and never end it.

:func:`open_receiver` opens a receiver's URL: ``tcp://host:port`` (a gateway or a
ser2net bridge) or ``serial:///dev/ttyUSB0`` for a dongle on this machine (iM871A
57600 8N1, Amber 9600 8N1 unless the URL says otherwise). The dongle is not configured:
it listens in the link mode, and with the RSSI setting, stored in it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable

from gxcore.drivers.common import LineDefaults, open_endpoint
from gxcore.drivers.loop import Clock, drive
from gxcore.media import Medium, TrafficHook
from gxcore.media.endpoint import Endpoint
from gxcore.protocols.wmbus.heard import HeardTelegram, ReceiverCore
from gxcore.protocols.wmbus.receivers import ReceiverFraming, Skipped

SERIAL_DEFAULTS: dict[str, LineDefaults] = {
    "im871a": LineDefaults(57600),
    "amber": LineDefaults(9600),
    "hex": LineDefaults(9600),
    "length": LineDefaults(9600),
    "lfield": LineDefaults(9600),
}


async def open_receiver(
    url: str, framing: ReceiverFraming, *, timeout: float, on_traffic: TrafficHook | None = None
) -> Medium:
    """The receiver at ``url`` opened within ``timeout`` seconds (module doc); the caller closes it."""
    endpoint = Endpoint.parse(url)
    return await open_endpoint(
        endpoint, timeout=timeout, serial_defaults=SERIAL_DEFAULTS[framing], on_traffic=on_traffic
    )


async def receive_telegrams(
    medium: Medium,
    framing: ReceiverFraming,
    *,
    idle_timeout: float,
    rssi: bool = True,
    on_skipped: Callable[[Skipped], None] | None = None,
    clock: Clock | None = None,
) -> AsyncGenerator[HeardTelegram, None]:
    """Every telegram heard on the open ``medium``, in order, until the line is quiet or fails (module doc)."""
    now = clock or asyncio.get_running_loop().time
    core = ReceiverCore(framing, now=now(), idle_timeout=idle_timeout, rssi=rssi, on_skipped=on_skipped)
    while True:
        await drive(core, medium, idle_timeout=idle_timeout, clock=now)
        for telegram in core.take():
            yield telegram
        if core.error is not None:
            raise core.error
