"""What the field drivers (M-Bus, wM-Bus, DSMR, IEC 62056-21) share: opening a medium, and profile helpers.

Media: ``tcp://host:port`` and ``serial:///dev/ttyUSB0``. The media parameters of the
URL query (``connect_timeout``, ``baud``, ``parity``, ``rs485`` ..., see
:mod:`gxcore.media.url`) are passed on; a driver's own query parameters (``address``,
``framing`` ...) are not. Serial line settings the URL leaves out come from the
protocol's :class:`LineDefaults` (M-Bus 2400 8E1, IEC 62056-21 300 7E1, DSMR 5 115200
8N1); the TCP connect timeout defaults to the read's timeout.

A read either gets a medium that is already open (a meter that dialled in, one end of a
:func:`gxcore.media.memory_pair` in tests), which it uses and leaves open, or opens the
target's endpoint itself and closes it afterwards: :func:`read_medium` does both. The
driver's ``on_traffic`` hook goes to every medium it opens (count frames and bytes there).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gxcore.drivers.api import BaseDriver, PointProblem
from gxcore.errors import ConfigurationError
from gxcore.media import (
    KNOWN_PARAMETERS,
    Medium,
    SerialPort,
    SerialSettings,
    TcpClient,
    TcpSettings,
    TrafficHook,
    medium_settings,
)
from gxcore.media.endpoint import Endpoint
from gxcore.profiles.model import DeviceProfile, OptionValue
from gxcore.protocols.mbus.points import RecordPoint
from gxcore.protocols.mbus.telegram import MBusTelegram
from gxcore.secrets import Secret


def utc_now() -> datetime:
    """The default reading clock of the drivers."""
    return datetime.now(UTC)


class FieldDriver(BaseDriver):
    """What the field drivers (M-Bus, wM-Bus, IEC 62056-21, DSMR) share: the clock that stamps their
    readings and the traffic hook handed to every medium they open (a trace of frames and bytes)."""

    def __init__(self, *, clock: Callable[[], datetime] = utc_now, on_traffic: TrafficHook | None = None) -> None:
        self._clock = clock
        self.on_traffic = on_traffic


# -- media ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LineDefaults:
    """A protocol's serial line settings, used where the URL does not give its own."""

    baud: int
    bytesize: int = 8
    parity: str = "N"
    stopbits: float = 1


def medium_url(endpoint: Endpoint) -> str:
    """The endpoint's URL without its query (the parameters travel as keywords)."""
    if endpoint.scheme == "serial":
        return f"serial://{endpoint.path}"
    host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
    return f"{endpoint.scheme}://{host}:{endpoint.port}"


async def open_endpoint(
    endpoint: Endpoint,
    *,
    timeout: float,
    serial_defaults: LineDefaults | None = None,
    on_traffic: TrafficHook | None = None,
) -> Medium:
    """Open ``endpoint`` (tcp, or serial when the protocol has line defaults) within ``timeout`` seconds."""
    if not timeout > 0:
        raise ConfigurationError(f"timeout must be positive, not {timeout}")
    if endpoint.scheme not in ("tcp", "serial"):
        raise ConfigurationError(f"{endpoint.scheme}:// is not supported here; use tcp:// or serial://")
    if endpoint.scheme == "serial" and serial_defaults is None:
        raise ConfigurationError("this protocol is not read over a serial line; use tcp://")
    known = KNOWN_PARAMETERS[endpoint.scheme]
    params: dict[str, str | int | float | bool] = {k: v for k, v in endpoint.query.items() if k in known}
    if endpoint.scheme == "tcp":
        params.setdefault("connect_timeout", timeout)
    elif serial_defaults is not None:
        params.setdefault("baud", serial_defaults.baud)
        params.setdefault("bytesize", serial_defaults.bytesize)
        params.setdefault("parity", serial_defaults.parity)
        params.setdefault("stopbits", serial_defaults.stopbits)
    settings = medium_settings(medium_url(endpoint), **params)
    medium: Medium
    if isinstance(settings, TcpSettings):
        medium = TcpClient(settings, on_traffic=on_traffic)
    elif isinstance(settings, SerialSettings):
        medium = SerialPort(settings, on_traffic=on_traffic)
    else:  # medium_settings keeps the scheme, and only tcp and serial get here
        raise ConfigurationError(f"{endpoint.scheme}:// is not supported here; use tcp:// or serial://")
    await medium.open()
    return medium


@asynccontextmanager
async def read_medium(
    endpoint: Endpoint,
    given: Medium | None,
    *,
    timeout: float,
    serial_defaults: LineDefaults | None = None,
    on_traffic: TrafficHook | None = None,
) -> AsyncIterator[Medium]:
    """The medium of one read: ``given`` as it is (left open), else ``endpoint`` opened here and closed after."""
    if given is not None:
        yield given
        return
    medium = await open_endpoint(endpoint, timeout=timeout, serial_defaults=serial_defaults, on_traffic=on_traffic)
    try:
        yield medium
    finally:
        await medium.close()


# -- profile parameters and secrets -------------------------------------------------------


def exchange_timeout(timeout: float, parameters: dict[str, OptionValue], profile_name: str) -> float:
    """The caller's per-exchange timeout, capped by the profile parameter ``timeout``."""
    if not timeout > 0:
        raise ConfigurationError(f"timeout must be positive, not {timeout}")
    cap = parameters.get("timeout")
    if cap is None:
        return timeout
    if isinstance(cap, bool) or not isinstance(cap, int | float) or not 0 < cap <= 600:
        raise ConfigurationError(f"profile {profile_name}: timeout must be seconds in (0, 600]")
    return min(timeout, float(cap))


def meter_timezone(profile: DeviceProfile) -> tzinfo:
    """The zone of the meter's clock: profile parameter ``timezone`` (IANA name), default UTC."""
    name = profile.parameters.get("timezone", "UTC")
    if not isinstance(name, str):
        raise ConfigurationError(f"profile {profile.name}: timezone must be an IANA zone name")
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(f"profile {profile.name}: unknown timezone {name!r}") from None


def int_parameter(profile: DeviceProfile, key: str, default: int, low: int, high: int) -> int:
    """An integer profile parameter in ``low..high``; ConfigurationError names the profile."""
    value = profile.parameters.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigurationError(f"profile {profile.name}: {key} must be an integer {low}..{high}, not {value!r}")
    return value


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


def record_problems(telegrams: Sequence[MBusTelegram], points: Sequence[RecordPoint]) -> list[PointProblem]:
    """(w)M-Bus: each profile point no record of ``telegrams`` carries, and what the decoder left unparsed."""
    records = [r for t in telegrams for r in t.records]
    problems = [
        PointProblem(rp.point.quantity, rp.point.source, "no record of the telegram matches")
        for rp in points
        if not any(rp.matches(r) for r in records)
    ]
    problems.extend(
        PointProblem("", f"telegram {t.id} offset {u.offset}", f"unparsed {len(u.data)} bytes: {u.reason}")
        for t in telegrams
        for u in t.unparsed
    )
    return problems
