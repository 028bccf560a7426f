"""The media layer: the only part of gxcore that does I/O.

Protocol adapters talk to a :class:`Medium` and never know whether it is TCP, UDP,
a serial port or a connection a meter dialled in on. Build one from a URL with
:func:`open_medium` (or :func:`open_listener` for ``listen://``), or from typed
settings directly; :func:`memory_pair` gives two connected in-memory ends for tests.
"""

from gxcore.media.listener import (
    ConnectionHandler,
    DialInConnection,
    ListenerEvent,
    ListenerHook,
    ListenerSettings,
    TcpListener,
)
from gxcore.media.medium import DEFAULT_BUFFER_LIMIT, SEND_TIMEOUT, Direction, Medium, Parity, TrafficHook
from gxcore.media.memory import LineChange, MemoryMedium, memory_pair
from gxcore.media.serialport import RS485Direction, SerialPort, SerialSettings, modbus_rtu_silence
from gxcore.media.tcp import TcpClient, TcpSettings
from gxcore.media.udp import UdpEndpoint, UdpSettings
from gxcore.media.url import KNOWN_PARAMETERS, MediumSettings, medium_settings, open_listener, open_medium

__all__ = [
    "DEFAULT_BUFFER_LIMIT",
    "KNOWN_PARAMETERS",
    "SEND_TIMEOUT",
    "ConnectionHandler",
    "DialInConnection",
    "Direction",
    "LineChange",
    "ListenerEvent",
    "ListenerHook",
    "ListenerSettings",
    "Medium",
    "MediumSettings",
    "MemoryMedium",
    "Parity",
    "RS485Direction",
    "SerialPort",
    "SerialSettings",
    "TcpClient",
    "TcpListener",
    "TcpSettings",
    "TrafficHook",
    "UdpEndpoint",
    "UdpSettings",
    "medium_settings",
    "memory_pair",
    "modbus_rtu_silence",
    "open_listener",
    "open_medium",
]
