"""Reading a DLMS/COSEM meter over TCP, UDP or a serial line: one association, clock, registers, load profile.

:func:`read_dlms` (host and TCP port) and :func:`read_dlms_url` (``tcp://``, ``udp://``
wrapper or ``serial://`` HDLC) are what the collector calls. :class:`DlmsSession` is the
async context manager underneath them (open + associate on enter, release + close on
exit) for callers that need other services in the same association; what it makes of
registers and load profiles is in :mod:`gxcore.dlms.cosem_reads`.

A meter may push on the link while the session waits for a reply. Such a frame is set
aside and the reply still read (see :mod:`gxcore.dlms.unsolicited`); ``on_push`` gets it,
whole, as received.

With ciphering, our invocation counter comes from the counter store (keyed by
``meter_key``), which is then required: there is no in-memory default. When the store has
never seen the meter, or the meter refuses the association once, the meter's own frame
counter (``params.frame_counter_obis``, read by the public client in a separate
association) is taken as the floor, jumped past by a safety margin, and the association
is tried once more. A ciphered session holds the meter's lock in the store from before it
reads the frame counter until it closes: a second session with the meter (in this process
or another sharing the store) waits up to ``hold_timeout`` seconds, then raises
:class:`~gxcore.dlms.invocation.MeterBusyError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType

from gxcore.dlms.cosem_reads import CosemReads
from gxcore.dlms.cosem_time import decode_datetime
from gxcore.dlms.exchange import Exchange
from gxcore.dlms.invocation import InvocationCounterStore, MeterBusyError, MeterHold
from gxcore.dlms.obis import reduced
from gxcore.dlms.parameters import (
    CLASS_CLOCK,
    CLASS_DATA,
    CLOCK_OBIS,
    PUBLIC_CLIENT,
    DlmsParameters,
    DlmsReadRequest,
    DlmsReadResult,
    ReadFailure,
)
from gxcore.dlms.session import DlmsClientCore
from gxcore.dlms.transport import MediumLink, TcpLink, check_framing, dlms_endpoint
from gxcore.dlms.unsolicited import PushHandler
from gxcore.errors import AccessDeniedError, GxError, ProtocolError
from gxcore.readings import Reading


def utc_now() -> datetime:
    return datetime.now(UTC)


class DlmsSession(CosemReads):
    """One association with one meter; every exchange bounded by ``timeout`` seconds.

    With ciphering, ``counters`` (a durable store) is required, and the session holds the
    meter's lock from entry to exit (waiting at most ``hold_timeout`` seconds for it).

    ``DlmsSession(host, port, ...)`` connects over TCP; :meth:`for_url` over any DLMS
    medium. ``meter_key`` names the meter in the invocation counter store (the meter id;
    by default ``host:port``, or the URL without its query for serial/UDP). ``on_push``
    gets every unsolicited frame that arrives inside an exchange.
    """

    def __init__(
        self,
        host: str,
        port: int,
        params: DlmsParameters,
        *,
        timeout: float,
        counters: InvocationCounterStore | None = None,
        meter_key: str | None = None,
        on_push: PushHandler | None = None,
        hold_timeout: float | None = None,
    ) -> None:
        super().__init__()
        self.host = host
        self.port = port
        self.params = params
        self.timeout = timeout
        self.counters = counters
        self.meter_key = meter_key or f"{host}:{port}"
        self.url: str | None = None  # set by for_url: the link opens this medium instead of TCP
        self.on_push = on_push
        # Long enough for another session with the meter to finish, short of callers' own bounds.
        self.hold_timeout = hold_timeout if hold_timeout is not None else max(10.0, 5 * timeout)
        self.core = self._new_core()
        self._link: MediumLink | None = None
        self._hold: MeterHold | None = None

    @classmethod
    def for_url(
        cls,
        url: str,
        params: DlmsParameters,
        *,
        timeout: float,
        counters: InvocationCounterStore | None = None,
        meter_key: str | None = None,
        on_push: PushHandler | None = None,
        hold_timeout: float | None = None,
    ) -> DlmsSession:
        """A session over ``tcp://host:port``, ``udp://host:port`` (wrapper) or ``serial:///dev/...`` (HDLC).

        ConfigurationError, before any I/O, for another scheme or a framing the medium cannot carry.
        """
        endpoint = dlms_endpoint(url)
        check_framing(url, params.interface)
        # TCP keeps the key DlmsSession(host, port) gives, so counters survive a switch to URLs.
        default = f"{endpoint.host}:{endpoint.port}" if endpoint.scheme == "tcp" else url.partition("?")[0]
        key = meter_key or default
        session = cls(
            endpoint.host,
            endpoint.port or 0,
            params,
            timeout=timeout,
            counters=counters,
            meter_key=key,
            on_push=on_push,
            hold_timeout=hold_timeout,
        )
        session.url = url
        return session

    def _sibling(self, params: DlmsParameters) -> DlmsSession:
        """Another session to the same meter over the same kind of medium."""
        if self.url is not None:
            return DlmsSession.for_url(self.url, params, timeout=self.timeout)
        return DlmsSession(self.host, self.port, params, timeout=self.timeout)

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
        while (hold := store.try_hold(self.meter_key)) is None:
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
        if self.url is not None:
            self._link = await MediumLink.for_url(self.url, timeout=self.timeout)
        else:
            # Through the module's TcpLink name: bench/sessions.py stands an in-memory link in for it.
            self._link = await TcpLink.open(self.host, self.port, timeout=self.timeout)
        try:
            snrm = self.core.open_link()
            if snrm is not None:
                self.core.check_link(await self._run(snrm))
            exchange = await self._run(self.core.associate())
            self.core.check_association(exchange)
            if self.core.authentication_pending:
                self.core.check_authentication(await self._run(self.core.authenticate()))
            if not self.params.logical_name_referencing:
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

    async def _run(self, exchange: Exchange) -> Exchange:
        if self._link is None:
            raise ProtocolError("session is not open")
        return await self._link.run(exchange, timeout=self.timeout)

    async def get(self, class_id: int, obis: str, attribute: int, selection: bytes | None = None) -> object:
        """GET one attribute's value; a refused access raises AccessDeniedError/ProtocolError."""
        exchange = await self._run(self.core.get(class_id, obis, attribute, selection))
        return exchange.value()

    async def set_clock(self, at: datetime) -> None:
        """SET the meter clock (class 8, attribute 2) to ``at``; a refusal raises."""
        (await self._run(self.core.set_clock(at))).value()

    async def action(self, class_id: int, obis: str, method: int) -> None:
        """ACTION ``method`` (integer parameter 0) on an object; a refusal raises."""
        (await self._run(self.core.action(class_id, obis, method))).value()

    async def read_clock(self) -> datetime:
        """The meter's clock (class 8, attribute 2) as aware UTC."""
        raw = await self.get(CLASS_CLOCK, CLOCK_OBIS, 2)
        if not isinstance(raw, bytes | bytearray):
            raise ProtocolError("clock time is not an octet string")
        return decode_datetime(raw)


