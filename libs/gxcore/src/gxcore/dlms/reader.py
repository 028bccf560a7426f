"""Reading a DLMS/COSEM meter over TCP, UDP or a serial line: one association, clock, registers, load profile.

:func:`read_dlms` (host and TCP port) and :func:`read_dlms_url` (``tcp://``, ``udp://``
wrapper or ``serial://`` HDLC) are what the collector calls. :class:`DlmsSession` is the
async context manager underneath them (open + associate on enter, release + close on
exit) for callers that need other services in the same association.

With ciphering, our invocation counter comes from the counter store (keyed by
``meter_key``). When the store has never seen the meter, or the meter refuses the
association once, the meter's own frame counter (``params.frame_counter_obis``, read by
the public client in a separate association) is taken as the floor and the association
is tried once more.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType

from gxcore.dlms.cosem_time import decode_datetime
from gxcore.dlms.invocation import DEFAULT_COUNTERS, InvocationCounterStore
from gxcore.dlms.obis import apply_scaler, dotted, reduced, unit_symbol
from gxcore.dlms.parameters import (
    CLASS_CLOCK,
    CLASS_DATA,
    CLASS_PROFILE_GENERIC,
    CLOCK_OBIS,
    PUBLIC_CLIENT,
    VALUE_ATTRIBUTES,
    CosemValue,
    DlmsParameters,
    DlmsReadRequest,
    DlmsReadResult,
    ProfileEntries,
    ProfileRange,
    ReadFailure,
    RegisterValue,
)
from gxcore.dlms.profile import (
    CaptureObject,
    clock_column,
    decode_rows,
    encode_entry_selection,
    encode_range_selection,
    needs_capture_period,
    parse_capture_objects,
)
from gxcore.dlms.session import DlmsClientCore, Exchange
from gxcore.dlms.transport import MediumLink, TcpLink, check_framing, dlms_endpoint
from gxcore.errors import AccessDeniedError, GxError, ProtocolError
from gxcore.readings import Reading

ScalerUnit = tuple[int, str]


def utc_now() -> datetime:
    return datetime.now(UTC)


class DlmsSession:
    """One association with one meter; every exchange bounded by ``timeout`` seconds.

    ``DlmsSession(host, port, ...)`` connects over TCP; :meth:`for_url` over any DLMS
    medium. ``meter_key`` names the meter in the invocation counter store (the meter id;
    by default ``host:port``, or the URL without its query for serial/UDP).
    """

    def __init__(
        self,
        host: str,
        port: int,
        params: DlmsParameters,
        *,
        timeout: float,
        counters: InvocationCounterStore = DEFAULT_COUNTERS,
        meter_key: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.params = params
        self.timeout = timeout
        self.counters = counters
        self.meter_key = meter_key or f"{host}:{port}"
        self.url: str | None = None  # set by for_url: the link opens this medium instead of TCP
        self.core = self._new_core()
        self._link: MediumLink | None = None
        self._scaler_units: dict[str, ScalerUnit] = {}

    @classmethod
    def for_url(
        cls,
        url: str,
        params: DlmsParameters,
        *,
        timeout: float,
        counters: InvocationCounterStore = DEFAULT_COUNTERS,
        meter_key: str | None = None,
    ) -> DlmsSession:
        """A session over ``tcp://host:port``, ``udp://host:port`` (wrapper) or ``serial:///dev/...`` (HDLC).

        ConfigurationError, before any I/O, for another scheme or a framing the medium cannot carry.
        """
        endpoint = dlms_endpoint(url)
        check_framing(url, params.interface)
        # TCP keeps the key DlmsSession(host, port) gives, so counters survive a switch to URLs.
        default = f"{endpoint.host}:{endpoint.port}" if endpoint.scheme == "tcp" else url.partition("?")[0]
        key = meter_key or default
        session = cls(endpoint.host, endpoint.port or 0, params, timeout=timeout, counters=counters, meter_key=key)
        session.url = url
        return session

    def _sibling(self, params: DlmsParameters) -> DlmsSession:
        """Another session to the same meter over the same kind of medium."""
        if self.url is not None:
            return DlmsSession.for_url(self.url, params, timeout=self.timeout)
        return DlmsSession(self.host, self.port, params, timeout=self.timeout)

    def _new_core(self) -> DlmsClientCore:
        return DlmsClientCore(self.params, counters=self.counters, meter_key=self.meter_key)

    async def __aenter__(self) -> DlmsSession:
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
        return self

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
            await link.close()

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

    async def scaler_unit(self, obis: str, class_id: int = 3) -> ScalerUnit:
        """Scaler and unit symbol of a register (attribute 3; 4 for a demand register), cached
        for the session; Data has (0, "")."""
        key = dotted(obis)
        where = VALUE_ATTRIBUTES.get(class_id, (2, 3, 0, 0))[1]
        if not where:
            return 0, ""
        if key not in self._scaler_units:
            value = await self.get(class_id, key, where)
            if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value)):
                raise ProtocolError(f"scaler_unit of {key} is not a structure of two integers")
            scaler, unit = int(value[0]), int(value[1])
            if scaler > 127 or scaler < -128:
                raise ProtocolError(f"scaler of {key} is out of range")
            self._scaler_units[key] = (scaler, unit_symbol(unit))
        return self._scaler_units[key]

    async def read_value(self, item: CosemValue) -> tuple[float, str]:
        """A value object's scaled value and unit symbol."""
        scaler, unit = await self.scaler_unit(item.obis, item.class_id)
        raw = await self.get(item.class_id, item.obis, item.value_attribute)
        return apply_scaler(_number(raw, item.obis), scaler), unit

    async def read_register(self, item: CosemValue) -> RegisterValue:
        """Value, unit, and for extended/demand registers the status and capture time (None when unset)."""
        value, unit = await self.read_value(item)
        _value, _su, status_at, time_at = VALUE_ATTRIBUTES[item.class_id]
        status = _status(await self.get(item.class_id, item.obis, status_at)) if status_at else None
        captured = None
        if time_at:
            raw = await self.get(item.class_id, item.obis, time_at)
            if not isinstance(raw, bytes | bytearray):
                raise ProtocolError(f"capture time of {item.obis} is not an octet string")
            captured = None if _unset_time(raw) else decode_datetime(raw)
        return RegisterValue(value, unit, status, captured)

    async def read_profile(self, profile: ProfileRange) -> list[Reading]:
        """Rows of ``profile`` in its range as one reading per captured value column."""
        columns = parse_capture_objects(await self.get(CLASS_PROFILE_GENERIC, profile.obis, 3))
        selection = encode_range_selection(columns[clock_column(columns)], profile.start, profile.end)
        buffer = await self.get(CLASS_PROFILE_GENERIC, profile.obis, 2, selection)
        return await self._profile_readings(profile.obis, columns, buffer, (profile.start, profile.end))

    async def read_profile_entries(self, entries: ProfileEntries) -> list[Reading]:
        """Rows of a profile by entry index (or its ``newest`` entries) as readings."""
        columns = parse_capture_objects(await self.get(CLASS_PROFILE_GENERIC, entries.obis, 3))
        first, last = entries.first, entries.last
        if entries.newest:
            in_use = await self.get(CLASS_PROFILE_GENERIC, entries.obis, 7)
            if isinstance(in_use, bool) or not isinstance(in_use, int) or in_use < 0:
                raise ProtocolError(f"entries_in_use of {entries.obis} is not a count")
            if in_use == 0:
                return []
            first, last = max(1, in_use - entries.newest + 1), in_use
        buffer = await self.get(CLASS_PROFILE_GENERIC, entries.obis, 2, encode_entry_selection(first, last))
        if isinstance(buffer, list) and last and len(buffer) > last - first + 1:
            raise ProtocolError(f"{entries.obis}: {len(buffer)} rows for entries {first}..{last}")
        return await self._profile_readings(entries.obis, columns, buffer, None)

    async def _profile_readings(
        self,
        obis: str,
        columns: tuple[CaptureObject, ...],
        buffer: object,
        window: tuple[datetime, datetime] | None,
    ) -> list[Reading]:
        period: int | None = None
        if needs_capture_period(buffer, columns):
            raw_period = await self.get(CLASS_PROFILE_GENERIC, obis, 4)
            period = raw_period if isinstance(raw_period, int) else None
        units = {pos: await self.scaler_unit(c.obis, c.class_id) for pos, c in _value_columns(columns)}
        tag = {"profile": reduced(obis)}
        status_col = next((pos for pos, c in enumerate(columns) if c.is_status), None)
        readings: list[Reading] = []
        for at, row in decode_rows(buffer, columns, period):
            if window is not None and not window[0] <= at <= window[1]:
                continue  # a meter that answers wider than asked; the window is the contract
            status = row[status_col] if status_col is not None else None
            for pos, (scaler, unit) in units.items():
                raw = row[pos]
                if raw is None:
                    continue  # null-data: nothing was captured in this column for this row
                readings.append(
                    Reading(
                        quantity=reduced(columns[pos].obis),
                        value=apply_scaler(_number(raw, columns[pos].obis), scaler),
                        unit=unit,
                        timestamp=at,
                        status=status if isinstance(status, int) else None,
                        extra=dict(tag),
                    )
                )
        return readings


