"""Thin asyncio adapter: runs sans-IO :class:`~gxcore.protocols.dlms.session.Exchange` objects over a medium.

The framing (wrapper or HDLC) is the exchange's business; bytes move between it and a
:class:`~gxcore.media.Medium` (TCP, UDP or a serial port) through the one driver loop,
:func:`gxcore.drivers.loop.drive`. The exchange keeps the reply deadline (``now`` passed
in); the medium maps OS errors to MeterTimeoutError/MediaError itself.

After a timeout, media error, bad frame or cancellation the link is marked broken: its
byte stream may still hold a late reply, so it is never reused.

Which framing a medium carries (IEC 62056-46/-47): a serial line speaks HDLC, UDP the
wrapper, TCP either (wrapper to a meter, HDLC through a TCP-to-serial converter).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from gxcore.drivers.loop import drive
from gxcore.errors import ConfigurationError, MediaError, MeterTimeoutError
from gxcore.media import Medium, open_medium
from gxcore.media.endpoint import Endpoint
from gxcore.protocols.dlms.exchange import Exchange
from gxcore.protocols.dlms.parameters import Interface

DLMS_SCHEMES: Final = frozenset({"tcp", "udp", "serial"})
# The framing a scheme forces; TCP carries either.
_FRAMING: Final[dict[str, Interface]] = {"udp": "wrapper", "serial": "hdlc"}

MediumFactory = Callable[[str, float], Medium]
"""``(url, timeout) -> unopened medium``: how a session reaches its meter (:func:`medium_for`,
or an in-memory peer in tests and bench)."""


def framing_for(url: str) -> Interface | None:
    """The interface a meter URL forces (``serial``: hdlc, ``udp``: wrapper), None for tcp."""
    return _FRAMING.get(dlms_endpoint(url).scheme)


def dlms_endpoint(url: str) -> Endpoint:
    """Parse a DLMS meter URL; ConfigurationError unless tcp://, udp:// or serial://."""
    endpoint = Endpoint.parse(url)
    if endpoint.scheme not in DLMS_SCHEMES:
        raise ConfigurationError(f"DLMS needs a tcp://, udp:// or serial:// URL, not {endpoint.scheme}://")
    return endpoint


def check_framing(url: str, interface: Interface) -> None:
    """ConfigurationError when ``interface`` cannot run over the URL's medium."""
    forced = framing_for(url)
    if forced is not None and interface != forced:
        scheme = dlms_endpoint(url).scheme
        raise ConfigurationError(f"DLMS over {scheme}:// uses interface {forced!r}, not {interface!r}")


def medium_for(url: str, timeout: float) -> Medium:
    """The (unopened) medium of a DLMS URL; connecting is bounded by ``timeout`` unless the URL says."""
    endpoint = dlms_endpoint(url)
    if endpoint.scheme == "tcp" and "connect_timeout" not in endpoint.query:
        return open_medium(url, connect_timeout=timeout)
    if endpoint.scheme == "udp" and "open_timeout" not in endpoint.query:
        return open_medium(url, open_timeout=timeout)
    return open_medium(url)


class MediumLink:
    """One open medium to a meter (wrapper or HDLC), driving exchanges over it.

    ``owned`` says whether :meth:`close` closes the medium: a link over a connection the
    meter opened to us (``owned=False``) leaves it open for whoever handed it over.
    """

    def __init__(self, medium: Medium, *, owned: bool = True) -> None:
        self.medium = medium
        self.owned = owned
        self.where = medium.describe()
        self.broken = False

    @classmethod
    async def over(cls, medium: Medium) -> MediumLink:
        """Open ``medium`` (its own timeouts apply) and wrap it; closes it again if opening fails."""
        try:
            await medium.open()
        except BaseException:
            await medium.close()
            raise
        return cls(medium)

    async def run(self, exchange: Exchange, *, timeout: float) -> Exchange:
        """Drive ``exchange`` to completion; each reply frame is due ``timeout`` s after the last send or receive."""
        if self.broken:
            # A late reply to the failed exchange may still arrive and would answer this one.
            raise MediaError(f"{self.where} {exchange.what}: link is out of step after an earlier failure")
        try:
            exchange.start(time.monotonic(), timeout)
            await drive(exchange, self.medium, idle_timeout=timeout)
        except MeterTimeoutError:
            self.broken = True
            raise
        except MediaError as exc:
            self.broken = True
            raise MediaError(f"{exchange.what}: {exc.reason}") from None
        except BaseException:
            # Bad frames, cancellation: the stream is out of step, never reuse it.
            self.broken = True
            raise
        if exchange.failure is not None:
            self.broken = True  # the reply may still come, and would answer the next request
            raise MeterTimeoutError(f"{self.where} {exchange.failure.reason}") from None
        return exchange

    async def close(self) -> None:
        """Close the medium if this link owns it; never raises."""
        if self.owned:
            await self.medium.close()
