"""Continuous wM-Bus receivers: one long-lived connection per receiver, every telegram in range published.

Settings name the receivers (``GXAMI_WMBUS_RECEIVERS``, comma-separated)::

    tcp://10.1.2.3:2000?framing=hex                       a gateway or a ser2net bridge
    serial:///dev/ttyUSB0?framing=im871a&baud=57600       a dongle on this machine
    serial:///dev/ttyUSB1?framing=amber&rssi=false        an Amber module that appends no RSSI

``framing`` is one of gxcore's receiver framings (hex, length, lfield, im871a, amber; default
hex); the serial line parameters are the media layer's. Each receiver is listened to by
:func:`gxcore.drivers.wmbus_receiver.receive_telegrams`, with a read timeout (a receiver quiet for
``GXAMI_WMBUS_IDLE_TIMEOUT_S`` is reconnected) and reconnect with exponential backoff up to
``GXAMI_WMBUS_RECONNECT_MAX_S``. Liveness per receiver: ``gxami_collector_wmbus_receiver_connected``
(0/1) and ``gxami_collector_wmbus_receiver_last_telegram_seconds`` (Unix time of the last telegram).

What happens to a telegram (:class:`TelegramIntake`, counted in
``gxami_collector_wmbus_telegrams_total{receiver,outcome}``):

* matched to its meter in the fleet directory (``ami.fleet``, :mod:`gxami_collector.fleet_cache`)
  by its address. The key is the fleet entry's ``wmbus_id``, written in one of three forms, most
  specific first: manufacturer, ID, version and device type (``GXW123456780107``: 3 letters, 8 ID
  digits, 2 + 2 hex digits), manufacturer and ID (``GXW12345678``), or the ID alone
  (``12345678``, the number printed on the meter). IDs are unique per manufacturer only, so the
  longer forms are for fleets where two makers' IDs collide. The link-layer address is tried
  first, then the address of a long transport header (CI 0x72: a meter behind a radio converter);
* served only for an enabled ``protocol: wmbus`` meter with ``connection: push`` (the scheduler
  emits no read jobs for push meters, so each telegram is read exactly here); others are counted
  ``not-served``;
* decrypted with the meter's ``key`` from the collector's secret store (security modes 5 and 7,
  ELL) by :func:`gxcore.protocols.wmbus.decode_wmbus_telegram`; a wrong or missing key is
  ``undecryptable``, a damaged telegram ``damaged``: counted and logged (meter id and the
  decoder's reason, never a key or the telegram's bytes), and the receiver listens on;
* mapped by the meter's profile with :func:`gxcore.drivers.wmbus.telegram_result`, the very
  mapping the per-meter wM-Bus driver uses, and published as a ReadingBatch to ``ami.readings``
  (through the collector's spool when it has one);
* from an ID the fleet does not know: tallied per receiver and ID (``unknown-meter``) in a heard
  list written to ``GXAMI_WMBUS_HEARD_FILE`` for ``gxami wmbus heard --from-file``.

Duplicates (a meter repeating a telegram, two receivers hearing it, a repeater) are stored once.
The reading ``ts`` is the meter's own clock record when the telegram carries one and it is
plausible (not more than ``CLOCK_AHEAD`` ahead of the collector nor ``CLOCK_BEHIND`` behind), so
the same telegram gives the same rows wherever it is heard and ingest's natural key
(meter, quantity, ts) keeps one. A telegram without a (plausible) clock is stamped with the time
this collector first heard it, and the same telegram heard again within ``DEDUPE_S`` (compared
without its data-link CRCs) is dropped here (``duplicate``); heard by two *collectors* it would be
stored twice, a few seconds apart: give each receiver to one collector.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal
from urllib.parse import parse_qsl, urlsplit

from aiokafka.errors import KafkaConnectionError, KafkaError
from prometheus_client import Counter as MetricCounter
from prometheus_client import Gauge

from gxami_collector.batches import fitting_batches, reading_batch
from gxami_collector.fleet_cache import FleetDirectory, FleetFollower
from gxami_collector.secret_store import SecretStore
from gxami_collector.spool import Outgoing, Spool
from gxami_contracts import FleetEntry, ReadingBatch
from gxami_contracts.topics import READINGS
from gxami_runtime.kafka import Publisher, make_producer
from gxami_runtime.service import kafka_startup_error
from gxcore.drivers.common import aes_key
from gxcore.drivers.wmbus import telegram_result, validate_wmbus_profile
from gxcore.drivers.wmbus_receiver import open_receiver, receive_telegrams
from gxcore.errors import ConfigurationError, DecryptionError, GxError, KeyMissingError, MediaError, MeterTimeoutError
from gxcore.media import KNOWN_PARAMETERS, Medium
from gxcore.profiles import ProfileCatalog
from gxcore.protocols.mbus.frame import manufacturer_code
from gxcore.protocols.mbus.points import RecordPoint, record_points
from gxcore.protocols.mbus.telegram import bcd_id
from gxcore.protocols.wmbus import decode_wmbus_telegram
from gxcore.protocols.wmbus.frame import DLL_SIZE, strip_crcs
from gxcore.protocols.wmbus.heard import HeardMeters, HeardTelegram
from gxcore.protocols.wmbus.receivers import FRAMINGS, ReceiverFraming, Skipped

if TYPE_CHECKING:
    from gxami_collector.settings import CollectorSettings

log = logging.getLogger("gxami.collector.wmbus")

TELEGRAMS = MetricCounter(
    "gxami_collector_wmbus_telegrams_total", "wM-Bus telegrams heard, by receiver and outcome", ["receiver", "outcome"]
)
SKIPPED = MetricCounter(
    "gxami_collector_wmbus_skipped_total", "Receiver feed bytes that gave no telegram, by kind", ["receiver", "kind"]
)
CONNECTS = MetricCounter(
    "gxami_collector_wmbus_receiver_connects_total", "Connections to a receiver, by outcome", ["receiver", "outcome"]
)
CONNECTED = Gauge("gxami_collector_wmbus_receiver_connected", "1 while the receiver is connected", ["receiver"])
LAST_TELEGRAM = Gauge(
    "gxami_collector_wmbus_receiver_last_telegram_seconds", "Unix time of the receiver's last telegram", ["receiver"]
)
UNKNOWN_METERS = Gauge("gxami_collector_wmbus_unknown_meters", "IDs heard that the fleet does not know", ["receiver"])
WMBUS_READINGS = MetricCounter("gxami_collector_wmbus_readings_total", "Readings of received telegrams published")
CLOCK_OFF = MetricCounter(
    "gxami_collector_wmbus_clock_off_total", "Telegrams whose meter clock was implausible (stamped when heard)"
)

Outcome = Literal[
    "published", "duplicate", "unknown-meter", "not-served", "undecryptable", "damaged", "no-readings", "refused"
]
DEDUPE_S: Final = 120.0
DEDUPE_MAX: Final = 100_000
CLOCK_AHEAD: Final = timedelta(hours=1)
CLOCK_BEHIND: Final = timedelta(days=31)
CAUGHT_UP_WAIT_S: Final = 30.0
RECONNECT_FIRST_S: Final = 0.5
HEARD_FLUSH_S: Final = 2.0
HEARD_LIMIT: Final = 10_000  # unknown IDs kept per receiver (a bounded table; more are counted, not kept)
_RECEIVER_PARAMETERS: Final = frozenset({"framing", "rssi"})


@dataclass(frozen=True, slots=True)
class ReceiverSpec:
    """One receiver of GXAMI_WMBUS_RECEIVERS: its URL, framing and whether an Amber module appends RSSI."""

    url: str
    framing: ReceiverFraming
    rssi: bool = True

    @classmethod
    def parse(cls, text: str) -> ReceiverSpec:
        """``tcp://host:port?framing=...`` or ``serial:///dev/...?framing=...``; else ConfigurationError."""
        url = text.strip()
        parts = urlsplit(url)
        if parts.username is not None or parts.password is not None:
            raise ConfigurationError("wM-Bus receiver URL: credentials do not belong in it")
        if parts.scheme not in ("tcp", "serial"):
            raise ConfigurationError(
                f"wM-Bus receiver {url!r}: write tcp://host:port?framing=hex or serial:///dev/ttyUSB0?framing=im871a"
            )
        try:
            port = parts.port
        except ValueError:
            raise ConfigurationError(f"wM-Bus receiver {url!r}: the port is not a number in 0..65535") from None
        if parts.scheme == "tcp" and (not parts.hostname or not port or parts.path not in ("", "/")):
            raise ConfigurationError(f"wM-Bus receiver {url!r}: a TCP receiver needs host and port")
        if parts.scheme == "serial" and (parts.netloc or not parts.path):
            raise ConfigurationError(f"wM-Bus receiver {url!r}: a serial receiver needs a device path")
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        unknown = set(query) - _RECEIVER_PARAMETERS - KNOWN_PARAMETERS[parts.scheme]
        if unknown:
            raise ConfigurationError(f"wM-Bus receiver {url!r}: unknown parameters {sorted(unknown)}")
        framing = query.get("framing", "hex")
        if framing not in FRAMINGS:
            raise ConfigurationError(f"wM-Bus receiver {url!r}: framing must be one of {', '.join(FRAMINGS)}")
        rssi = query.get("rssi", "true").lower()
        if rssi not in ("true", "false"):
            raise ConfigurationError(f"wM-Bus receiver {url!r}: rssi must be true or false")
        return cls(url, framing, rssi == "true")  # type: ignore[arg-type]  # checked against FRAMINGS above

    @property
    def name(self) -> str:
        """The receiver in logs and metric labels: the URL without its query."""
        return self.url.split("?", 1)[0]


