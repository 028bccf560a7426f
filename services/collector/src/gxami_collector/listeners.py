"""Push listeners: meters without static addresses send DLMS DataNotifications to the collector.

Settings name the listeners (``GXAMI_LISTENERS=dlms-push@tcp://0.0.0.0:4059,dlms-push@udp://0.0.0.0:4059``).
A TCP listener (:class:`gxcore.media.listener.TcpListener`) serves each accepted connection
with ``DlmsDriver.serve``; a UDP listener serves each datagram (one wrapper frame) the same way.
The meter is found in the fleet directory (:mod:`gxami_collector.fleet_cache`, fed by ``ami.fleet``)
by the identity the driver reports: the system title of a ciphered push, the serial number or
logical device name of a plain one. Its keys come from the secret store by meter id.

What happens to a push:

* served: readings to ``ami.readings`` as a ReadingBatch, alarms to ``ami.events``;
* from an unknown meter (or a disabled one), or not decodable (wrong key, bad frame): counted
  (``gxami_collector_pushes_total{outcome}``) and dead-lettered with the reason and the frame;
* replayed: a ciphered push whose invocation counter is not above the last one this replica saw
  for the system title is refused and counted (``outcome="replayed"``), never published.

Replay protection and replicas. The last counter per system title is kept in memory and in a
file (``GXAMI_PUSH_COUNTERS_FILE``, written atomically at most every ``FLUSH_S`` and at stop),
so it holds across a restart (after a SIGKILL a push of the last ``FLUSH_S`` may be accepted once
more). It is a property *per replica*: a replica refuses what it has seen. A push replayed to
the *other* replica is accepted there if that replica has not seen a later counter of the meter,
but it carries exactly the readings of the original (the tag authenticates them), and ingest
stores readings on their natural key (meter, quantity, ts): the database is unchanged. So
"every value stored exactly once" holds fleet-wide from the natural key, and "a replay is
refused" holds per replica; sharing the counters between replicas (a file on one volume, or
a compacted topic) would make the second fleet-wide too, at a write per push.

Bad input never stops a listener: every read has the listener's idle timeout, a connection's
failure ends only that connection, at most ``listener_max_connections`` are served at once,
refusals queue in a bounded queue (dropped and counted beyond it). Nothing here logs a key,
a tag or a frame's bytes.

Auto-registration (``GXAMI_PUSH_AUTO_REGISTER=<default profile>``, as Gurux AMI4 does): a push
from an unknown meter is served at once under a provisional directory entry (meter id = the
name or system title it gave, the default profile, its keys, if ciphered, from the secret
store's defaults), and a :class:`~gxami_contracts.MeterRegistration` goes to the scheduler on
``ami.registrations``. The scheduler owns the registry: it inserts the row and publishes it on
``ami.fleet``, which replaces the provisional entry here and teaches every other replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final
from urllib.parse import parse_qs, urlsplit

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from prometheus_client import Counter
from pydantic import ValidationError

from gxami_collector.batches import fitting_batches, reading_batch
from gxami_collector.fleet_cache import FleetDirectory, FleetFollower
from gxami_collector.jobs import MeterReader
from gxami_collector.secret_store import SecretStore
from gxami_collector.settings import CollectorSettings
from gxami_contracts import FleetEntry, MeterEvent, MeterRegistration
from gxami_contracts.topics import EVENTS, READINGS, REGISTRATIONS
from gxami_runtime.kafka import DeadLetters, Publisher, describe_validation_error, make_producer, start_producer
from gxami_runtime.service import KafkaStartupError, StartupError
from gxcore.drivers import MeterEventRecord, MeterTarget
from gxcore.drivers.dlms.driver import DlmsDriver
from gxcore.drivers.dlms.pushes import PushRefusal, PushServed
from gxcore.errors import ConfigurationError, GxError, MediaError, MeterTimeoutError
from gxcore.media.listener import DialInConnection, ListenerEvent, ListenerSettings, TcpListener
from gxcore.media.medium import SEND_TIMEOUT, BaseMedium
from gxcore.profiles import ProfileCatalog
from gxcore.profiles.model import DeviceProfile

log = logging.getLogger("gxami.collector.listeners")

PUSHES = Counter("gxami_collector_pushes_total", "Pushes received, by listener and outcome", ["listener", "outcome"])
CONNECTIONS = Counter(
    "gxami_collector_listener_connections_total", "Listener connections by fate", ["listener", "kind"]
)
PUSH_READINGS = Counter("gxami_collector_push_readings_total", "Readings of served pushes published")
FAULTS = Counter(
    "gxami_collector_listener_faults_total",
    "Listener connections that ended in a fault, by reason (framing: garbage; timeout: a frame trickled; ...)",
    ["listener", "reason"],
)
AUTO_REGISTERED = Counter(
    "gxami_collector_push_auto_registered_total", "Unknown pushing meters registered (GXAMI_PUSH_AUTO_REGISTER)"
)
FLUSH_S: Final = 0.5
AUTO_REGISTER_MAX: Final = 100_000  # meters one process registers at most: a flood of made-up names stops here
_METER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
_TITLE = re.compile(r"^[0-9a-f]{16}$")
REFUSAL_QUEUE: Final = 1024
CAUGHT_UP_WAIT_S: Final = 30.0
MAX_UDP_IN_FLIGHT: Final = 256
KINDS: Final = frozenset(
    {"dlms-push", "dlms-dial-in", "iec62056-21-dial-in", "mbus-dial-in"}
)  # see gxami_collector.dialin


@dataclass(frozen=True, slots=True)
class ListenerSpec:
    """One ``kind@scheme://host:port[?profile=NAME]`` of GXAMI_LISTENERS.

    ``profile`` names the device profile whose push objects say how plain pushes on this
    listener name their meter (a HAN port's list of bare values, see ``han-kaifa``).
    """

    kind: str
    scheme: str
    host: str
    port: int
    profile: str | None = None

    @classmethod
    def parse(cls, text: str) -> ListenerSpec:
        kind, sep, url = text.strip().partition("@")
        if not sep or kind not in KINDS:
            raise ConfigurationError(
                f"listener {text!r}: write kind@tcp://host:port (kinds: {', '.join(sorted(KINDS))})"
            )
        parts = urlsplit(url)
        if parts.scheme not in {"tcp", "udp"} or parts.port is None or parts.path not in {"", "/"}:
            raise ConfigurationError(f"listener {text!r}: the address must be tcp://host:port or udp://host:port")
        query = parse_qs(parts.query, keep_blank_values=True)
        if set(query) - {"profile"} or any(len(v) != 1 or not v[0] for v in query.values()):
            raise ConfigurationError(f"listener {text!r}: the only query is ?profile=<device profile>")
        profile = query["profile"][0] if "profile" in query else None
        return cls(kind, parts.scheme, parts.hostname or "", parts.port, profile)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.kind}@{self.scheme}://{host}:{self.port}"


class PushCounters:
    """The last invocation counter seen per system title, persisted in a JSON file (see the module doc)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._last: dict[str, int] = {}
        self._dirty = False
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raw = {}
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"push counters file {path}: cannot read it ({type(exc).__name__})") from None
        if not isinstance(raw, dict) or not all(isinstance(v, int) for v in raw.values()):
            raise ConfigurationError(f"push counters file {path}: expected a map of system title to counter")
        self._last = {str(k): int(v) for k, v in raw.items()}

    def last(self, system_title: str) -> int | None:
        return self._last.get(system_title)

    def accept(self, system_title: str, counter: int) -> bool:
        """True (and remembered) when ``counter`` is above the last one seen for the title."""
        last = self._last.get(system_title)
        if last is not None and counter <= last:
            return False
        self._last[system_title] = counter
        self._dirty = True
        return True

    def undo(self, system_title: str, counter: int, previous: int | None) -> None:
        """Take back an accepted ``counter`` (its push was not published), unless a later one came since."""
        if self._last.get(system_title) != counter:
            return
        if previous is None:
            del self._last[system_title]
        else:
            self._last[system_title] = previous
        self._dirty = True

    def flush(self) -> None:
        """Write the map if it changed: temporary file, fsync, rename (a crash leaves the old or the new)."""
        if not self._dirty:
            return
        self._dirty = False
        data = json.dumps(self._last, sort_keys=True).encode()
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self.path.name, dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            Path(tmp).replace(self.path)
        except OSError:
            self._dirty = True
            with contextlib.suppress(OSError):
                Path(tmp).unlink()
            raise


