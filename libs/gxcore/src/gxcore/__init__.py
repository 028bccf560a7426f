"""gxcore: meter protocols for gxami (media, link, protocol and device-profile layers)."""

from gxcore.errors import (
    AccessDeniedError,
    ChecksumError,
    ConfigurationError,
    DecryptionError,
    FramingError,
    GxError,
    KeyMissingError,
    MediaError,
    MeterTimeoutError,
    ProtocolError,
)
from gxcore.readings import Reading

__all__ = [
    "AccessDeniedError",
    "ChecksumError",
    "ConfigurationError",
    "DecryptionError",
    "FramingError",
    "GxError",
    "KeyMissingError",
    "MediaError",
    "MeterTimeoutError",
    "ProtocolError",
    "Reading",
]