def address_keys(telegram: bytes) -> list[str]:
    """The fleet ``wmbus_id`` forms a CRC-free telegram can be found by, most specific first (module doc)."""
    keys: list[str] = []

    def add(man_raw: bytes, ident: bytes, version: int, device_type: int) -> None:
        man = manufacturer_code(int.from_bytes(man_raw, "little"))
        meter = bcd_id(ident)
        keys.extend((f"{man}{meter}{version:02X}{device_type:02X}", f"{man}{meter}", meter))

    add(telegram[2:4], telegram[4:8], telegram[8], telegram[9])
    if len(telegram) >= DLL_SIZE + 9 and telegram[DLL_SIZE] == 0x72:  # long TPL: ID (4) M (2) V T
        tpl = telegram[DLL_SIZE + 1 : DLL_SIZE + 9]
        add(tpl[4:6], tpl[0:4], tpl[6], tpl[7])
    return list(dict.fromkeys(keys))


@dataclass(frozen=True, slots=True)
class Taken:
    """What became of one heard telegram: the outcome, the meter, the batch to publish, the dedupe digest."""

    outcome: Outcome
    meter_id: str | None = None
    batch: ReadingBatch | None = None
    digest: str = ""
    reason: str = ""


@dataclass(slots=True)
class ReceiverState:
    """One receiver's tally for the heard file: telegrams, skips, and the IDs the fleet does not know."""

    spec: ReceiverSpec
    connected: bool = False
    telegrams: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    unknown: HeardMeters = field(default_factory=lambda: HeardMeters(HEARD_LIMIT))
    last_heard: dict[str, datetime] = field(default_factory=dict)

    def to_json_dict(self) -> dict[str, object]:
        meters = []
        for meter in self.unknown.meters.values():
            entry = meter.to_json_dict()
            heard = self.last_heard.get(meter.id)
            entry["last_heard_at"] = heard.isoformat() if heard else None
            meters.append(entry)
        return {
            "receiver": self.spec.name,
            "framing": self.spec.framing,
            "connected": self.connected,
            "telegrams": self.telegrams,
            "skipped": dict(sorted(self.skipped.items())),
            "unknown_dropped": self.unknown.dropped,
            "unknown": meters,
        }


