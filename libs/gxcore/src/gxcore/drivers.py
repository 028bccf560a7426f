"""The protocol-driver plug-in interface and its registry.

A driver reads one meter once and hands back readings and the events the meter reported
(:class:`MeterEventRecord`: event-log entries, alarms). Drivers are found through the Python entry-point
group ``gxami.drivers`` (name = protocol name, value = ``module:DriverClass``), so a
driver in a separate package is used by the collector without touching gxcore.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import entry_points
from typing import ClassVar, Literal, Protocol, runtime_checkable
from urllib.parse import parse_qsl, urlsplit

from gxcore.errors import ConfigurationError, ProtocolError
from gxcore.profiles.model import DeviceProfile
from gxcore.readings import Reading
from gxcore.secrets import Secret

ENTRY_POINT_GROUP = "gxami.drivers"

EventSeverity = Literal["info", "warning", "alarm"]
EventValue = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class MeterTarget:
    """Where a meter is and how to address it; secrets are kept apart from options."""

    meter_id: str
    url: str
    options: Mapping[str, str] = field(default_factory=dict)
    secrets: Mapping[str, Secret] = field(default_factory=dict)

    def endpoint(self) -> Endpoint:
        return Endpoint.parse(self.url)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A parsed meter URL: ``tcp://host:port``, ``udp://host:port``, ``serial:///dev/ttyUSB0?baud=9600``."""

    scheme: str
    host: str
    port: int | None
    path: str
    query: Mapping[str, str]

    SCHEMES: ClassVar[frozenset[str]] = frozenset({"tcp", "udp", "serial", "listen"})

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        if parts.password is not None or parts.username is not None:
            # Never echo credentials in errors: name the problem, not the URL.
            host = parts.hostname or ""
            raise ConfigurationError(
                f"meter URL {parts.scheme}://***@{host}: credentials do not belong in a meter URL;"
                " put them in the collector's secret store"
            )
        if parts.scheme not in cls.SCHEMES:
            raise ConfigurationError(f"meter URL {url!r}: scheme must be one of {sorted(cls.SCHEMES)}")
        try:
            port = parts.port
        except ValueError:
            raise ConfigurationError(f"meter URL {url!r}: port is not a number in 0..65535") from None
        if parts.scheme in {"tcp", "udp"} and (not parts.hostname or port is None):
            raise ConfigurationError(f"meter URL {url!r}: needs host and port, e.g. tcp://10.0.0.5:4059")
        if parts.scheme == "serial" and not parts.path:
            raise ConfigurationError(f"meter URL {url!r}: needs a device path, e.g. serial:///dev/ttyUSB0")
        return cls(parts.scheme, parts.hostname or "", port, parts.path, dict(parse_qsl(parts.query)))


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """What to read in one session: profile points by purpose, and a load-profile range."""

    purposes: frozenset[str] = frozenset({"billing"})
    profile_from: datetime | None = None
    profile_to: datetime | None = None


def stable_event_id(meter_id: str, source: str, timestamp: datetime, code: int | str) -> str:
    """An id that is the same every time the same event is read: from meter, source, time and code.

    Reading a meter's event log again (a redelivered job, overlapping ranges) yields the same
    ids, so storing events is idempotent. Two entries with the same code in the same second of
    the same log are one event.
    """
    stamp = timestamp.astimezone(UTC).isoformat()
    digest = hashlib.blake2b(f"{meter_id}\x1f{source}\x1f{stamp}\x1f{code}".encode(), digest_size=16)
    return f"ev-{digest.hexdigest()}"


@dataclass(frozen=True, slots=True)
class MeterEventRecord:
    """One event a meter reported (an event-log entry, an alarm), as a driver hands it upward.

    ``source`` names where the meter recorded it (a DLMS event log's OBIS code, say), ``code``
    is the meter's own event code, ``kind`` a short name (``power-down``); ``timestamp`` is
    timezone-aware UTC. ``event_id`` defaults to :func:`stable_event_id` over meter, source,
    timestamp and code; a driver whose meters number their events may pass its own.
    """

    meter_id: str
    timestamp: datetime
    kind: str
    source: str
    code: int | None = None
    severity: EventSeverity = "info"
    extra: Mapping[str, EventValue] = field(default_factory=dict)
    event_id: str = ""

    def __post_init__(self) -> None:
        if self.timestamp.tzinfo is None:
            raise ProtocolError(f"event {self.kind!r} from {self.source} has no time zone", meter_id=self.meter_id)
        if not 1 <= len(self.kind) <= 64:
            raise ProtocolError(f"event kind from {self.source} must be 1..64 characters", meter_id=self.meter_id)
        if not self.event_id:
            ident: int | str = self.code if self.code is not None else self.kind
            object.__setattr__(self, "event_id", stable_event_id(self.meter_id, self.source, self.timestamp, ident))


@dataclass(frozen=True, slots=True)
class ReadResult:
    """Readings and events of one session; ``meter_time`` is the meter's clock when it was read."""

    readings: list[Reading]
    meter_time: datetime | None = None
    events: list[MeterEventRecord] = field(default_factory=list)


@runtime_checkable
class Driver(Protocol):
    """Reads one meter once over its medium. Raises only gxcore errors."""

    name: ClassVar[str]

    def validate_profile(self, profile: DeviceProfile) -> None:
        """Raise ConfigurationError if the profile's points and parameters do not fit this protocol."""

    async def read(
        self, target: MeterTarget, profile: DeviceProfile, request: ReadRequest, *, timeout: float
    ) -> ReadResult:
        """Read the points of ``profile`` selected by ``request``; every exchange bounded by ``timeout``."""


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
    if not isinstance(driver, Driver):
        raise ConfigurationError(f"entry point {matches[0].value!r} is not a gxcore Driver")
    return driver
