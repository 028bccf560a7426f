"""A meter URL parsed once: scheme, host, port, path and query; the one place a meter URL is read."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar
from urllib.parse import parse_qsl, urlsplit

from gxcore.errors import ConfigurationError


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
