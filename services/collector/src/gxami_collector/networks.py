"""Where the collector may connect: URL schemes, IP networks with ports, serial devices by name.

A read job names its meter by URL, and anyone who can write to ``ami.read-jobs`` can write
any URL; so before a driver sees a job its URL is checked here, and a job outside the
allow-list is refused as a ``configuration`` error without any connection being made.

* **schemes**: only ``tcp``, ``udp``, ``serial`` and ``listen`` can ever be allowed, since only
  their destination can be checked; ``file://`` and anything else is refused always.
* **networks** (``tcp``, ``udp``, ``listen``): ``CIDR[:port-range]`` rules, e.g. ``10.20.0.0/16``
  (any port), ``10.20.0.0/16:4059``, ``192.0.2.7:502``, ``[2001:db8::/32]:4000-4100``, ``::1``.
  A host name is resolved (bounded by a timeout) and *every* address it resolves to must be
  allowed; one outside is enough to refuse. An IPv4-mapped IPv6 address counts as its IPv4.
* **serial devices**: exact paths or glob patterns per path component (``/dev/ttyUSB*``); the
  path is normalised first, so ``/dev/ttyUSB0/../sda`` is ``/dev/sda``.

The check resolves names once; the driver resolves again when it connects, so a DNS server
that answers differently the second time (rebinding) is not stopped here: list meters by
address, or resolve through a DNS you trust, where that matters.
"""

from __future__ import annotations

import asyncio
import ipaddress
import posixpath
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Final
from urllib.parse import urlsplit

from prometheus_client import Counter

from gxcore.errors import ConfigurationError
from gxcore.media.endpoint import Endpoint

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int | None], Awaitable[list[str]]]
"""Host name and port to the addresses (text) it resolves to; OSError when it does not resolve."""

CHECKABLE_SCHEMES: Final = frozenset({"tcp", "udp", "serial", "listen"})
NETWORK_SCHEMES: Final = frozenset({"tcp", "udp", "listen"})
DEFAULT_SCHEMES: Final = ("tcp", "udp", "serial")
# Loopback only: what a local run and the tests use. A deployment lists its meter networks.
DEFAULT_NETWORKS: Final = ("127.0.0.0/8", "::1/128")
DEFAULT_SERIAL_DEVICES: Final = (
    "/dev/ttyUSB*",
    "/dev/ttyACM*",
    "/dev/ttyS*",
    "/dev/ttyAMA*",
    "/dev/ttymxc*",
    "/dev/serial/by-id/*",
    "/dev/serial/by-path/*",
)
DEFAULT_RESOLVE_TIMEOUT_S: Final = 2.0

REFUSED = Counter(
    "gxami_collector_jobs_refused_total",
    "Read jobs refused by the meter network allow-list, before any connection",
    ["reason"],
)


@dataclass(frozen=True, slots=True)
class NetworkRule:
    """One ``CIDR[:port-range]`` entry: a network and, optionally, an inclusive port range."""

    network: IPNetwork
    ports: tuple[int, int] | None = None

    @classmethod
    def parse(cls, text: str) -> NetworkRule:
        """``10.0.0.0/8``, ``10.0.0.0/8:4059``, ``192.0.2.7:4000-4100``, ``[2001:db8::/32]:4059``, ``::1``."""
        entry = text.strip()
        ports: str | None = None
        if entry.startswith("["):
            inside, bracket, rest = entry[1:].partition("]")
            if not bracket or (rest and not rest.startswith(":")):
                raise ValueError(f"network {text!r}: write an IPv6 network with a port as [2001:db8::/32]:4059")
            entry, ports = inside, rest[1:] if rest else None
        elif entry.count(":") == 1:  # IPv4 with a port; an IPv6 network has two colons or more
            entry, ports = entry.split(":")
        try:
            network = ipaddress.ip_network(entry, strict=True)
        except ValueError as exc:
            raise ValueError(f"network {text!r} is not an IP network in CIDR form ({exc})") from None
        return cls(network, _port_range(text, ports) if ports is not None else None)

    def allows(self, address: IPAddress, port: int | None) -> bool:
        if address.version != self.network.version or address not in self.network:
            return False
        if self.ports is None:
            return True
        return port is not None and self.ports[0] <= port <= self.ports[1]

    def __str__(self) -> str:
        if self.ports is None:
            return str(self.network)
        low, high = self.ports
        span = str(low) if low == high else f"{low}-{high}"
        return f"[{self.network}]:{span}" if self.network.version == 6 else f"{self.network}:{span}"


def _port_range(text: str, ports: str) -> tuple[int, int]:
    low_text, dash, high_text = ports.partition("-")
    try:
        low = int(low_text)
        high = int(high_text) if dash else low
    except ValueError:
        raise ValueError(f"network {text!r}: port {ports!r} is not a number or a range like 4000-4100") from None
    if not 1 <= low <= high <= 65535:
        raise ValueError(f"network {text!r}: ports must lie in 1..65535 with the low end first")
    return low, high


def parse_schemes(names: Iterable[str]) -> frozenset[str]:
    """The allowed schemes; ValueError for one whose destination cannot be checked (``file``, ``http``...)."""
    chosen = frozenset(n.strip().lower() for n in names if n.strip())
    unknown = sorted(chosen - CHECKABLE_SCHEMES)
    if unknown:
        raise ValueError(
            f"scheme {unknown[0]!r} cannot be allowed: only {', '.join(sorted(CHECKABLE_SCHEMES))} can be checked"
        )
    return chosen