class TelegramIntake:
    """Heard telegram -> meter, key, profile mapping and batch (module doc); no I/O, ``now`` passed in."""

    def __init__(self, directory: FleetDirectory, profiles: ProfileCatalog, secrets: SecretStore) -> None:
        self.directory = directory
        self._profiles = profiles
        self._secrets = secrets
        self._points: dict[tuple[str, frozenset[str]], list[RecordPoint]] = {}
        self._recent: OrderedDict[str, float] = OrderedDict()  # digest -> monotonic time first heard

    def take(self, heard: HeardTelegram, *, now: float, wall: datetime, state: ReceiverState) -> Taken:
        """The outcome of one telegram heard at monotonic ``now`` / UTC ``wall`` (unknown IDs tallied in ``state``)."""
        telegram = strip_crcs(heard.raw, crc=heard.crc)  # hear() did this once already: it frames
        entry = next((e for e in map(self.directory.find, address_keys(telegram)) if e is not None), None)
        if entry is None:
            if state.unknown.add(heard) is not None:  # None: the table is full, the telegram only counted
                state.last_heard[heard.id] = wall
            return Taken("unknown-meter")
        digest = hashlib.blake2b(entry.meter_id.encode() + b"\x00" + telegram, digest_size=16).hexdigest()
        self._expire(now)
        if digest in self._recent:
            return Taken("duplicate", entry.meter_id, digest=digest)
        self._recent[digest] = now
        taken = self._read(entry, heard, wall, digest)
        if taken.outcome != "published":
            self.forget(digest)  # a meter whose key is fixed later must not look like a duplicate
        return taken

    def forget(self, digest: str) -> None:
        """Drop a telegram from the dedupe window (it was not published: its next copy may be)."""
        self._recent.pop(digest, None)

    def _expire(self, now: float) -> None:
        while self._recent:
            digest, first = next(iter(self._recent.items()))
            if now - first < DEDUPE_S and len(self._recent) < DEDUPE_MAX:
                return
            del self._recent[digest]

    def _points_of(self, entry: FleetEntry) -> list[RecordPoint]:
        key = (entry.profile, frozenset(entry.purposes))
        points = self._points.get(key)
        if points is None:
            profile = self._profiles.get(entry.profile)
            validate_wmbus_profile(profile)
            points = self._points[key] = record_points(profile.points_for(frozenset(entry.purposes)))
        return points

    def _read(self, entry: FleetEntry, heard: HeardTelegram, wall: datetime, digest: str) -> Taken:
        meter_id = entry.meter_id
        if not entry.enabled or entry.protocol != "wmbus" or entry.connection != "push":
            why = "disabled" if not entry.enabled else f"protocol {entry.protocol}, connection {entry.connection}"
            return Taken("not-served", meter_id, reason=f"{why}: only enabled wmbus push meters are served")
        try:
            points = self._points_of(entry)
            profile = self._profiles.get(entry.profile)
        except ConfigurationError as exc:
            return Taken("not-served", meter_id, reason=f"profile {entry.profile}: {exc.reason}")
        try:
            key = aes_key(self._secrets.for_meter(meter_id).get("key"), meter_id)
            decoded = decode_wmbus_telegram(heard.raw, key, crc=heard.crc)
        except (DecryptionError, KeyMissingError, ConfigurationError) as exc:
            return Taken("undecryptable", meter_id, reason=f"{exc.kind}: {exc.reason}")
        except GxError as exc:
            return Taken("damaged", meter_id, reason=f"{exc.kind}: {exc.reason}")
        try:
            result = telegram_result(decoded, profile, points, received_at=wall, meter_id=meter_id, stamp="meter")
            clock = result.meter_time
            if clock is not None and not wall - CLOCK_BEHIND <= clock <= wall + CLOCK_AHEAD:
                CLOCK_OFF.inc()  # a stuck or unset clock: readings at one ts would overwrite each other
                result = telegram_result(decoded, profile, points, received_at=wall, meter_id=meter_id)
        except GxError as exc:
            return Taken("no-readings", meter_id, reason=exc.reason)
        batch, refused = reading_batch(
            result.readings, batch_id=f"wmbus-{digest}", meter_id=meter_id, job_id=None, collected_at=wall
        )
        if batch is None:
            why = "; ".join(reason for _, reason in refused) or "no reading"
            return Taken("refused", meter_id, digest=digest, reason=why[:300])
        return Taken("published", meter_id, batch, digest)


