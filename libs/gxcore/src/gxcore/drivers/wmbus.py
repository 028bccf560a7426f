"""The wireless M-Bus protocol driver: wait on a receiver's TCP feed for one meter's telegram.

wM-Bus meters are not asked; they send every few seconds to minutes. A receiver
(a USB stick behind a bridge, a gateway) streams what it hears over TCP, and
``read`` connects to ``tcp://receiver:port``, waits up to ``timeout`` seconds for the
next telegram of this meter, decodes it and maps its records to the profile points;
``timeout`` must therefore exceed the meter's send interval.

Feed framing (URL query ``framing``): ``hex`` (default) is one telegram per line in
hex, L field first; ``length`` is a 2-byte big-endian length before each raw telegram.
Data-link CRCs may be present or already removed (query ``crc=auto|present|absent``,
default auto). Lines that are not hex, telegrams that do not frame, and telegrams of
other meters are skipped; a hex line longer than any telegram is dropped up to its end.

The meter is named by ``target.options["wmbus_id"]`` (the 8-digit ID as printed),
else the URL query ``id``, else ``target.meter_id``; it matches the link-layer ID, or
the ID of a long transport header (CI 0x72, e.g. behind a radio converter). The AES
key is ``target.secrets["key"]``: 16 bytes, or 32 hex digits as a secrets file holds it.

Point ``source`` rule and units: as wired M-Bus (:mod:`gxcore.drivers.mbus`), e.g.
``8-0:1.0.0`` for a water meter's volume, ``record:Error flags`` for its status word.
A telegram of this meter that cannot be decrypted raises at once (wrong or missing
key); one that is damaged is skipped and named in the timeout error.

Profile parameters: ``timeout`` (caps the caller's), ``timezone`` (of the meter clock).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import ClassVar, Literal

from gxcore.drivers.api import BaseDriver, MeterTarget, ReadRequest, ReadResult
from gxcore.drivers.mbus import exchange_timeout, meter_time_of, meter_timezone, readings_from, record_points
from gxcore.drivers.streams import open_stream
from gxcore.errors import ConfigurationError, DecryptionError, GxError, MeterTimeoutError
from gxcore.media.endpoint import Endpoint
from gxcore.profiles.model import DeviceProfile
from gxcore.protocols.mbus.telegram import MBusTelegram, bcd_id
from gxcore.protocols.wmbus.frame import DLL_SIZE, MAX_TELEGRAM, CrcMode, parse_link_header, strip_crcs
from gxcore.protocols.wmbus.telegram import CI_TPL_LONG, decode_wmbus_telegram
from gxcore.secrets import Secret

PROTOCOL = "wmbus"
_PARAMETERS = frozenset({"timeout", "timezone"})
_MAX_LINE = 2 * MAX_TELEGRAM + 8  # hex digits of the longest telegram, and a little slack for CR and spaces
Framing = Literal["hex", "length"]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def aes_key(secret: Secret | None, meter_id: str) -> bytes | None:
    """The 16-byte key from a secret holding raw bytes or 32 hex digits; never echoes it."""
    if secret is None:
        return None
    raw = secret.reveal()
    if len(raw) == 32:
        try:
            raw = bytes.fromhex(raw.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise ConfigurationError("key is neither 16 bytes nor 32 hex digits", meter_id=meter_id) from None
    if len(raw) != 16:
        raise ConfigurationError("key must be 16 bytes (AES-128) or 32 hex digits", meter_id=meter_id)
    return raw


class TelegramFeed:
    """Sans-IO splitter of a receiver feed into raw telegrams; the buffer stays bounded."""

    def __init__(self, framing: Framing) -> None:
        self.framing = framing
        self._buffer = bytearray()
        self._skipping = False  # inside an overlong line: drop up to its end
        self.skipped = 0

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the telegrams they completed."""
        self._buffer += data
        return self._lines() if self.framing == "hex" else self._frames()

    def _lines(self) -> list[bytes]:
        out: list[bytes] = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > _MAX_LINE:
                    self._buffer.clear()
                    self._skipping = True
                return out
            line = bytes(self._buffer[:end]).strip()
            del self._buffer[: end + 1]
            if self._skipping:
                self._skipping = False
                continue
            try:
                out.append(bytes.fromhex(line.decode("ascii")))
            except (UnicodeDecodeError, ValueError):
                self.skipped += 1

    def _frames(self) -> list[bytes]:
        out: list[bytes] = []
        while len(self._buffer) >= 2:
            size = int.from_bytes(self._buffer[:2], "big")
            if not DLL_SIZE < size <= MAX_TELEGRAM:
                del self._buffer[:1]  # not a length we believe: slide one byte and look again
                self.skipped += 1
                continue
            if len(self._buffer) < 2 + size:
                break
            out.append(bytes(self._buffer[2 : 2 + size]))
            del self._buffer[: 2 + size]
        return out