async def read_dlms(
    url_host: str,
    port: int,
    params: DlmsParameters,
    request: DlmsReadRequest,
    *,
    timeout: float,
    clock: Callable[[], datetime] = utc_now,
    counters: InvocationCounterStore = DEFAULT_COUNTERS,
    meter_key: str | None = None,
) -> DlmsReadResult:
    """Associate over TCP, read the clock, the registers and the profile range of ``request``, release.

    Register readings are stamped with the meter clock read in the same association (or
    ``clock()`` when the clock is not read). An object the meter refuses is a ReadFailure in
    the result; a refused association, a timeout or a broken link raises.
    """
    session = DlmsSession(url_host, port, params, timeout=timeout, counters=counters, meter_key=meter_key)
    return await _read_session(session, request, clock)


async def read_dlms_url(
    url: str,
    params: DlmsParameters,
    request: DlmsReadRequest,
    *,
    timeout: float,
    clock: Callable[[], datetime] = utc_now,
    counters: InvocationCounterStore = DEFAULT_COUNTERS,
    meter_key: str | None = None,
) -> DlmsReadResult:
    """:func:`read_dlms` over ``tcp://``, ``udp://`` (wrapper) or ``serial://`` (HDLC) URL ``url``."""
    session = DlmsSession.for_url(url, params, timeout=timeout, counters=counters, meter_key=meter_key)
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


def _value_columns(columns: tuple[CaptureObject, ...]) -> list[tuple[int, CaptureObject]]:
    """Columns holding values: attribute 2 of a Register or Extended register, or of a Data
    object other than a status word (an event code, say)."""
    return [
        (pos, c)
        for pos, c in enumerate(columns)
        if c.attribute == 2 and (c.class_id in (3, 4) or (c.class_id == CLASS_DATA and not c.is_status))
    ]


def _status(raw: object) -> int | None:
    """A register status: an unsigned number, or a bit-string read as one."""
    if isinstance(raw, bool):
        return int(raw)
    if isinstance(raw, int):
        return raw
    text = str(raw)
    if raw is not None and text and set(text) <= {"0", "1"}:
        return int(text, 2)
    return None


def _unset_time(raw: bytes | bytearray) -> bool:
    """A capture time the meter left unset (all 0xFF or all zero: never captured)."""
    return len(raw) == 0 or all(b == 0xFF for b in raw[:8]) or not any(raw[:4])


def _number(raw: object, obis: str) -> int | float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ProtocolError(f"value of {obis} is a {type(raw).__name__}, not a number")
    return raw
