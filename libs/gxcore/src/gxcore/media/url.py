"""Media from meter URLs: ``open_medium("tcp://10.0.0.5:4059")`` and ``open_listener("listen://:4059", ...)``.

Parameters come from the URL's query and from keyword arguments (keywords win); the
same names are used in both. Unknown names and bad values raise ConfigurationError
naming the parameter. Nothing is opened here: the medium is returned ready for
``async with`` or ``await medium.open()``, so a bad URL fails before any I/O.

=========  ==================================================================  =========================
scheme     parameters (default)                                                example
=========  ==================================================================  =========================
tcp        connect_timeout (5 s), buffer_limit (65536)                          tcp://10.0.0.5:4059
udp        max_datagrams (64), open_timeout (5 s)                               udp://10.0.0.5:4059
serial     baud (9600), bytesize (8), parity (N|E|O), stopbits (1|1.5|2),       serial:///dev/ttyUSB0?baud=2400&parity=E
           inter_frame (s, none), exclusive (1), buffer_limit (65536),
           rs485 (0), rs485_rts_tx (1), rs485_rts_rx (0), rs485_delay_tx (s),
           rs485_delay_rx (s)
listen     max_connections (64), idle_timeout (120 s), buffer_limit (65536)     listen://0.0.0.0:4059
=========  ==================================================================  =========================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from gxcore.errors import ConfigurationError
from gxcore.media.endpoint import Endpoint
from gxcore.media.listener import ConnectionHandler, ListenerHook, ListenerSettings, TcpListener
from gxcore.media.medium import Medium, TrafficHook
from gxcore.media.serialport import PARITIES, RS485Direction, SerialPort, SerialSettings
from gxcore.media.tcp import TcpClient, TcpSettings
from gxcore.media.udp import UdpEndpoint, UdpSettings

ParamValue = str | int | float | bool
MediumSettings = TcpSettings | UdpSettings | SerialSettings | ListenerSettings

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


def _as_int(key: str, value: ParamValue) -> int:
    if isinstance(value, (bool, float)):
        raise ConfigurationError(f"parameter {key!r}: {value!r} is not an integer")
    try:
        return int(value)
    except ValueError:
        raise ConfigurationError(f"parameter {key!r}: {value!r} is not an integer") from None


def _as_float(key: str, value: ParamValue) -> float:
    if isinstance(value, bool):
        raise ConfigurationError(f"parameter {key!r}: {value!r} is not a number")
    try:
        return float(value)
    except ValueError:
        raise ConfigurationError(f"parameter {key!r}: {value!r} is not a number") from None


def _as_bool(key: str, value: ParamValue) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ConfigurationError(f"parameter {key!r}: {value!r} is not a yes/no value (1/0, true/false)")


def _as_parity(key: str, value: ParamValue) -> str:
    text = str(value).strip().upper()
    if text not in PARITIES:
        raise ConfigurationError(f"parameter {key!r}: {value!r} is not a parity (N, E or O)")
    return text


Converter = Callable[[str, ParamValue], Any]

# URL/keyword name -> (settings field, converter), per scheme.
_TCP: Final[dict[str, tuple[str, Converter]]] = {
    "connect_timeout": ("connect_timeout", _as_float),
    "buffer_limit": ("buffer_limit", _as_int),
}
_UDP: Final[dict[str, tuple[str, Converter]]] = {
    "max_datagrams": ("max_datagrams", _as_int),
    "open_timeout": ("open_timeout", _as_float),
}
_SERIAL: Final[dict[str, tuple[str, Converter]]] = {
    "baud": ("baudrate", _as_int),
    "bytesize": ("bytesize", _as_int),
    "parity": ("parity", _as_parity),
    "stopbits": ("stopbits", _as_float),
    "inter_frame": ("inter_frame_timeout", _as_float),
    "exclusive": ("exclusive", _as_bool),
    "buffer_limit": ("buffer_limit", _as_int),
    "rs485": ("rs485", _as_bool),
}
_RS485: Final[dict[str, tuple[str, Converter]]] = {
    "rs485_rts_tx": ("rts_level_for_tx", _as_bool),
    "rs485_rts_rx": ("rts_level_for_rx", _as_bool),
    "rs485_delay_tx": ("delay_before_tx", _as_float),
    "rs485_delay_rx": ("delay_before_rx", _as_float),
}
_LISTEN: Final[dict[str, tuple[str, Converter]]] = {
    "max_connections": ("max_connections", _as_int),
    "idle_timeout": ("idle_timeout", _as_float),
    "buffer_limit": ("buffer_limit", _as_int),
}
KNOWN_PARAMETERS: Final[Mapping[str, frozenset[str]]] = {
    "tcp": frozenset(_TCP),
    "udp": frozenset(_UDP),
    "serial": frozenset(_SERIAL) | frozenset(_RS485),
    "listen": frozenset(_LISTEN),
}


def _fields(scheme: str, table: Mapping[str, tuple[str, Converter]], given: Mapping[str, ParamValue]) -> dict[str, Any]:
    unknown = sorted(set(given) - KNOWN_PARAMETERS[scheme])
    if unknown:
        raise ConfigurationError(
            f"unknown {scheme} parameter {unknown[0]!r} (known: {', '.join(sorted(KNOWN_PARAMETERS[scheme]))})"
        )
    return {table[key][0]: table[key][1](key, value) for key, value in given.items() if key in table}


def medium_settings(url: str, **params: ParamValue) -> MediumSettings:
    """Parse ``url`` plus ``params`` into the settings of its medium; ConfigurationError if wrong."""
    endpoint = Endpoint.parse(url)
    given: dict[str, ParamValue] = {**endpoint.query, **params}
    where = _where(endpoint)
    try:
        if endpoint.scheme == "tcp":
            return TcpSettings(endpoint.host, _port(endpoint), **_fields("tcp", _TCP, given))
        if endpoint.scheme == "udp":
            return UdpSettings(endpoint.host, _port(endpoint), **_fields("udp", _UDP, given))
        if endpoint.scheme == "listen":
            return ListenerSettings(endpoint.host, _port(endpoint), **_fields("listen", _LISTEN, given))
        return _serial_settings(endpoint, given)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{where}: {exc.reason}") from None


def _serial_settings(endpoint: Endpoint, given: Mapping[str, ParamValue]) -> SerialSettings:
    if endpoint.host:
        raise ConfigurationError(f"serial URL takes no host ({endpoint.host!r}): write serial:///dev/ttyUSB0")
    fields = _fields("serial", _SERIAL, given)
    direction = {_RS485[key][0]: _RS485[key][1](key, value) for key, value in given.items() if key in _RS485}
    wanted = fields.pop("rs485", False)
    if direction and not wanted:
        raise ConfigurationError(f"parameter {sorted(set(given) & set(_RS485))[0]!r} needs rs485=1")
    rs485 = RS485Direction(**direction) if wanted else None
    return SerialSettings(endpoint.path, rs485=rs485, **fields)


def _port(endpoint: Endpoint) -> int:
    if endpoint.port is None:
        raise ConfigurationError(f"{endpoint.scheme} URL needs a port, e.g. {endpoint.scheme}://0.0.0.0:4059")
    return endpoint.port


def _where(endpoint: Endpoint) -> str:
    """The URL without user info or query, for error messages."""
    if endpoint.scheme == "serial":
        return f"serial://{endpoint.path}"
    host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
    return f"{endpoint.scheme}://{host}" + (f":{endpoint.port}" if endpoint.port is not None else "")


def open_medium(url: str, *, on_traffic: TrafficHook | None = None, **params: ParamValue) -> Medium:
    """The (not yet opened) medium for a ``tcp://``, ``udp://`` or ``serial://`` URL."""
    settings = medium_settings(url, **params)
    if isinstance(settings, TcpSettings):
        return TcpClient(settings, on_traffic=on_traffic)
    if isinstance(settings, UdpSettings):
        return UdpEndpoint(settings, on_traffic=on_traffic)
    if isinstance(settings, SerialSettings):
        return SerialPort(settings, on_traffic=on_traffic)
    raise ConfigurationError(f"{_where(Endpoint.parse(url))}: a listen:// URL is served by open_listener()")


def open_listener(
    url: str, handler: ConnectionHandler, *, on_event: ListenerHook | None = None, **params: ParamValue
) -> TcpListener:
    """The (not yet started) listener for a ``listen://host:port`` URL."""
    settings = medium_settings(url, **params)
    if not isinstance(settings, ListenerSettings):
        raise ConfigurationError(f"{_where(Endpoint.parse(url))}: open_listener needs a listen:// URL")
    return TcpListener(settings, handler, on_event=on_event)