async def read_dlms(
    url_host: str,
    port: int,
    params: DlmsParameters,
    request: DlmsReadRequest,
    *,
    timeout: float,
    clock: Callable[[], datetime] = utc_now,
    counters: InvocationCounterStore | None = None,
    meter_key: str | None = None,
    on_push: PushHandler | None = None,
) -> DlmsReadResult:
    """Associate over TCP, read the clock, the registers and the profile range of ``request``, release.

    Register readings are stamped with the meter clock read in the same association (or
    ``clock()`` when the clock is not read). An object the meter refuses is a ReadFailure in
    the result; a refused association, a timeout or a broken link raises. ``on_push`` gets
    what the meter pushes meanwhile.
    """
    session = DlmsSession(
        url_host, port, params, timeout=timeout, counters=counters, meter_key=meter_key, on_push=on_push
    )
    return await _read_session(session, request, clock)


async def read_dlms_url(
    url: str,
    params: DlmsParameters,
    request: DlmsReadRequest,
    *,
    timeout: float,
    clock: Callable[[], datetime] = utc_now,
    counters: InvocationCounterStore | None = None,
    meter_key: str | None = None,
    on_push: PushHandler | None = None,
) -> DlmsReadResult:
    """:func:`read_dlms` over ``tcp://``, ``udp://`` (wrapper) or ``serial://`` (HDLC) URL ``url``."""
    session = DlmsSession.for_url(url, params, timeout=timeout, counters=counters, meter_key=meter_key, on_push=on_push)
    return await _read_session(session, request, clock)


async def _read_session(
    session: DlmsSession, request: DlmsReadRequest, clock: Callable[[], datetime]
) -> DlmsReadResult:
    """One association on ``session``: clock, registers, profile; refused objects become ReadFailures."""
    failures: list[ReadFailure] = []
    registers: list[Reading] = []
    profile: list[Reading] = []
    async with session:
        meter_time = await session.read_clock() if request.read_clock else None
        stamp = meter_time if meter_time is not None else clock()
        for item in request.values():
            try:
                value, unit = await session.read_value(item)
            except ProtocolError as exc:
                if session.broken:
                    raise
                # The meter refused this object or sent a value of the wrong kind; go on.
                failures.append(ReadFailure(item.quantity, exc.kind, exc.reason))
                continue
            registers.append(Reading(item.quantity, value, unit, stamp))
        if request.profile is not None:
            try:
                profile = await session.read_profile(request.profile)
            except ProtocolError as exc:
                if session.broken:
                    raise
                failures.append(ReadFailure(reduced(request.profile.obis), exc.kind, exc.reason))
    return DlmsReadResult(meter_time, tuple(registers), tuple(profile), tuple(failures))
