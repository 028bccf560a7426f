"""The wireless M-Bus protocol driver: wait on a receiver's TCP feed for one meter's telegram.

wM-Bus meters are not asked; they send every few seconds to minutes. A receiver
(a USB stick behind a bridge, a gateway) streams what it hears over TCP, and
``read`` connects to ``tcp://receiver:port``, waits up to ``timeout`` seconds for the
next telegram of this meter, decodes it and maps its records to the profile points;
``timeout`` must therefore exceed the meter's send interval.

Feed framing (URL query ``framing``): ``hex`` (default) or ``length``, as
:mod:`gxcore.protocols.wmbus.feed` describes; data-link CRCs may be present or already
removed (query ``crc=auto|present|absent``, default auto). Lines that are not hex,
telegrams that do not frame, and telegrams of other meters are skipped.

The meter is named by ``target.options["wmbus_id"]`` (the 8-digit ID as printed),
else the URL query ``id``, else ``target.meter_id``; it matches the link-layer ID, or
the ID of a long transport header (CI 0x72, e.g. behind a radio converter). The AES
key is ``target.secrets["key"]``: 16 bytes, or 32 hex digits as a secrets file holds it.

Point ``source`` rule and units: as wired M-Bus (:mod:`gxcore.protocols.mbus.points`), e.g.
``8-0:1.0.0`` for a water meter's volume, ``record:Error flags`` for its status word.
A telegram of this meter that cannot be decrypted raises at once (wrong or missing
key); one that is damaged is skipped and named in the timeout error.

``read(..., medium=...)`` waits on a feed that is already open (and leaves it open),
e.g. one end of :func:`gxcore.media.memory_pair`; the framing and CRC mode still come
from the target URL's query. The constructor's ``on_traffic`` hook goes to every medium
the driver opens.

Profile parameters: ``timeout`` (caps the caller's), ``timezone`` (of the meter clock).

:func:`telegram_result` is the one mapping of a decoded telegram to readings: the driver
uses it for the telegram it waited for, and a collector listening to a receiver for every
telegram it hears (gxami_collector.wmbus_service) uses it for each of them.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import ClassVar, Literal

from gxcore.drivers.api import MeterTarget, ReadRequest, ReadResult, nothing_selected
from gxcore.drivers.common import (
    FieldDriver,
    aes_key,
    exchange_timeout,
    meter_timezone,
    read_medium,
    record_problems,
)
from gxcore.drivers.loop import drive
from gxcore.errors import ConfigurationError
from gxcore.media import Medium
from gxcore.media.endpoint import Endpoint
from gxcore.profiles.model import DeviceProfile
from gxcore.protocols.mbus.points import RecordPoint, meter_time_of, readings_from, record_points
from gxcore.protocols.mbus.telegram import MBusTelegram
from gxcore.protocols.wmbus.feed import Framing, MeterTelegram
from gxcore.protocols.wmbus.frame import CrcMode

PROTOCOL = "wmbus"
_PARAMETERS = frozenset({"timeout", "timezone"})


def feed_settings(endpoint: Endpoint) -> tuple[Framing, CrcMode]:
    """Framing and CRC mode from the URL query."""
    framing = endpoint.query.get("framing", "hex")
    crc = endpoint.query.get("crc", "auto")
    if framing not in ("hex", "length") or crc not in ("auto", "present", "absent"):
        raise ConfigurationError("wM-Bus feed URL: framing=hex|length, crc=auto|present|absent")
    return framing, crc  # type: ignore[return-value]  # narrowed by the membership tests above


def wmbus_id(target: MeterTarget, endpoint: Endpoint) -> str:
    """The meter's 8-character ID (module doc for where it comes from)."""
    text = target.options.get("wmbus_id") or endpoint.query.get("id") or target.meter_id
    ident = text.strip().upper()
    if len(ident) != 8 or any(ch not in "0123456789ABCDEF" for ch in ident):
        raise ConfigurationError(f"meter {target.meter_id}: wM-Bus ID must be 8 digits, not {text!r}")
    return ident


def validate_wmbus_profile(profile: DeviceProfile) -> None:
    """Raise ConfigurationError unless the profile's points and parameters follow the module doc."""
    if profile.protocol != PROTOCOL:
        raise ConfigurationError(f"profile {profile.name}: protocol is {profile.protocol!r}, not {PROTOCOL!r}")
    unknown = set(profile.parameters) - _PARAMETERS
    if unknown:
        raise ConfigurationError(f"profile {profile.name}: unknown wM-Bus parameters {sorted(unknown)}")
    meter_timezone(profile)
    exchange_timeout(1.0, profile.parameters, profile.name)
    record_points(profile.points)


def telegram_result(
    telegram: MBusTelegram,
    profile: DeviceProfile,
    points: list[RecordPoint],
    *,
    received_at: datetime,
    meter_id: str,
    stamp: Literal["received", "meter"] = "received",
) -> ReadResult:
    """The profile's readings of one decoded telegram, with the meter's clock (ProtocolError if none matches).

    ``stamp``: readings are stamped ``received_at`` ("received", as a read job does), or with the
    meter's own clock record when the telegram has one ("meter"; else ``received_at``).
    """
    meter_time = meter_time_of([telegram], meter_timezone(profile))
    at = meter_time if stamp == "meter" and meter_time is not None else received_at
    readings = readings_from([telegram], points, at, meter_id=meter_id)
    return ReadResult(readings=readings, meter_time=meter_time, problems=record_problems([telegram], points))


class WMBusDriver(FieldDriver):
    """Reads wireless M-Bus meters from a receiver's TCP feed (protocol ``wmbus``)."""

    name: ClassVar[str] = PROTOCOL
    meter_options: ClassVar[frozenset[str] | None] = frozenset({"wmbus_id"})

    def validate_profile(self, profile: DeviceProfile) -> None:
        validate_wmbus_profile(profile)

    async def read(
        self,
        target: MeterTarget,
        profile: DeviceProfile,
        request: ReadRequest,
        *,
        timeout: float,
        medium: Medium | None = None,
    ) -> ReadResult:
        validate_wmbus_profile(profile)
        points = record_points(profile.points_for(request.purposes))
        endpoint = target.endpoint()
        framing, crc = feed_settings(endpoint)
        ident = wmbus_id(target, endpoint)
        key = aes_key(target.secrets.get("key"), target.meter_id)
        wait = exchange_timeout(timeout, profile.parameters, profile.name)
        if not points:
            return nothing_selected(profile, request)
        clock = asyncio.get_running_loop().time
        # The wait starts before the connect: ``timeout`` bounds the whole read.
        core = MeterTelegram(ident, key, framing=framing, crc=crc, now=clock(), wait=wait, meter_id=target.meter_id)
        async with read_medium(endpoint, medium, timeout=wait, on_traffic=self.on_traffic) as feed:
            await drive(core, feed, idle_timeout=wait, send_timeout=wait, clock=clock)
        return telegram_result(core.result(), profile, points, received_at=self._clock(), meter_id=target.meter_id)
