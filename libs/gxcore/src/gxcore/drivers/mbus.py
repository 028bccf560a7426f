"""The wired M-Bus protocol driver: one read of one meter through the M-Bus master core.

Media: ``tcp://gateway:port`` (an M-Bus TCP gateway: raw frames both ways) or
``serial:///dev/ttyUSB0`` (a level converter; 2400 8E1 unless the URL query says
``baud=``, ``parity=`` ...). The meter is addressed by ``target.options["secondary_address"]``
(16 hex characters, ``F`` wildcards allowed when they match one meter), else by
``target.options["primary_address"]``, else by the URL query ``address=``, else by the
profile parameter ``primary_address`` (0..250).

Point ``source`` rule and units: :mod:`gxcore.protocols.mbus.points` (shared with wM-Bus),
e.g. ``6-0:1.0.0`` or ``record:On time``. A reply with none of the selected points is a
ProtocolError. Readings are stamped with the time of the read; ``meter_time`` is the
meter's clock record, read in the profile parameter ``timezone`` (IANA name, default UTC).

``read(..., medium=...)`` reads over a medium that is already open (a gateway
connection, one end of :func:`gxcore.media.memory_pair`) and leaves it open; reads over
one bus (URL without its query, or the given medium) wait for each other. The
constructor's ``on_traffic`` hook goes to every medium the driver opens.

Profile parameters: ``primary_address``, ``timeout`` (caps the per-exchange timeout),
``retries`` (0..5, default 2), ``reset_before_read`` (default true), ``max_telegrams``
(1..64, default 16), ``timezone``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import ClassVar
from weakref import WeakKeyDictionary

from gxcore.drivers.api import MeterTarget, ReadRequest, ReadResult, nothing_selected
from gxcore.drivers.common import (
    FieldDriver,
    LineDefaults,
    exchange_timeout,
    int_parameter,
    meter_timezone,
    read_medium,
    record_problems,
    utc_now,
)
from gxcore.drivers.loop import drive
from gxcore.errors import ConfigurationError, GxError, ProtocolError
from gxcore.media import Medium, TrafficHook
from gxcore.media.endpoint import Endpoint
from gxcore.profiles.model import DeviceProfile
from gxcore.protocols.mbus.frame import MAX_PRIMARY, SecondaryAddress
from gxcore.protocols.mbus.master import MasterConfig, MasterOperation, MBusMaster, ReadComplete, SearchComplete
from gxcore.protocols.mbus.points import meter_time_of, readings_from, record_points

PROTOCOL = "mbus"
MBUS_SERIAL = LineDefaults(baud=2400, bytesize=8, parity="E", stopbits=1)
_PARAMETERS = frozenset({"primary_address", "timeout", "retries", "reset_before_read", "max_telegrams", "timezone"})


def master_config(profile: DeviceProfile, reply_timeout: float) -> MasterConfig:
    """The master's settings from the profile parameters (checked)."""
    reset = profile.parameters.get("reset_before_read", True)
    if not isinstance(reset, bool):
        raise ConfigurationError(f"profile {profile.name}: reset_before_read must be true or false")
    return MasterConfig(
        reply_timeout=reply_timeout,
        retries=int_parameter(profile, "retries", 2, 0, 5),
        max_telegrams=int_parameter(profile, "max_telegrams", 16, 1, 64),
        reset_before_read=reset,
    )


def validate_mbus_profile(profile: DeviceProfile) -> None:
    """Raise ConfigurationError unless the profile's points and parameters follow the module doc."""
    if profile.protocol != PROTOCOL:
        raise ConfigurationError(f"profile {profile.name}: protocol is {profile.protocol!r}, not {PROTOCOL!r}")
    unknown = set(profile.parameters) - _PARAMETERS
    if unknown:
        raise ConfigurationError(f"profile {profile.name}: unknown M-Bus parameters {sorted(unknown)}")
    if "primary_address" in profile.parameters:
        _primary(profile.parameters["primary_address"], f"profile {profile.name}")
    meter_timezone(profile)
    exchange_timeout(1.0, profile.parameters, profile.name)
    master_config(profile, 1.0)
    record_points(profile.points)


def _primary(value: object, where: str) -> int:
    try:
        address = int(str(value), 0)
    except ValueError:
        raise ConfigurationError(f"{where}: primary address {value!r} is not a number") from None
    if not 0 <= address <= MAX_PRIMARY:
        raise ConfigurationError(f"{where}: primary address {address} outside 0..{MAX_PRIMARY}")
    return address


def meter_address(target: MeterTarget, profile: DeviceProfile, endpoint: Endpoint) -> int | SecondaryAddress:
    """Secondary address, else primary from options, URL query ``address``, profile (module doc)."""
    where = f"meter {target.meter_id}"
    secondary = target.options.get("secondary_address")
    if secondary is not None:
        try:
            return SecondaryAddress.parse(secondary)
        except ValueError:
            raise ConfigurationError(f"{where}: secondary_address must be 16 hex characters (F = wildcard)") from None
    if "primary_address" in target.options:
        return _primary(target.options["primary_address"], where)
    if "address" in endpoint.query:
        return _primary(endpoint.query["address"], f"{where} URL")
    if "primary_address" in profile.parameters:
        return _primary(profile.parameters["primary_address"], f"profile {profile.name}")
    raise ConfigurationError(f"{where}: give options primary_address or secondary_address, or the URL query address=")