Sink = Callable[[list[ReadingBatch]], Coroutine[object, object, None]]


class WMBusReceivers:
    """Listens to every configured receiver and publishes what its meters send (module doc)."""

    def __init__(
        self,
        settings: CollectorSettings,
        intake: TelegramIntake,
        sink: Sink,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.specs = [ReceiverSpec.parse(t) for t in settings.wmbus_receivers]
        self.intake = intake
        self._sink = sink
        self._clock = clock
        self.states = {spec.name: ReceiverState(spec) for spec in self.specs}
        self._warned: Counter[tuple[str, str]] = Counter()
        self._dirty = True

    async def run(self, stop: asyncio.Event) -> None:
        """Listen until ``stop``: follow ami.fleet, one task per receiver, keep the heard file."""
        follower = FleetFollower(self.settings, self.intake.directory)
        background = [
            asyncio.create_task(follower.run(stop), name="wmbus-fleet"),
            asyncio.create_task(self._keep_heard_file(stop), name="wmbus-heard-file"),
        ]
        listening = [asyncio.create_task(self._listen(s, stop), name=f"wmbus {s.name}") for s in self.specs]
        try:
            await stop.wait()
        finally:
            stop.set()
            for task in (*listening, *background):  # a follower may be inside a connect: do not wait for it
                task.cancel()
            await asyncio.gather(*listening, *background, return_exceptions=True)
            await asyncio.to_thread(self._write_heard)

    async def _listen(self, spec: ReceiverSpec, stop: asyncio.Event) -> None:
        """One receiver, for ever: connect, hear, and after a failure or silence connect again with backoff."""
        s, name = self.settings, spec.name
        state = self.states[name]
        if not self.intake.directory.caught_up.is_set():
            # Before the directory has the fleet every meter would look unknown.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.intake.directory.caught_up.wait(), timeout=CAUGHT_UP_WAIT_S)
        delay = RECONNECT_FIRST_S
        CONNECTED.labels(name).set(0)
        while not stop.is_set():
            try:
                medium = await open_receiver(spec.url, spec.framing, timeout=s.wmbus_connect_timeout_s)
            except Exception as exc:  # noqa: BLE001 - a media error, or any surprise of a serial driver: try again later
                CONNECTS.labels(name, "failed").inc()
                log.info("cannot connect to the wM-Bus receiver", extra={"receiver": name, "error": _reason(exc)})
            else:
                CONNECTS.labels(name, "connected").inc()
                CONNECTED.labels(name).set(1)
                state.connected, self._dirty = True, True
                log.info("wM-Bus receiver connected", extra={"receiver": name, "framing": spec.framing})
                try:
                    if await self._hear(spec, state, medium):
                        delay = RECONNECT_FIRST_S  # it delivered: the next failure starts the backoff afresh
                except Exception as exc:  # noqa: BLE001 - a bug or the spool's disk must not silence a receiver for good
                    CONNECTS.labels(name, "failed-inside").inc()
                    # The type only, no traceback: an unexpected error's message or locals might hold anything.
                    log.error(  # noqa: TRY400 - deliberately without the traceback (above)
                        "wM-Bus receiver loop failed; reconnecting",
                        extra={"receiver": name, "error": type(exc).__name__},
                    )
                finally:
                    CONNECTED.labels(name).set(0)
                    state.connected, self._dirty = False, True
                    with contextlib.suppress(GxError, OSError):
                        await medium.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
            delay = min(delay * 2, s.wmbus_reconnect_max_s)

    async def _hear(self, spec: ReceiverSpec, state: ReceiverState, medium: Medium) -> bool:
        """Take every telegram until the line fails or goes quiet; True if any telegram came."""
        name = spec.name
        heard_any = False

        def on_skipped(skip: Skipped) -> None:
            SKIPPED.labels(name, skip.kind).inc()
            state.skipped[skip.kind] += 1
            self._dirty = True
            if skip.kind == "checksum":
                self._warn(name, "checksum", "wM-Bus receiver delivered a frame whose checksum fails", skip.error)

        telegrams = receive_telegrams(
            medium,
            spec.framing,
            idle_timeout=self.settings.wmbus_idle_timeout_s,
            rssi=spec.rssi,
            on_skipped=on_skipped,
        )
        try:
            async for heard in telegrams:
                heard_any = True
                await self._take(spec, state, heard)
        except MeterTimeoutError:
            CONNECTS.labels(name, "quiet").inc()
            log.info("wM-Bus receiver quiet; reconnecting", extra={"receiver": name})
        except MediaError as exc:
            CONNECTS.labels(name, "lost").inc()
            log.info("wM-Bus receiver connection lost", extra={"receiver": name, "error": _reason(exc)})
        finally:
            await telegrams.aclose()
        return heard_any

    async def _take(self, spec: ReceiverSpec, state: ReceiverState, heard: HeardTelegram) -> None:
        name = spec.name
        wall = self._clock()
        state.telegrams += 1
        self._dirty = True
        LAST_TELEGRAM.labels(name).set(wall.timestamp())
        try:
            taken = self.intake.take(heard, now=time.monotonic(), wall=wall, state=state)
        except GxError as exc:  # hear() framed it, so this is not expected; still never the receiver's end
            taken = Taken("damaged", reason=_reason(exc))
        if taken.outcome == "unknown-meter":
            UNKNOWN_METERS.labels(name).set(len(state.unknown.meters))
        if taken.outcome == "published" and taken.batch is not None:
            try:
                await self._sink(fitting_batches(taken.batch))
            except BaseException as exc:
                # The meter sends again in a few seconds or minutes; this copy is lost, the next is not refused.
                self.intake.forget(taken.digest)
                if not isinstance(exc, KafkaError | OSError):
                    raise
                TELEGRAMS.labels(name, "publish-failed").inc()
                self._warn(name, "publish", "could not publish a wM-Bus telegram's readings", None, type(exc).__name__)
                return
            WMBUS_READINGS.inc(taken.batch.count)
        TELEGRAMS.labels(name, taken.outcome).inc()
        if taken.outcome in ("undecryptable", "damaged", "no-readings", "not-served", "refused"):
            key = f"{taken.meter_id}:{taken.outcome}"
            self._warn(name, key, f"wM-Bus telegram {taken.outcome}", None, taken.reason, meter_id=taken.meter_id)

    def _warn(
        self,
        receiver: str,
        what: str,
        message: str,
        error: GxError | None,
        reason: str = "",
        *,
        meter_id: str | None = None,
    ) -> None:
        """Log the 1st, 10th, 100th ... time of one kind of trouble (a meter with a wrong key sends all day)."""
        self._warned[(receiver, what)] += 1
        count = self._warned[(receiver, what)]
        if count == 1 or str(count).rstrip("0") == "1":
            extra = {"receiver": receiver, "meter_id": meter_id, "times": count}
            extra["error"] = _reason(error) if error is not None else reason
            log.warning(message, extra=extra)

    # -- the heard file ------------------------------------------------------------

    def heard(self) -> dict[str, object]:
        """The heard list: per receiver, the IDs the fleet does not know, with counts (what the file holds)."""
        return {
            "written_at": self._clock().isoformat(),
            "receivers": [state.to_json_dict() for state in self.states.values()],
        }

    async def _keep_heard_file(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=HEARD_FLUSH_S)
            if self._dirty:
                await asyncio.to_thread(self._write_heard)

    def _write_heard(self) -> None:
        """The heard list to the file: temporary file, fsync, rename (a reader sees the old or the new)."""
        self._dirty = False
        path = self.settings.wmbus_heard_file
        data = json.dumps(self.heard(), indent=1).encode()
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=path.name, dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                Path(tmp).replace(path)
            except OSError:
                with contextlib.suppress(OSError):
                    Path(tmp).unlink()
                raise
        except OSError as exc:
            self._dirty = True
            log.warning("cannot write the wM-Bus heard file", extra={"path": str(path), "error": exc.strerror})


def _reason(exc: BaseException) -> str:
    """The error's kind and reason (a gxcore reason never holds a key or the frame's bytes)."""
    return f"{exc.kind}: {exc.reason}" if isinstance(exc, GxError) else type(exc).__name__


def with_wmbus_receivers(
    settings: CollectorSettings,
    jobs: Callable[[asyncio.Event], Coroutine[object, object, None]],
    profiles: ProfileCatalog,
    secrets: SecretStore,
    spool: Spool | None,
    directory: FleetDirectory | None = None,
) -> Callable[[asyncio.Event], Coroutine[object, object, None]]:
    """The job loop (``jobs``) and the receivers side by side; either failing stops both.

    With a spool (an edge collector) readings go into it and the collector's forwarder sends
    them; without one, through a producer of this component's own. ``directory``: the fleet
    directory to fill from ami.fleet (a new one by default).
    """

    async def run(stop: asyncio.Event) -> None:
        producer = None
        if spool is not None:

            async def sink(batches: list[ReadingBatch]) -> None:
                assert spool is not None
                await spool.put(
                    [Outgoing(READINGS.name, b.meter_id.encode(), b.model_dump_json().encode()) for b in batches]
                )

        else:
            producer = make_producer(settings)
            try:
                await producer.start()
            except (KafkaConnectionError, OSError) as exc:
                raise kafka_startup_error(settings.kafka_bootstrap, exc, settings.kafka_security()) from None
            publisher = Publisher(producer, settings)

            async def sink(batches: list[ReadingBatch]) -> None:
                await publisher.send_many(READINGS.name, [(b.meter_id, b) for b in batches])

        try:
            intake = TelegramIntake(directory if directory is not None else FleetDirectory(), profiles, secrets)
            receivers = WMBusReceivers(settings, intake, sink)
            tasks = [
                asyncio.create_task(jobs(stop), name="jobs"),
                asyncio.create_task(receivers.run(stop), name="wmbus-receivers"),
            ]
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
            if producer is not None:
                await producer.stop()

    return run
