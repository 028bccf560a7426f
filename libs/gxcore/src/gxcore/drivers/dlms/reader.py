"""Reading a DLMS/COSEM meter over TCP, UDP or a serial line: one association, clock, registers, load profile.

:class:`DlmsSession` is the async context manager under the driver
(:class:`gxcore.drivers.dlms.driver.DlmsDriver`, what the collector calls), commands and discovery:
open + associate on enter, release + close on exit, over ``tcp://``, ``udp://`` (wrapper)
or ``serial://`` (HDLC). What it makes of registers and load profiles is in
:mod:`gxcore.protocols.dlms.cosem_reads`.

A meter may push on the link while the session waits for a reply. Such a frame is set
aside and the reply still read (see :mod:`gxcore.protocols.dlms.unsolicited`); ``on_push`` gets it,
whole, as received.

With ciphering, our invocation counter comes from the counter store (keyed by
``meter_key``), which is then required: there is no in-memory default. When the store has
never seen the meter, or the meter refuses the association once, the meter's own frame
counter (``params.frame_counter_obis``, read by the public client in a separate
association) is taken as the floor, jumped past by a safety margin, and the association
is tried once more. A ciphered session holds the meter's lock in the store from before it
reads the frame counter until it closes: a second session with the meter (in this process
or another sharing the store) waits up to ``hold_timeout`` seconds, then raises
:class:`~gxcore.protocols.dlms.invocation.MeterBusyError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType

from gxcore.drivers.dlms.transport import MediumFactory, MediumLink, check_framing, dlms_endpoint, medium_for
from gxcore.errors import AccessDeniedError, GxError, ProtocolError
from gxcore.media import Medium
from gxcore.protocols.dlms.cosem_reads import CosemReads
from gxcore.protocols.dlms.cosem_time import decode_datetime
from gxcore.protocols.dlms.exchange import Exchange
from gxcore.protocols.dlms.invocation import InvocationCounterStore, MeterBusyError, MeterHold
from gxcore.protocols.dlms.parameters import (
    CLASS_CLOCK,
    CLASS_DATA,
    CLOCK_OBIS,
    PUBLIC_CLIENT,
    DlmsParameters,
)
from gxcore.protocols.dlms.session import DlmsClientCore
from gxcore.protocols.dlms.unsolicited import PushHandler


def utc_now() -> datetime:
    return datetime.now(UTC)


class DlmsSession(CosemReads):
    """One association with one meter; every exchange bounded by ``timeout`` seconds.

    ``url`` is ``tcp://host:port``, ``udp://host:port`` (wrapper) or ``serial:///dev/...``
    (HDLC); ConfigurationError, before any I/O, for another scheme or a framing the medium
    cannot carry. ``media`` makes the (unopened) medium for the URL: the real one by
    default, an in-memory peer in tests and bench.

    With ciphering, ``counters`` (a durable store) is required, and the session holds the
    meter's lock from entry to exit (waiting at most ``hold_timeout`` seconds for it).
    ``meter_key`` names the meter in the invocation counter store (the meter id; by default
    ``host:port`` for TCP, else the URL without its query). ``on_push`` gets every
    unsolicited frame that arrives inside an exchange.

    ``medium`` is a connection that is already open (a meter that dialled in): the session
    runs over it instead of opening one from ``url`` (still the meter's address, for the
    framing check and the counter key) and leaves it open on exit. A public-client session
    for the frame counter then runs over the same connection, before the main one.
    """

    def __init__(
        self,
        url: str,
        params: DlmsParameters,
        *,
        timeout: float,
        counters: InvocationCounterStore | None = None,
        meter_key: str | None = None,
        on_push: PushHandler | None = None,
        hold_timeout: float | None = None,
        media: MediumFactory = medium_for,
        medium: Medium | None = None,
    ) -> None:
        super().__init__()
        endpoint = dlms_endpoint(url)
        check_framing(url, params.interface)
        self.url = url
        self.host = endpoint.host
        self.port = endpoint.port or 0
        self.params = params
        self.timeout = timeout
        self.counters = counters
        # TCP keys by host:port, as sessions always have, so stored counters keep their meter.
        default = f"{endpoint.host}:{endpoint.port}" if endpoint.scheme == "tcp" else url.partition("?")[0]
        self.meter_key = meter_key or default
        self.on_push = on_push
        self.media = media
        # Long enough for another session with the meter to finish, short of callers' own bounds.
        self.hold_timeout = hold_timeout if hold_timeout is not None else max(10.0, 5 * timeout)
        self.core = self._new_core()
        self._link: MediumLink | None = None
        self._hold: MeterHold | None = None
        # One link over a borrowed connection for the whole session (and its sibling), so a
        # failure that broke it is never forgotten by a retry.
        self._borrowed = MediumLink(medium, owned=False) if medium is not None else None

    def _sibling(self, params: DlmsParameters) -> DlmsSession:
        """Another session to the same meter over the same kind of medium (the same one when borrowed)."""
        sibling = DlmsSession(self.url, params, timeout=self.timeout, media=self.media)
        sibling._borrowed = self._borrowed
        return sibling

    def _new_core(self) -> DlmsClientCore:
        return DlmsClientCore(self.params, counters=self.counters, meter_key=self.meter_key, on_push=self.on_push)

    async def __aenter__(self) -> DlmsSession:
        if self.params.security is not None:
            await self._take_hold()
        try:
            if self._hold is not None:
                # The store as it is now that no one else talks to the meter (another session may
                # have reserved counters since this one was made).
                self.core = self._new_core()
            await self._start()
        except BaseException:
            self._let_go()
            raise
        return self

    async def _start(self) -> None:
        counter_read = False
        await self._counter_io(self.core.load_counters)
        if self.core.needs_meter_counter and self.params.frame_counter_obis is not None:
            self.core.use_meter_counter(await self.read_meter_counter())
            counter_read = True
        try:
            await self._open()
        except AccessDeniedError:
            if self.params.security is None or counter_read or self.params.frame_counter_obis is None:
                raise
            # Our counter may be below the meter's (a lost or restored store): take the meter's and retry once.
            self.core = self._new_core()
            await self._counter_io(self.core.load_counters)
            self.core.use_meter_counter(await self.read_meter_counter())
            await self._open()

    async def _take_hold(self) -> None:
        """The meter's session lock: polled (the store never blocks), so the event loop goes on meanwhile."""
        store = self.counters
        if store is None:
            return  # the core has already refused a ciphered session without a store
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.hold_timeout
        pause = 0.005
        blocking = getattr(store, "blocking", True)
        while (
            hold := await asyncio.to_thread(store.try_hold, self.meter_key)
            if blocking
            else store.try_hold(self.meter_key)
        ) is None:
            if loop.time() >= deadline:
                raise MeterBusyError(
                    f"another ciphered session with meter {self.meter_key} did not end within"
                    f" {self.hold_timeout:g} s; not starting a second one at once"
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.1)
        self._hold = hold

    def _let_go(self) -> None:
        hold, self._hold = self._hold, None
        if hold is not None:
            hold.release()

    async def _open(self) -> None:
        if self._borrowed is not None:
            self._link = self._borrowed
        else:
            self._link = await MediumLink.over(self.media(self.url, self.timeout))
        try:
            snrm = self.core.open_link()
            if snrm is not None:
                self.core.check_link(await self._run(snrm))
            await self._counters_ready()
            exchange = await self._run(self.core.associate())
            self.core.check_association(exchange)
            if self.core.authentication_pending:
                await self._counters_ready()
                self.core.check_authentication(await self._run(self.core.authenticate()))
            if not self.params.logical_name_referencing:
                await self._counters_ready()
                self.core.take_short_names(await self._run(self.core.read_short_names()))
        except BaseException:
            await self._link.close()
            self._link = None
            raise

    async def read_meter_counter(self) -> int:
        """The meter's frame counter, read by the public client without security (0 if it has none)."""
        obis = self.params.frame_counter_obis
        if obis is None:
            return 0
        public = dataclasses.replace(
            self.params, client_address=PUBLIC_CLIENT, authentication="none", password=None, security=None
        )
        try:
            async with self._sibling(public) as session:
                value = await session.get(CLASS_DATA, obis, 2)
        except ProtocolError:
            return 0  # no such object, or the public client may not read it: start from the store
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ProtocolError(f"frame counter {obis} is not an unsigned integer")
        return value

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        link = self._link
        if link is None:
            self._let_go()
            return
        try:
            # Release and disconnect only over a healthy link, never while cancelling. The
            # readings are in hand; a meter that ignores RLRQ/DISC only loses its slot.
            for close in (self.core.release, self.core.close_link):
                if not link.broken and not isinstance(exc, asyncio.CancelledError):
                    with contextlib.suppress(GxError):
                        await self._counters_ready()  # a ciphered RLRQ takes a counter too
                closing = close()  # built only now: DISC resets gurux's HDLC state the RLRE needs
                if closing is not None and not link.broken and not isinstance(exc, asyncio.CancelledError):
                    with contextlib.suppress(GxError):
                        await link.run(closing, timeout=self.timeout)
        finally:
            try:
                await link.close()
            finally:
                self._let_go()

    @property
    def broken(self) -> bool:
        """True once the link failed (timeout, bad frame, closed); nothing more can be read."""
        return self._link is None or self._link.broken

    async def _counter_io(self, work: Callable[[], object]) -> None:
        """Run the counter store's I/O (file reads, fsync) off the event loop, unless the store does none."""
        if getattr(self.counters, "blocking", True):
            await asyncio.to_thread(work)
        else:
            work()

    async def _counters_ready(self) -> None:
        """Reserve invocation counters before the next ciphered request is built, so building it does no I/O."""
        if self.core.counters_due:
            await self._counter_io(self.core.reserve_counters)

    async def _run(self, exchange: Exchange) -> Exchange:
        if self._link is None:
            raise ProtocolError("session is not open")
        return await self._link.run(exchange, timeout=self.timeout)

    async def get(self, class_id: int, obis: str, attribute: int, selection: bytes | None = None) -> object:
        """GET one attribute's value; a refused access raises AccessDeniedError/ProtocolError."""
        await self._counters_ready()
        exchange = await self._run(self.core.get(class_id, obis, attribute, selection))
        return exchange.value()

    async def get_typed(self, class_id: int, obis: str, attribute: int) -> tuple[object, int]:
        """GET one attribute: its value and its A-XDR type (gurux DataType), e.g. to write it back alike."""
        await self._counters_ready()
        exchange = await self._run(self.core.get(class_id, obis, attribute))
        return exchange.value(), exchange.value_type

    async def set(self, class_id: int, obis: str, attribute: int, value: object, data_type: int) -> None:
        """SET one attribute to ``value`` as A-XDR ``data_type``; a refusal raises."""
        await self._counters_ready()
        (await self._run(self.core.set(class_id, obis, attribute, value, data_type))).value()

    async def set_clock(self, at: datetime) -> None:
        """SET the meter clock (class 8, attribute 2) to ``at``; a refusal raises."""
        await self._counters_ready()
        (await self._run(self.core.set_clock(at))).value()

    async def action(self, class_id: int, obis: str, method: int) -> None:
        """ACTION ``method`` (integer parameter 0) on an object; a refusal raises."""
        await self._counters_ready()
        (await self._run(self.core.action(class_id, obis, method))).value()

    async def call(self, class_id: int, obis: str, method: int, parameters: bytes) -> None:
        """ACTION ``method`` with A-XDR encoded ``parameters``; a refusal raises."""
        await self._counters_ready()
        (await self._run(self.core.call(class_id, obis, method, parameters))).value()

    async def read_clock(self) -> datetime:
        """The meter's clock (class 8, attribute 2) as aware UTC."""
        raw = await self.get(CLASS_CLOCK, CLOCK_OBIS, 2)
        if not isinstance(raw, bytes | bytearray):
            raise ProtocolError("clock time is not an octet string")
        return decode_datetime(raw)
