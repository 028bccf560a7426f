"""The DLMS/COSEM protocol driver: device-profile points in, canonical readings and meter events out.

``tcp://host:port`` speaks the DLMS wrapper, or HDLC with ``interface: hdlc`` (through a
converter); ``udp://host:port`` the wrapper only; ``serial:///dev/ttyUSB0?baud=9600`` (RS-485
or an optical head; line settings in the query, see :mod:`gxcore.media.url`) HDLC only. On
udp/serial the medium overrides the profile's ``interface``; a contradicting ``interface``
in the meter's own options is a ConfigurationError. Association
parameters come from the profile's ``parameters`` (``client_address``, ``server_address``,
``physical_address``, ``authentication`` none/low/high/high-md5/high-sha1/high-sha256/high-gmac,
``security_policy``
none/authenticated/encrypted/authenticated-encrypted, ``system_title`` (ours),
``server_system_title`` (the meter's, checked when given), ``frame_counter_obis``,
``max_pdu``, ``interface``, ``timeout``), overridden per meter by ``target.options`` (also
spelt ``client``, ``logical``/``server``, ``physical``). Secrets: the password (LLS and
password HLS) is ``target.secrets["password"]``; the block cipher key ``["key"]`` and the authentication
key ``["auth_key"]`` (16 bytes, or 32 hex digits). ``high-gmac`` implies the
``authenticated-encrypted`` policy unless another is named. System titles are 8 bytes
given as 16 hex digits or 8 characters.

Invocation counters are kept in the driver's store (``counters``, e.g. a
:class:`~gxcore.protocols.dlms.invocation.JsonInvocationCounters` the collector or CLI hands over),
keyed by meter id, client address and system title. A ciphered read without a store is a
ConfigurationError: counters are never kept only in memory.

A point's ``source`` is an OBIS code (``1.0.1.8.0.255`` or ``1-0:1.8.0``), optionally
prefixed by its COSEM class (``1/0.0.96.1.0.255`` for Data; Register 3 by default;
``4/...`` Extended register and ``5/...`` Demand register, whose readings carry the
meter's status and are stamped with their capture time). Options: ``profile`` (the
Profile generic OBIS that captures the point; the point is then read as load-profile or
event-log rows), ``attribute`` (a demand register's current average 2 or last average 3,
the default), ``last_entries`` (read a profile's newest N rows by entry when the request
gives no range; event logs default to 10) and ``meter_unit``. Values follow gxcore.units'
rule: the meter's own unit (from its scaler_unit) is converted to ``meter_unit`` (default:
the point's unit), then ``scale`` and ``offset`` apply; a unit of another dimension fails.

An event log point (purpose ``events``, source ``1/0.0.96.11.0.255``, option ``profile:
0.0.99.98.0.255``; any event code object 0-x:96.11.n captured by a Profile generic) gives
no readings but one :class:`~gxcore.drivers.MeterEventRecord` per log entry in
``ReadResult.events``: the entry's time, the event code, the log as source, the IDIS name
as kind where the standard log names the code (see :mod:`gxcore.protocols.dlms.events`), and an id
stable over meter, log, time and code, so reading the same entry again is idempotent.

``read(..., medium=...)`` runs the same session over a connection that is already open (a
meter that dialled in) and leaves it open. ``execute`` runs a
:class:`~gxcore.drivers.api.DriverCommand` in one association and reads its effect back (see
:mod:`gxcore.drivers.dlms.commands`; a point is written only when the profile marks it
``writable: true``). ``serve`` takes the DataNotifications a meter pushes over a connection
it opened (see :mod:`gxcore.drivers.dlms.pushes`). Commands and reads share the counter store
and the per-meter hold: a counter is never used twice.

One read is one association: clock, value points, then each profile over
``[request.profile_from, request.profile_to or meter clock]`` (or by entry, see above).
An object the meter refuses is skipped; if every selected point fails, the first failure
is raised.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar, Final

from gxcore.drivers.api import (
    BaseDriver,
    CommandResult,
    DriverCommand,
    MeterLookup,
    MeterTarget,
    PointProblem,
    ReadRequest,
    ReadResult,
    nothing_selected,
)
from gxcore.drivers.dlms.calendar import execute_calendar
from gxcore.drivers.dlms.commands import execute_command
from gxcore.drivers.dlms.firmware import ProgressHook, execute_firmware
from gxcore.drivers.dlms.pushes import PushServed, RefusalHook, serve_pushes
from gxcore.drivers.dlms.reader import DlmsSession, utc_now
from gxcore.drivers.dlms.transport import MediumFactory, check_framing, dlms_endpoint, medium_for
from gxcore.errors import ConfigurationError, GxError, ProtocolError
from gxcore.media import Medium
from gxcore.profiles.model import DeviceProfile, OptionValue, ProfilePoint
from gxcore.protocols.dlms.association import ALIASES, PARAMETERS, association_parameters, integer
from gxcore.protocols.dlms.events import events_from_readings, is_event_code
from gxcore.protocols.dlms.invocation import InvocationCounterStore
from gxcore.protocols.dlms.obis import dotted, reduced
from gxcore.protocols.dlms.parameters import (
    CLASS_REGISTER,
    CosemValue,
    DlmsParameters,
    ProfileEntries,
    ProfileRange,
)
from gxcore.readings import MeterEventRecord, MeterValue, Reading
from gxcore.units import meter_unit, point_value

PROTOCOL: Final = "dlms"
_OPTIONS: Final = frozenset({"class_id", "profile", "meter_unit", "attribute", "last_entries", "writable"})
EVENT_ENTRIES: Final = 10  # newest event log rows read when no range is asked for


@dataclass(frozen=True, slots=True)
class DlmsPoint:
    """A profile point resolved to a COSEM object, and the Profile generic that captures it, if any."""

    point: ProfilePoint
    value: CosemValue
    profile: str | None
    last_entries: int = 0

    def reading(
        self,
        meter_value: MeterValue,
        meter_unit: str,
        at: datetime,
        status: int | None = None,
        extra: Mapping[str, str | int] | None = None,
    ) -> Reading:
        """The canonical reading: the meter's unit converted, then the profile's scale and offset."""
        value = point_value(self.point, meter_value, meter_unit)
        tags: dict[str, str | int] = {**(extra or {}), "source": self.value.obis}
        return Reading(self.point.quantity, value, self.point.unit, at, status, tags)

    @property
    def is_event(self) -> bool:
        """An event code column of a log: its rows are events, not readings."""
        return self.profile is not None and is_event_code(self.value.obis)


def dlms_point(point: ProfilePoint) -> DlmsPoint:
    """Resolve one point's source and options; ConfigurationError names the point."""
    where = f"point {point.quantity} ({point.source!r})"
    unknown = set(point.options) - _OPTIONS
    if unknown:
        raise ConfigurationError(f"{where}: unknown DLMS options {sorted(unknown)}")
    class_text, _, obis = point.source.rpartition("/")
    class_id = integer(point.options.get("class_id", class_text or CLASS_REGISTER), f"{where} class")
    attribute = integer(point.options.get("attribute", 0), f"{where} attribute")
    value = CosemValue(obis, class_id, attribute)
    profile = point.options.get("profile")
    if profile is not None and not isinstance(profile, str):
        raise ConfigurationError(f"{where}: option profile must be an OBIS code")
    last = integer(point.options.get("last_entries", 0), f"{where} last_entries")
    if not 0 <= last <= 10_000:
        raise ConfigurationError(f"{where}: option last_entries must be in 0..10000")
    meter_unit(point)  # validates the option's type
    if not isinstance(point.options.get("writable", False), bool):
        raise ConfigurationError(f"{where}: option writable must be true or false")
    return DlmsPoint(point, value, dotted(profile) if profile else None, last)