def parse_serial_device(text: str) -> str:
    """An absolute device path or pattern, normalised; ValueError otherwise."""
    entry = text.strip()
    if not entry.startswith("/") or posixpath.normpath(entry) != entry:
        raise ValueError(f"serial device {text!r} is not an absolute, normalised path like /dev/ttyUSB*")
    return entry


def _serial_matches(pattern: str, device: str) -> bool:
    """Glob per path component: ``*`` never crosses a ``/``."""
    want, have = pattern.split("/"), device.split("/")
    return len(want) == len(have) and all(fnmatchcase(h, w) for w, h in zip(want, have, strict=True))


class JobRefusedError(ConfigurationError):
    """A read job whose URL the allow-list refuses; ``reason`` is the metric label."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(f"refused by the meter network allow-list: {message}")
        self.refusal = reason

    @property
    def kind(self) -> str:
        return "configuration"


@dataclass(frozen=True, slots=True)
class MeterNetworks:
    """The allow-list (see the module doc); :meth:`check` refuses a URL before anything connects."""

    schemes: frozenset[str]
    networks: tuple[NetworkRule, ...]
    serial_devices: tuple[str, ...]
    resolve_timeout: float = DEFAULT_RESOLVE_TIMEOUT_S
    resolve: Resolver | None = None  # None: the system resolver (getaddrinfo)

    @classmethod
    def of(
        cls,
        schemes: Iterable[str] = DEFAULT_SCHEMES,
        networks: Iterable[str] = DEFAULT_NETWORKS,
        serial_devices: Iterable[str] = DEFAULT_SERIAL_DEVICES,
        *,
        resolve_timeout: float = DEFAULT_RESOLVE_TIMEOUT_S,
        resolve: Resolver | None = None,
    ) -> MeterNetworks:
        """Parse the setting texts; ValueError naming the first bad entry."""
        return cls(
            parse_schemes(schemes),
            tuple(NetworkRule.parse(n) for n in networks if n.strip()),
            tuple(parse_serial_device(d) for d in serial_devices if d.strip()),
            resolve_timeout,
            resolve,
        )

    async def check(self, url: str) -> None:
        """Return if ``url`` may be connected to; else count and raise :class:`JobRefusedError`."""
        try:
            await self._check(url)
        except JobRefusedError as exc:
            REFUSED.labels(exc.refusal).inc()
            raise

    async def _check(self, url: str) -> None:
        scheme = urlsplit(url).scheme.lower()
        if scheme not in self.schemes or scheme not in CHECKABLE_SCHEMES:
            allowed = ", ".join(sorted(self.schemes)) or "none"
            raise JobRefusedError(f"URL scheme {scheme or '(none)'!r} is not allowed (allowed: {allowed})", "scheme")
        try:
            endpoint = Endpoint.parse(url)
        except JobRefusedError:
            raise
        except ConfigurationError as exc:  # its message never echoes credentials
            raise JobRefusedError(exc.reason, "url") from None
        if scheme == "serial":
            self._check_serial(endpoint)
            return
        where = _where(endpoint)
        addresses = await self._addresses(endpoint.host, endpoint.port, where)
        for address in addresses:
            if not any(rule.allows(address, endpoint.port) for rule in self.networks):
                via = "" if _literal(endpoint.host) is not None else f" ({endpoint.host} resolves to {address})"
                raise JobRefusedError(f"{where}{via} is outside the allowed meter networks", "network")

    def _check_serial(self, endpoint: Endpoint) -> None:
        if endpoint.host:
            raise JobRefusedError(f"serial URL with a host ({endpoint.host!r}) is not allowed", "serial-device")
        device = posixpath.normpath(endpoint.path)
        if not any(_serial_matches(p, device) for p in self.serial_devices):
            raise JobRefusedError(f"serial device {device!r} is not an allowed serial device", "serial-device")

    async def _addresses(self, host: str, port: int | None, where: str) -> Sequence[IPAddress]:
        literal = _literal(host or "0.0.0.0")  # listen:// without a host binds every interface
        if literal is not None:
            return [literal]
        resolve = self.resolve or _system_resolve
        try:
            async with asyncio.timeout(self.resolve_timeout):
                names = await resolve(host, port)
        except TimeoutError:
            raise JobRefusedError(
                f"{where}: {host} did not resolve within {self.resolve_timeout:g} s", "unresolved"
            ) from None
        except OSError as exc:
            raise JobRefusedError(f"{where}: {host} does not resolve ({type(exc).__name__})", "unresolved") from None
        found = [a for a in map(_literal, names) if a is not None]
        if len(found) != len(names) or not found:
            raise JobRefusedError(f"{where}: {host} resolves to something that is not an IP address", "unresolved")
        return found


async def _system_resolve(host: str, port: int | None) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _literal(text: str) -> IPAddress | None:
    """An IP address literal (IPv4-mapped IPv6 as its IPv4, a zone id dropped), or None for a name."""
    try:
        address = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _where(endpoint: Endpoint) -> str:
    host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
    return f"{endpoint.scheme}://{host}" + (f":{endpoint.port}" if endpoint.port is not None else "")