def telegram_ids(raw: bytes, crc: CrcMode) -> set[str]:
    """IDs a raw telegram speaks for (link layer, and a long transport header); FramingError if it does not frame."""
    telegram = strip_crcs(raw, crc=crc)
    ids = {parse_link_header(telegram).id}
    if len(telegram) >= DLL_SIZE + 5 and telegram[DLL_SIZE] == CI_TPL_LONG:
        ids.add(bcd_id(telegram[DLL_SIZE + 1 : DLL_SIZE + 5]))
    return ids


def feed_settings(endpoint: Endpoint) -> tuple[Framing, CrcMode]:
    """Framing and CRC mode from the URL query."""
    framing = endpoint.query.get("framing", "hex")
    crc = endpoint.query.get("crc", "auto")
    if framing not in ("hex", "length") or crc not in ("auto", "present", "absent"):
        raise ConfigurationError("wM-Bus feed URL: framing=hex|length, crc=auto|present|absent")
    return framing, crc  # type: ignore[return-value]  # narrowed by the membership tests above


def wmbus_id(target: MeterTarget) -> str:
    """The meter's 8-character ID (module doc for where it comes from)."""
    text = target.options.get("wmbus_id") or target.endpoint().query.get("id") or target.meter_id
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


class WMBusDriver(BaseDriver):
    """Reads wireless M-Bus meters from a receiver's TCP feed (protocol ``wmbus``)."""

    name: ClassVar[str] = PROTOCOL

    def __init__(self, *, clock: Callable[[], datetime] = _utc_now) -> None:
        self._clock = clock

    def validate_profile(self, profile: DeviceProfile) -> None:
        validate_wmbus_profile(profile)

    async def read(
        self, target: MeterTarget, profile: DeviceProfile, request: ReadRequest, *, timeout: float
    ) -> ReadResult:
        validate_wmbus_profile(profile)
        points = record_points(profile.points_for(request.purposes))
        endpoint = target.endpoint()
        framing, crc = feed_settings(endpoint)
        ident = wmbus_id(target)
        key = aes_key(target.secrets.get("key"), target.meter_id)
        wait = exchange_timeout(timeout, profile.parameters, profile.name)
        if not points:
            return ReadResult(readings=[])
        telegram = await self._next_telegram(target, ident, key, framing, crc, wait)
        readings = readings_from([telegram], points, self._clock(), meter_id=target.meter_id)
        return ReadResult(readings=readings, meter_time=meter_time_of([telegram], meter_timezone(profile)))

    async def _next_telegram(
        self, target: MeterTarget, ident: str, key: bytes | None, framing: Framing, crc: CrcMode, wait: float
    ) -> MBusTelegram:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        stream = await open_stream(target.endpoint(), timeout=wait, meter_id=target.meter_id)
        feed = TelegramFeed(framing)
        last_error: GxError | None = None
        try:
            while (remaining := deadline - loop.time()) > 0:
                data = await stream.read_some(timeout=remaining)
                for raw in feed.feed(data or b""):
                    try:
                        ids = telegram_ids(raw, crc)
                    except GxError:
                        feed.skipped += 1  # does not frame: nobody's telegram
                        continue
                    if ident not in ids:
                        continue
                    try:
                        return decode_wmbus_telegram(raw, key, crc=crc)
                    except (DecryptionError, ConfigurationError):
                        raise  # the key is missing or wrong: waiting longer will not help
                    except GxError as exc:
                        last_error = exc  # damaged on the air; the next one may be fine
        finally:
            await stream.close()
        detail = f"; last telegram of it failed: {last_error.reason}" if last_error is not None else ""
        raise MeterTimeoutError(
            f"no telegram from wM-Bus meter {ident} within {wait:g} s{detail}", meter_id=target.meter_id
        )