def dlms_parameters(profile: DeviceProfile, target: MeterTarget | None = None) -> DlmsParameters:
    """Association parameters: profile parameters, then the meter's options, then its secrets."""
    merged: dict[str, OptionValue] = dict(profile.parameters)
    if target is not None:
        # The medium fixes the framing over the device model's: the same profile serves a meter
        # on TCP and on an RS-485 line. Only the meter's own options may contradict it (and fail).
        scheme = target.url.partition(":")[0]
        if scheme in ("serial", "udp"):
            merged["interface"] = "hdlc" if scheme == "serial" else "wrapper"
        for key, value in target.options.items():
            name = ALIASES.get(key, key)
            if name in PARAMETERS:
                merged[name] = value
    unknown = set(profile.parameters) - PARAMETERS
    if unknown:
        raise ConfigurationError(f"profile {profile.name}: unknown DLMS parameters {sorted(unknown)}")
    if target is None:
        return association_parameters(merged, None, owner=f"profile {profile.name}")
    return association_parameters(merged, target.secrets, owner=f"meter {target.meter_id}")


class DlmsDriver(BaseDriver):
    """Reads DLMS/COSEM meters over TCP, UDP or serial described by device profiles (protocol ``dlms``)."""

    name: ClassVar[str] = PROTOCOL
    meter_options: ClassVar[frozenset[str] | None] = PARAMETERS | frozenset(ALIASES)

    def __init__(
        self,
        counters: InvocationCounterStore | None = None,
        *,
        media: MediumFactory = medium_for,
        clock: Callable[[], datetime] = utc_now,
        firmware_progress: ProgressHook | None = None,
    ) -> None:
        self.counters = counters  # required for ciphered meters; set by whoever loads the driver
        self.media = media  # the medium for a meter URL; tests and bench hand in an in-memory peer
        self.clock = clock  # the time a clock-sync sets and relay readings carry
        self.firmware_progress = firmware_progress  # hears how far each image transfer is
        self._resolved: dict[str, tuple[DeviceProfile, list[DlmsPoint]]] = {}  # pushes: points per profile

    def validate_profile(self, profile: DeviceProfile) -> None:
        if profile.protocol != PROTOCOL:
            raise ConfigurationError(f"profile {profile.name} is for {profile.protocol!r}, not {PROTOCOL!r}")
        dlms_parameters(profile)
        for point in profile.points:
            dlms_point(point)
        for obis in [o.obis for o in profile.push_objects] + [profile.push_identity or "0.0.96.1.0.255"]:
            try:
                dotted(obis)
            except ConfigurationError as exc:
                raise ConfigurationError(f"profile {profile.name}: push: {exc.reason}") from None

    def _session(
        self, target: MeterTarget, profile: DeviceProfile, timeout: float, medium: Medium | None = None
    ) -> DlmsSession:
        """The (unopened) session with ``target``: URL, framing and parameters checked, before any I/O."""
        self.validate_profile(profile)
        try:
            dlms_endpoint(target.url)
        except ConfigurationError as exc:
            raise ConfigurationError(f"meter {target.meter_id}: {exc.reason}") from None
        params = dlms_parameters(profile, target)
        try:
            check_framing(target.url, params.interface)
        except ConfigurationError as exc:
            raise ConfigurationError(f"meter {target.meter_id}: {exc.reason}") from None
        limit = profile.parameters.get("timeout")
        deadline = min(timeout, float(limit)) if isinstance(limit, int | float) else timeout
        return DlmsSession(
            target.url,
            params,
            timeout=deadline,
            counters=self.counters,
            meter_key=target.meter_id,
            media=self.media,
            medium=medium,
        )

    async def read(
        self,
        target: MeterTarget,
        profile: DeviceProfile,
        request: ReadRequest,
        *,
        timeout: float,
        medium: Medium | None = None,
    ) -> ReadResult:
        session = self._session(target, profile, timeout, medium)
        points = [dlms_point(p) for p in profile.points_for(request.purposes)]
        values = [p for p in points if p.profile is None]
        profiled: dict[str, list[DlmsPoint]] = {}
        for p in points:
            if p.profile is not None:
                profiled.setdefault(p.profile, []).append(p)
        readings: list[Reading] = []
        events: list[MeterEventRecord] = []
        failures: list[GxError] = []
        profile_failures: list[GxError] = []
        # No point for these purposes: the clock is still read (callers use it), and the result says why.
        problems: list[PointProblem] = [] if points else nothing_selected(profile, request).problems
        async with session:
            meter_time = await session.read_clock()
            clock_read_at = self.clock()  # beside meter_time: the drift without the session's length
            for vp in values:
                try:
                    got = await session.read_register(vp.value)
                    readings.append(vp.reading(got.value, got.unit, got.captured or meter_time, got.status))
                except ProtocolError as exc:
                    if session.broken:
                        raise
                    failures.append(exc)
                    problems.append(PointProblem(vp.point.quantity, vp.point.source, exc.reason))
            for obis, group in profiled.items():
                try:
                    rows = await _read_rows(session, obis, group, request, meter_time)
                    values_read, logged = _profile_values(rows, group, obis, target.meter_id)
                    readings.extend(values_read)
                    events.extend(logged)
                except ProtocolError as exc:
                    if session.broken:
                        raise
                    failures.append(exc)
                    if any("load-profile" in p.point.purpose for p in group):
                        profile_failures.append(exc)
                    problems.extend(PointProblem(p.point.quantity, p.point.source, exc.reason) for p in group)
                    continue
                if not values_read and not logged:
                    # An empty range is no fault, but it is said: the result shows why it is empty.
                    problems.extend(
                        PointProblem(p.point.quantity, p.point.source, f"profile {obis} has no entry in the range read")
                        for p in group
                    )
        if failures and not readings and not events:
            raise failures[0]
        return ReadResult(
            readings=readings,
            meter_time=meter_time,
            events=events,
            clock_read_at=clock_read_at,
            load_profile_failures=profile_failures,
            problems=problems,
        )

    async def execute(
        self, target: MeterTarget, profile: DeviceProfile, command: DriverCommand, *, timeout: float
    ) -> CommandResult:
        """Run ``command`` in one association and read its effect back (see :mod:`gxcore.drivers.dlms.commands`)."""
        session = self._session(target, profile, timeout)
        if command.kind == "firmware-update":
            return await execute_firmware(
                session, command, meter_id=target.meter_id, clock=self.clock, on_progress=self.firmware_progress
            )
        if command.kind == "tariff-calendar":
            return await execute_calendar(session, command, meter_id=target.meter_id)
        points = [dlms_point(p) for p in profile.points]
        return await execute_command(session, profile, points, command, meter_id=target.meter_id, clock=self.clock)

    def serve(
        self,
        connection: Medium,
        lookup: MeterLookup,
        *,
        idle_timeout: float,
        on_refused: RefusalHook | None = None,
        layout: DeviceProfile | None = None,
        frame_timeout: float | None = None,
    ) -> AsyncIterator[PushServed]:
        """The pushes a meter sends over ``connection`` (see :mod:`gxcore.drivers.dlms.pushes` for identity).

        Each is a :class:`PushServed` (a Served with identity and invocation counter);
        ``on_refused`` hears of every frame that could not be served, with the frame;
        ``layout`` is the profile whose push objects name a plain push's meter (HAN lists);
        ``frame_timeout`` (default ``idle_timeout``) bounds how long one frame may trickle in.
        """
        if not idle_timeout > 0:
            raise ConfigurationError(f"idle timeout must be positive, not {idle_timeout!r}")
        if layout is not None:
            self.validate_profile(layout)
        return serve_pushes(
            connection,
            lookup,
            self._resolve,
            idle_timeout=idle_timeout,
            on_refused=on_refused,
            clock=self.clock,
            layout=layout,
            frame_timeout=frame_timeout,
        )

    def _resolve(self, target: MeterTarget, profile: DeviceProfile) -> tuple[DlmsParameters, list[DlmsPoint]]:
        # A listener resolves every push: the profile's points are checked and resolved once per
        # profile object (profiles are frozen), the meter's parameters (its secrets) each time.
        cached = self._resolved.get(profile.name)
        if cached is None or cached[0] is not profile:
            self.validate_profile(profile)
            cached = (profile, [dlms_point(p) for p in profile.points])
            self._resolved[profile.name] = cached
        return dlms_parameters(profile, target), cached[1]


