"""The protocol-driver plug-in interface and its registry.

A driver reads one meter once and hands back readings and the events the meter reported
(:class:`MeterEventRecord`: event-log entries, alarms). Drivers are found through the Python entry-point
group ``gxami.drivers`` (name = protocol name, value = ``module:DriverClass``), so a
driver in a separate package is used by the collector without touching gxcore.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from importlib.metadata import entry_points
from typing import ClassVar, Literal, Protocol, runtime_checkable

from gxcore.errors import ConfigurationError, GxError
from gxcore.media.endpoint import Endpoint
from gxcore.media.medium import Medium
from gxcore.profiles.model import DeviceProfile
from gxcore.readings import MeterEventRecord, Reading
from gxcore.secrets import Secret

ENTRY_POINT_GROUP = "gxami.drivers"


@dataclass(frozen=True, slots=True)
class MeterTarget:
    """Where a meter is and how to address it; secrets are kept apart from options."""

    meter_id: str
    url: str
    options: Mapping[str, str] = field(default_factory=dict)
    secrets: Mapping[str, Secret] = field(default_factory=dict)

    def endpoint(self) -> Endpoint:
        """The URL parsed (once per call; the driver loop parses it once per read)."""
        return Endpoint.parse(self.url)


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """What to read in one session: profile points by purpose, and a load-profile range."""

    purposes: frozenset[str] = frozenset({"billing"})
    profile_from: datetime | None = None
    profile_to: datetime | None = None


@dataclass(frozen=True, slots=True)
class PointProblem:
    """Why one profile point (or, with ``quantity`` empty, the whole read) gave no reading.

    ``quantity`` is the profile point's quantity, ``source`` its source as the profile spells it
    (an OBIS code, a register, a record), ``reason`` a message built from codes, never payloads.
    """

    quantity: str
    source: str
    reason: str

    def describe(self) -> str:
        """One line: ``quantity (source): reason``, or the reason alone for the whole read."""
        if not self.quantity:
            return f"{self.source}: {self.reason}" if self.source else self.reason
        return f"{self.quantity} ({self.source}): {self.reason}" if self.source else f"{self.quantity}: {self.reason}"


@dataclass(frozen=True, slots=True)
class ReadResult:
    """Readings and events of one session; ``meter_time`` is the meter's clock when it was read.

    ``clock_read_at`` is the driver's own clock when ``meter_time`` arrived (None if the driver
    does not say): the meter's drift is ``meter_time - clock_read_at``. ``problems`` says which
    points gave no reading and why (one bad point never discards the good ones); a built-in
    driver's empty result always has one.
    """

    readings: list[Reading]
    meter_time: datetime | None = None
    events: list[MeterEventRecord] = field(default_factory=list)
    clock_read_at: datetime | None = None
    # Load-profile reads that failed while the rest of the session went on: the readings are
    # good, but the profile window was not read, so the job must not move its window on.
    load_profile_failures: list[GxError] = field(default_factory=list)
    problems: list[PointProblem] = field(default_factory=list)


def nothing_selected(profile: DeviceProfile, request: ReadRequest) -> ReadResult:
    """The empty result of a request whose purposes select no point of ``profile``, saying so."""
    wanted = ", ".join(sorted(request.purposes)) or "none"
    return ReadResult(
        readings=[], problems=[PointProblem("", "", f"profile {profile.name} has no point for purpose {wanted}")]
    )


CommandKind = Literal[
    "disconnect",
    "reconnect",
    "arm-reconnect",
    "relay-state",
    "clock-sync",
    "clock-set",
    "set-attribute",
    "write-point",
    "firmware-update",
    "tariff-calendar",
]
"""What a driver can be asked to do to a meter (besides reading it); each driver takes the kinds it can."""

CommandValue = int | float | Decimal | str | bytes | bool | None


@dataclass(frozen=True, slots=True)
class DriverCommand:
    """One control action on one meter, as the collector hands it to a driver.

    ``point`` names what is written: a profile point (its quantity or source) for ``write-point``
    and ``set-attribute``, a disconnect-control object for the relay kinds (default: the
    profile's). ``value`` is the value to write, in the point's unit as read; ``clock`` the
    time for ``clock-set``; ``options`` protocol-specific details the driver documents.
    """

    kind: CommandKind
    point: str | None = None
    value: CommandValue = None
    clock: datetime | None = None
    options: Mapping[str, str] = field(default_factory=dict)
    # Structured content: the tariff calendar document, or the firmware image (``image``: bytes,
    # ``identification``, ``activate_at``) that the collector fetched and checked by hash.
    body: Mapping[str, object] | None = None


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What the meter reported after a command, read back from it, not assumed.

    ``state`` is the relay's state after a relay command (``connected``, ``disconnected``,
    ``ready-for-reconnection``); ``meter_time_before``/``meter_time_after`` the clock around a
    clock command; ``readings`` what was read back (the written point, the relay state).
    """

    command: DriverCommand
    state: str | None = None
    meter_time_before: datetime | None = None
    meter_time_after: datetime | None = None
    readings: list[Reading] = field(default_factory=list)
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Served:
    """What one meter sent over a connection it opened to us (a push, a dial-in session)."""

    meter_id: str
    result: ReadResult


MeterLookup = Callable[[str], "tuple[MeterTarget, DeviceProfile] | None"]
"""Identity (system title, serial number, address, as the driver documents) -> the meter and its profile."""


@runtime_checkable
class Driver(Protocol):
    """One protocol's way to read, control and serve meters. Raises only gxcore errors.

    * :meth:`read` reads one meter once. With ``medium`` it reads over a connection that is
      already open (a meter that dialled in); else it opens the target's URL itself.
    * :meth:`execute` runs one :class:`DriverCommand` and reads the result back.
    * :meth:`serve` answers a connection a meter opened to us (pushes, notifications),
      yielding what each meter sent, until the peer closes or ``idle_timeout`` passes.

    :class:`BaseDriver` gives a plug-in the last two as typed refusals, so a read-only
    plug-in implements ``validate_profile`` and ``read`` only.
    """

    name: ClassVar[str]

    def validate_profile(self, profile: DeviceProfile) -> None:
        """Raise ConfigurationError if the profile's points and parameters do not fit this protocol."""

    async def read(
        self,
        target: MeterTarget,
        profile: DeviceProfile,
        request: ReadRequest,
        *,
        timeout: float,
        medium: Medium | None = None,
    ) -> ReadResult:
        """Read the points of ``profile`` selected by ``request``; every exchange bounded by ``timeout``."""

    async def execute(
        self, target: MeterTarget, profile: DeviceProfile, command: DriverCommand, *, timeout: float
    ) -> CommandResult:
        """Run ``command`` on the meter and read its effect back; ConfigurationError for a kind it cannot run."""

    def serve(self, connection: Medium, lookup: MeterLookup, *, idle_timeout: float) -> AsyncIterator[Served]:
        """Serve a connection a meter opened to us; ConfigurationError when this protocol has no such mode."""


@runtime_checkable
class ReadingDriver(Protocol):
    """The least a plug-in implements: a name, a profile check and a read that opens its own medium."""

    name: ClassVar[str]

    def validate_profile(self, profile: DeviceProfile) -> None: ...

    async def read(
        self, target: MeterTarget, profile: DeviceProfile, request: ReadRequest, *, timeout: float
    ) -> ReadResult: ...


class BaseDriver:
    """Defaults for a plug-in: commands and serving are refused with a ConfigurationError naming the protocol."""

    name: ClassVar[str] = "unnamed"
    # The per-meter options (``MeterTarget.options``) the driver reads; None: not declared, so a
    # front end (``gxami read -o``) cannot refuse a misspelt one. Every built-in driver declares them.
    meter_options: ClassVar[frozenset[str] | None] = None

    async def execute(
        self, target: MeterTarget, profile: DeviceProfile, command: DriverCommand, *, timeout: float
    ) -> CommandResult:
        raise ConfigurationError(f"meter {target.meter_id}: the {self.name} driver cannot run {command.kind!r}")

    def serve(self, connection: Medium, lookup: MeterLookup, *, idle_timeout: float) -> AsyncIterator[Served]:
        raise ConfigurationError(f"the {self.name} driver does not serve connections that meters open")


class ReadOnlyDriver(BaseDriver):
    """A :class:`ReadingDriver` plug-in seen as a full :class:`Driver`: commands, serving and reads over
    a connection the meter opened are refused with a ConfigurationError naming the protocol."""

    def __init__(self, inner: ReadingDriver) -> None:
        self.inner = inner
        self.name = inner.name  # type: ignore[misc]  # the plug-in's protocol name, per instance

    def validate_profile(self, profile: DeviceProfile) -> None:
        self.inner.validate_profile(profile)

    async def read(
        self,
        target: MeterTarget,
        profile: DeviceProfile,
        request: ReadRequest,
        *,
        timeout: float,
        medium: Medium | None = None,
    ) -> ReadResult:
        if medium is not None:
            raise ConfigurationError(
                f"meter {target.meter_id}: the {self.name} driver cannot read over a connection the meter opened"
            )
        return await self.inner.read(target, profile, request, timeout=timeout)


def unknown_meter_options(driver: Driver, options: Mapping[str, str]) -> str | None:
    """Why ``options`` do not suit ``driver`` (names the unknown ones and lists the valid ones), else None."""
    known: frozenset[str] | None = getattr(driver, "meter_options", None)
    if known is None:
        return None
    unknown = sorted(set(options) - known)
    if not unknown:
        return None
    valid = ", ".join(sorted(known)) or "none"
    return f"unknown option {', '.join(unknown)} for protocol {driver.name} (valid: {valid})"


def available_drivers() -> dict[str, str]:
    """Protocol name -> entry-point value, for every installed driver."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_driver(protocol: str) -> Driver:
    """Instantiate the driver registered for ``protocol``."""
    matches = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == protocol]
    if not matches:
        known = ", ".join(sorted(available_drivers())) or "none"
        raise ConfigurationError(f"no driver for protocol {protocol!r} (installed: {known})")
    driver_cls = matches[0].load()
    driver = driver_cls()
    if isinstance(driver, Driver):
        return driver
    if isinstance(driver, ReadingDriver):
        return ReadOnlyDriver(driver)
    raise ConfigurationError(f"entry point {matches[0].value!r} is not a gxcore Driver")