class DatagramConnection(BaseMedium):
    """One received datagram seen as a connection: it yields the datagram once, then has ended."""

    def __init__(self, data: bytes, peer: str, via: str) -> None:
        super().__init__()
        self._data: bytes | None = data
        self.peer = peer
        self._via = via

    def describe(self) -> str:
        return f"udp {self.peer} (push on {self._via})"

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        self._data = None

    async def send(self, data: bytes, *, timeout: float = SEND_TIMEOUT) -> None:
        raise MediaError(f"{self.describe()}: a received datagram cannot be answered")

    async def receive(self, max_bytes: int, *, timeout: float) -> bytes:
        data, self._data = self._data, None
        if data is None:
            raise MediaError(f"{self.describe()}: datagram served")
        return data[:max_bytes]

    async def receive_exactly(self, n: int, *, timeout: float) -> bytes:
        data = await self.receive(n, timeout=timeout)
        if len(data) < n:
            raise MeterTimeoutError(f"{self.describe()}: {len(data)} of {n} bytes in the datagram")
        return data

    async def drain_input(self, quiet: float, *, within: float | None = None) -> int:
        data, self._data = self._data, None
        return len(data or b"")


class _DatagramInbox(asyncio.DatagramProtocol):
    """Hands each datagram to ``deliver``; the listener bounds how many are served at once."""

    def __init__(self, deliver: Callable[[bytes, tuple[object, ...]], None]) -> None:
        self._deliver = deliver

    def datagram_received(self, data: bytes, addr: tuple[object, ...]) -> None:
        if data:
            self._deliver(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("udp listener socket error: %s", type(exc).__name__)


class UdpPushListener:
    """Serves every datagram to a bound UDP port with ``handler``; a flood is dropped and counted."""

    def __init__(
        self, spec: ListenerSpec, handler: Callable[[DatagramConnection], Awaitable[None]], *, timeout: float
    ) -> None:
        self.spec = spec
        self._handler = handler
        self._timeout = timeout
        self._transport: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._transport, _ = await loop.create_datagram_endpoint(
                lambda: _DatagramInbox(self._deliver), local_addr=(self.spec.host or "0.0.0.0", self.spec.port)
            )
        except OSError as exc:
            raise MediaError(f"{self.spec}: cannot listen: {exc.strerror or exc}") from exc

    @property
    def port(self) -> int:
        """The bound port once started (useful with port 0), else the configured one."""
        if self._transport is not None:
            return int(self._transport.get_extra_info("sockname")[1])
        return self.spec.port

    def _deliver(self, data: bytes, addr: tuple[object, ...]) -> None:
        name = str(self.spec)
        if len(self._tasks) >= MAX_UDP_IN_FLIGHT:
            CONNECTIONS.labels(name, "rejected").inc()
            return
        peer = f"{addr[0]}:{addr[1]}" if len(addr) >= 2 else str(addr)
        task = asyncio.get_running_loop().create_task(self._serve(DatagramConnection(data, peer, name)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, connection: DatagramConnection) -> None:
        name = str(self.spec)
        try:
            async with asyncio.timeout(self._timeout):
                await self._handler(connection)
            CONNECTIONS.labels(name, "done").inc()
        except Exception as exc:  # noqa: BLE001 - one datagram's fault is that datagram's
            CONNECTIONS.labels(name, "failed").inc()
            FAULTS.labels(name, _fault_reason(exc)).inc()
            log.warning("push datagram failed", extra={"listener": name, "error": type(exc).__name__})

    async def close(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def push_event(meter_id: str, record: MeterEventRecord) -> MeterEvent:
    """The ami.events message of an alarm a push carried (stable id: the same push gives the same event)."""
    data: dict[str, str | int | float | bool | None] = {**record.extra, "source": record.source, "protocol": "dlms"}
    if record.code is not None:
        data["code"] = record.code
    return MeterEvent(
        event_id=record.event_id,
        meter_id=meter_id,
        ts=record.timestamp,
        kind=record.kind,
        severity=record.severity,
        data=data,
    )


class PushListeners:
    """Every configured listener, the fleet directory they match on, and where served pushes go."""

    def __init__(
        self,
        settings: CollectorSettings,
        profiles: ProfileCatalog,
        secrets: SecretStore,
        directory: FleetDirectory,
        publisher: Publisher,
        dead: DeadLetters,
        counters: PushCounters,
    ) -> None:
        self.settings = settings
        self.specs = [ListenerSpec.parse(t) for t in settings.listeners]
        self._profiles = profiles
        self._secrets = secrets
        self.directory = directory
        self._publisher = publisher
        self._dead = dead
        self.counters = counters
        self._driver = DlmsDriver()
        self._profile_cache: dict[str, DeviceProfile] = {}
        self._refusals: asyncio.Queue[tuple[str, PushRefusal]] = asyncio.Queue(REFUSAL_QUEUE)
        self._tcp: list[TcpListener] = []
        self._udp: list[UdpPushListener] = []
        self._auto_profile = settings.push_auto_register
        if self._auto_profile is not None:
            self._driver.validate_profile(profiles.get(self._auto_profile))  # a wrong name stops the start
        self._registrations: asyncio.Queue[MeterRegistration] = asyncio.Queue(REFUSAL_QUEUE)
        self._auto_registered: set[str] = set()
        # The listener's own profile (HAN lists): checked now, so a wrong name stops the start.
        self._layouts: dict[str, DeviceProfile] = {}
        for spec in self.specs:
            if spec.profile is not None:
                layout = profiles.get(spec.profile)
                self._driver.validate_profile(layout)
                self._layouts[str(spec)] = layout

    # -- identity -> meter ------------------------------------------------------------

    def lookup(self, identity: str) -> tuple[MeterTarget, DeviceProfile] | None:
        """The meter an identity names, with its secrets and profile; None if unknown or disabled."""
        entry = self.directory.find(identity)
        if entry is None and self._auto_profile is not None and self.directory.caught_up.is_set():
            entry = self._auto_register(identity)
        if entry is None or not entry.enabled:
            return None
        profile = self._profile_cache.get(entry.profile)
        if profile is None:
            try:
                profile = self._profiles.get(entry.profile)
            except ConfigurationError:
                log.warning("pushing meter's profile is unknown", extra={"meter_id": entry.meter_id})
                return None
            self._profile_cache[entry.profile] = profile
        target = MeterTarget(
            entry.meter_id, entry.url, options=dict(entry.options), secrets=self._secrets.for_meter(entry.meter_id)
        )
        return target, profile

    def _auto_register(self, identity: str) -> FleetEntry | None:
        """A provisional entry for an unknown meter (served at once) and a registration request.

        The meter id is the name it gave (its serial or logical device name) or its system title
        (hex). The scheduler inserts the row and publishes it on ami.fleet; that entry then
        replaces this one. Only names that can be meter ids, and at most AUTO_REGISTER_MAX.
        """
        if self._auto_profile is None or not _METER_ID.match(identity):
            return None
        if self.directory.get(identity) is not None or self.directory.claimed(identity):
            return None  # known, or claimed by two meters: never a third
        if identity not in self._auto_registered and len(self._auto_registered) >= AUTO_REGISTER_MAX:
            return None
        title = identity if _TITLE.match(identity) else None
        # A ciphered push (found by its title) is deciphered with the secret store's default keys.
        options = {"authentication": "high-gmac", "security_policy": "authenticated-encrypted"} if title else {}
        spec = self.specs[0]
        now = datetime.now(UTC)
        entry = FleetEntry(
            meter_id=identity,
            protocol="dlms",
            url=f"{spec.scheme}://{spec.host or '0.0.0.0'}:{spec.port}",
            link_id=f"push:{identity}",
            profile=self._auto_profile,
            connection="push",
            interval_s=900,
            options=options,
            system_title=title,
            serial=None if title else identity,
            updated_at=now,
        )
        registration = MeterRegistration(
            meter_id=entry.meter_id,
            protocol=entry.protocol,
            url=entry.url,
            profile=entry.profile,
            options=dict(entry.options),
            system_title=entry.system_title,
            serial=entry.serial,
            heard_at=now,
        )
        try:
            self._registrations.put_nowait(registration)
        except asyncio.QueueFull:
            return None  # the broker is behind: the meter is heard again at its next push
        self.directory.put(entry)
        self._auto_registered.add(identity)
        AUTO_REGISTERED.inc()
        log.info("unknown pushing meter registered", extra={"meter_id": identity, "profile": self._auto_profile})
        return entry

    async def _send_registrations(self, stop: asyncio.Event) -> None:
        """Hand each registration to the scheduler (ami.registrations); kept and retried while the broker is away."""
        pending: MeterRegistration | None = None
        while not stop.is_set():
            if pending is None:
                try:
                    pending = await asyncio.wait_for(self._registrations.get(), timeout=0.5)
                except TimeoutError:
                    continue
            try:
                await self._publisher.send(REGISTRATIONS.name, pending.meter_id, pending)
                pending = None
            except KafkaError as exc:
                log.warning("could not ask for a registration; retrying", extra={"error": type(exc).__name__})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=1.0)

    # -- serving ---------------------------------------------------------------------

    async def serve(self, connection: DialInConnection | DatagramConnection, listener: str) -> None:
        """Serve one connection (or datagram): publish each push it carries, refuse replays."""
        if not self.directory.caught_up.is_set():
            # Before the directory has the fleet every meter would look unknown.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.directory.caught_up.wait(), timeout=CAUGHT_UP_WAIT_S)

        def refused(refusal: PushRefusal) -> None:
            PUSHES.labels(listener, refusal.kind).inc()
            try:
                self._refusals.put_nowait((listener, refusal))
            except asyncio.QueueFull:
                PUSHES.labels(listener, "refusal-dropped").inc()

        idle = self.settings.push_idle_timeout_s
        # The TCP listener's watchdog closes a silent connection (counted ``idle``); the driver's
        # own idle wait is longer so that it never races it. A frame begun has ``idle`` to finish.
        stream = self._driver.serve(
            connection,
            self.lookup,
            idle_timeout=2 * idle if isinstance(connection, DialInConnection) else idle,
            on_refused=refused,
            layout=self._layouts.get(listener),
            frame_timeout=idle,
        )
        async for served in stream:
            await self._publish(served, listener)

    async def _publish(self, served: PushServed, listener: str) -> None:
        title, counter = served.system_title, served.invocation_counter
        previous = self.counters.last(title) if title is not None else None
        if title is not None and counter is not None and not self.counters.accept(title, counter):
            PUSHES.labels(listener, "replayed").inc()
            log.warning(
                "replayed push refused",
                extra={
                    "meter_id": served.meter_id,
                    "listener": listener,
                    "invocation_counter": served.invocation_counter,
                    "last_seen": self.counters.last(title),
                },
            )
            return
        try:
            await self._send(served)
        except BaseException:
            # Not published (broker away, cancelled): the meter may send this push again, and
            # that must not count as a replay.
            if title is not None and counter is not None:
                self.counters.undo(title, counter, previous)
            raise
        PUSHES.labels(listener, "served").inc()

    async def _send(self, served: PushServed) -> None:
        now = datetime.now(UTC)
        result = served.result
        digest = hashlib.blake2b(
            f"{served.meter_id}:{served.system_title}:{served.invocation_counter}:{result.meter_time}".encode(),
            digest_size=16,
        ).hexdigest()
        batch, rejected = reading_batch(
            result.readings, batch_id=f"push-{digest}", meter_id=served.meter_id, job_id=None, collected_at=now
        )
        for r, reason in rejected:
            log.warning(
                "pushed reading outside the contract; not published",
                extra={"meter_id": served.meter_id, "quantity": r.quantity, "error": reason},
            )
        if batch is not None:
            parts = fitting_batches(batch)
            await self._publisher.send_many(READINGS.name, [(p.meter_id, p) for p in parts])
            PUSH_READINGS.inc(batch.count)
        events: list[MeterEvent] = []
        for record in result.events:
            try:
                events.append(push_event(served.meter_id, record))
            except ValidationError as exc:
                log.warning(
                    "pushed alarm outside the contract; not published",
                    extra={"meter_id": served.meter_id, "error": describe_validation_error(exc)},
                )
        if events:
            await self._publisher.send_many(EVENTS.name, [(e.meter_id, e) for e in events])

    async def _dead_letter_refusals(self, stop: asyncio.Event) -> None:
        """Dead-letter each refused push, with its reason; the record names the listener as its source."""
        while not stop.is_set():
            try:
                listener, refusal = await asyncio.wait_for(self._refusals.get(), timeout=0.5)
            except TimeoutError:
                continue
            record: ConsumerRecord[bytes, bytes] = ConsumerRecord(
                topic=f"listener:{listener}"[:300],
                partition=-1,
                offset=-1,
                timestamp=int(datetime.now(UTC).timestamp() * 1000),
                timestamp_type=0,
                key=(refusal.identity or "").encode(),
                value=refusal.frame,
                checksum=None,
                serialized_key_size=len(refusal.identity or ""),
                serialized_value_size=len(refusal.frame),
                headers=(),
            )
            reason = f"push {refusal.kind} from {refusal.where}: {refusal.reason}"
            try:
                await self._dead.send(record, reason)
            except KafkaError as exc:
                PUSHES.labels(listener, "dead-letter-failed").inc()
                log.warning("could not dead-letter a refused push", extra={"error": type(exc).__name__})

    async def _flush_counters(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=FLUSH_S)
            try:
                await asyncio.to_thread(self.counters.flush)
            except OSError as exc:
                log.warning("cannot write the push counters", extra={"error": exc.strerror})

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        for spec in self.specs:
            name = str(spec)
            if spec.kind != "dlms-push":
                continue  # a dial-in listener (gxami_collector.dialin)
            if spec.scheme == "tcp":

                async def handler(conn: DialInConnection, name: str = name) -> None:
                    await self.serve(conn, name)

                def on_event(event: ListenerEvent, name: str = name) -> None:
                    CONNECTIONS.labels(name, event.kind).inc()
                    if event.kind == "failed" and event.error is not None:
                        FAULTS.labels(name, _fault_reason(event.error)).inc()
                        log.info(
                            "push connection failed",
                            extra={"listener": name, "peer": event.peer, "error": _error_name(event.error)},
                        )

                tcp = TcpListener(
                    ListenerSettings(
                        spec.host,
                        spec.port,
                        max_connections=s.listener_max_connections,
                        idle_timeout=s.push_idle_timeout_s,
                    ),
                    handler,
                    on_event=on_event,
                )
                await tcp.start()
                self._tcp.append(tcp)
                log.info("push listener started", extra={"listener": name, "port": tcp.port})
            else:

                async def dgram(conn: DatagramConnection, name: str = name) -> None:
                    await self.serve(conn, name)

                udp = UdpPushListener(spec, dgram, timeout=s.push_idle_timeout_s)
                await udp.start()
                self._udp.append(udp)
                log.info("push listener started", extra={"listener": name, "port": spec.port})

    async def close(self) -> None:
        for tcp in self._tcp:
            await tcp.close()
        for udp in self._udp:
            await udp.close()
        self._tcp, self._udp = [], []
        try:
            await asyncio.to_thread(self.counters.flush)
        except OSError as exc:
            log.warning("cannot write the push counters", extra={"error": exc.strerror})

    async def run(self, stop: asyncio.Event) -> None:
        """Listen until ``stop``: follow ami.fleet, serve pushes, dead-letter refusals, keep the counters."""
        follower = FleetFollower(self.settings, self.directory)
        tasks = [
            asyncio.create_task(follower.run(stop), name="fleet"),
            asyncio.create_task(self._dead_letter_refusals(stop), name="push-refusals"),
            asyncio.create_task(self._flush_counters(stop), name="push-counters"),
            asyncio.create_task(self._send_registrations(stop), name="push-registrations"),
        ]
        try:
            await self.start()
            await stop.wait()
        finally:
            await self.close()
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)


def _fault_reason(exc: BaseException) -> str:
    """A connection fault's reason for the metric: the gxcore error kind (framing, timeout, ...), else ``internal``."""
    return exc.kind if isinstance(exc, GxError) else "internal"


def _error_name(exc: BaseException) -> str:
    """The error's type and, for a gxcore error, its reason (which never holds a key)."""
    return f"{exc.kind}: {exc.reason}" if isinstance(exc, GxError) else type(exc).__name__


async def serve_with_listeners(
    settings: CollectorSettings,
    jobs: Callable[[asyncio.Event], Coroutine[object, object, None]],
    profiles: ProfileCatalog,
    secrets: SecretStore,
    stop: asyncio.Event,
    dial_in: MeterReader | None = None,
    spooled: Publisher | None = None,
) -> None:
    """Run the job loop and the push (and dial-in) listeners side by side; one failing stops all.

    A listener setting that does not hold (a spec, a profile it names, the counters file) or a
    broker that cannot be reached stops the start with one line (StartupError: exit 2).
    """
    # An edge's pushes and dial-in outcomes go through its spool, so it needs no broker to start:
    # its producer (dial-in claims only) comes up when the broker does.
    producer: AIOKafkaProducer | None = None
    if spooled is None:
        producer = make_producer(settings)
        publisher: Publisher = Publisher(producer, settings)
    else:
        publisher = spooled
    started: list[AIOKafkaProducer] = []
    try:
        counters = PushCounters(settings.push_counters_file)
        directory = FleetDirectory()
        listeners = PushListeners(
            settings, profiles, secrets, directory, publisher, DeadLetters(publisher, "collector"), counters
        )
    except ConfigurationError as exc:
        if producer is not None:
            await producer.stop()  # never started: this only releases it
        raise StartupError(f"push listeners: {exc.reason}") from None
    if producer is not None:
        await start_producer(producer, settings)
        started.append(producer)

    async def serve_dial_in(reader: MeterReader) -> None:
        from gxami_collector.dialin import DialInService

        claims = producer or await _producer_when_reachable(settings, stop)
        if claims is None:  # stopped before the broker came
            return
        if claims is not producer:
            started.append(claims)
        await DialInService(settings, profiles, reader, directory, publisher, claims).run(stop)

    try:
        tasks = [
            asyncio.create_task(jobs(stop), name="jobs"),
            asyncio.create_task(listeners.run(stop), name="listeners"),
        ]
        if dial_in is not None:  # meters that call us (gxami_collector.dialin), on the same fleet directory
            tasks.append(asyncio.create_task(serve_dial_in(dial_in), name="dial-in"))
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:
            failure = task.exception()
            if failure is not None:
                raise failure
    finally:
        for p in started:
            await p.stop()


_BROKER_AWAY: Final = frozenset({"connection refused", "connection failed", "timed out"})  # as app._broker_away
_CONNECT_RETRY_CAP_S: Final = 30.0


async def _producer_when_reachable(settings: CollectorSettings, stop: asyncio.Event) -> AIOKafkaProducer | None:
    """A started producer once the broker answers (None if ``stop`` comes first).

    An absent broker is waited for with backoff; one that refuses us (TLS, SASL) is still the
    one-line StartupError.
    """
    delay = 1.0
    while True:
        producer = make_producer(settings)  # a fresh one each time: a producer that failed to start is spent
        try:
            await start_producer(producer, settings)
            return producer
        except KafkaStartupError as exc:
            if exc.cause not in _BROKER_AWAY:
                raise
            log.warning(
                "broker unreachable at start; push listeners serve into the spool, dial-in waits",
                extra={"error": str(exc), "retry_s": delay},
            )
        try:
            await asyncio.wait_for(stop.wait(), delay)
            return None
        except TimeoutError:
            delay = min(delay * 2, _CONNECT_RETRY_CAP_S)