async def _read_rows(
    session: DlmsSession, obis: str, group: list[DlmsPoint], request: ReadRequest, meter_time: datetime
) -> list[Reading]:
    """A profile's rows: by range when the request gives one, else its newest entries if asked for."""
    if request.profile_from is not None:
        end = request.profile_to or meter_time
        return await session.read_profile(ProfileRange(obis, min(request.profile_from, end), end))
    newest = max((p.last_entries or (EVENT_ENTRIES if p.is_event else 0)) for p in group)
    if not newest:
        return []
    return await session.read_profile_entries(ProfileEntries(obis, newest=newest))


def _profile_values(
    rows: list[Reading], group: list[DlmsPoint], obis: str, meter_id: str
) -> tuple[list[Reading], list[MeterEventRecord]]:
    """Map a profile's per-column rows onto its points: value columns become readings, event codes events."""
    by_quantity: Mapping[str, list[DlmsPoint]] = _group_by_quantity([p for p in group if not p.is_event])
    readings = [
        p.reading(row.value, row.unit, row.timestamp, row.status, row.extra)
        for row in rows
        for p in by_quantity.get(row.quantity, ())
    ]
    codes = {reduced(p.value.obis) for p in group if p.is_event}
    logged = events_from_readings([row for row in rows if row.quantity in codes], obis) if codes else []
    # The same code twice in one second of one log is one event (one id): hand it up once.
    events = {e.event_id: e for e in (entry.record(meter_id) for entry in logged)}
    return readings, list(events.values())


def _group_by_quantity(group: list[DlmsPoint]) -> dict[str, list[DlmsPoint]]:
    out: dict[str, list[DlmsPoint]] = {}
    for p in group:
        out.setdefault(reduced(p.value.obis), []).append(p)
    return out