async def read_meter(
    medium: Medium, address: int | SecondaryAddress, config: MasterConfig, *, meter_id: str | None = None
) -> ReadComplete:
    """Read one meter over the open ``medium`` with a fresh master; raise the master's error on failure."""
    clock = asyncio.get_running_loop().time
    master = MBusMaster(config)
    if isinstance(address, SecondaryAddress):
        master.read_secondary(address, clock())
    else:
        master.read_primary(address, clock())
    operation = MasterOperation(master)
    await drive(operation, medium, idle_timeout=config.reply_timeout, send_timeout=config.reply_timeout, clock=clock)
    try:
        result = operation.result()
    except GxError as exc:
        exc.meter_id = exc.meter_id or meter_id  # the master does not know which meter it read
        raise
    if not isinstance(result, ReadComplete):
        raise ProtocolError(f"unexpected master result {type(result).__name__}", meter_id=meter_id)
    return result


class MBusDriver(FieldDriver):
    """Reads wired M-Bus meters described by device profiles (protocol ``mbus``)."""

    name: ClassVar[str] = PROTOCOL
    meter_options: ClassVar[frozenset[str] | None] = frozenset({"primary_address", "secondary_address"})

    def __init__(self, *, clock: Callable[[], datetime] = utc_now, on_traffic: TrafficHook | None = None) -> None:
        super().__init__(clock=clock, on_traffic=on_traffic)
        # One master per bus: reads through one gateway or port wait for each other.
        self._locks: WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = WeakKeyDictionary()

    def validate_profile(self, profile: DeviceProfile) -> None:
        validate_mbus_profile(profile)

    def _bus_lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(asyncio.get_running_loop(), {}).setdefault(key, asyncio.Lock())

    async def read(
        self,
        target: MeterTarget,
        profile: DeviceProfile,
        request: ReadRequest,
        *,
        timeout: float,
        medium: Medium | None = None,
    ) -> ReadResult:
        validate_mbus_profile(profile)
        endpoint = target.endpoint()
        points = record_points(profile.points_for(request.purposes))
        address = meter_address(target, profile, endpoint)
        reply_timeout = exchange_timeout(timeout, profile.parameters, profile.name)
        config = master_config(profile, reply_timeout)
        if not points:
            return nothing_selected(profile, request)
        bus = medium.describe() if medium is not None else medium_key(endpoint)
        async with (
            self._bus_lock(bus),
            read_medium(
                endpoint, medium, timeout=reply_timeout, serial_defaults=MBUS_SERIAL, on_traffic=self.on_traffic
            ) as line,
        ):
            complete = await read_meter(line, address, config, meter_id=target.meter_id)
        at = self._clock()
        readings = readings_from(complete.telegrams, points, at, meter_id=target.meter_id)
        return ReadResult(
            readings=readings,
            meter_time=meter_time_of(complete.telegrams, meter_timezone(profile)),
            problems=record_problems(complete.telegrams, points),
        )


def medium_key(endpoint: Endpoint) -> str:
    """One bus per gateway or port: the URL without its query."""
    return f"{endpoint.scheme}://{endpoint.host}:{endpoint.port}{endpoint.path}"


async def scan_bus(
    endpoint: Endpoint,
    *,
    timeout: float,
    mask: SecondaryAddress | None = None,
    on_traffic: TrafficHook | None = None,
) -> SearchComplete:
    """A wildcard search of the bus behind ``endpoint`` (below ``mask``), as an installer runs it.

    Each secondary address is found by selecting ever narrower masks (see gxcore.protocols.mbus.master);
    ``unresolved`` lists masks where meters still collided at full depth (two meters with one ID).
    """
    clock = asyncio.get_running_loop().time
    master = MBusMaster(MasterConfig(reply_timeout=timeout))
    async with read_medium(endpoint, None, timeout=timeout, serial_defaults=MBUS_SERIAL, on_traffic=on_traffic) as line:
        master.search(clock(), mask)
        operation = MasterOperation(master)
        await drive(operation, line, idle_timeout=timeout, send_timeout=timeout, clock=clock)
    result = operation.result()
    if not isinstance(result, SearchComplete):
        raise ProtocolError(f"unexpected master result {type(result).__name__}")
    return result


async def read_telegrams(
    endpoint: Endpoint, address: int | SecondaryAddress, *, timeout: float, on_traffic: TrafficHook | None = None
) -> ReadComplete:
    """Every telegram of one meter, without a profile (``gxami get mbus``, ``gxami scan mbus --read``)."""
    async with read_medium(endpoint, None, timeout=timeout, serial_defaults=MBUS_SERIAL, on_traffic=on_traffic) as line:
        return await read_meter(line, address, MasterConfig(reply_timeout=timeout))
