"""Dial-in listeners: a meter opens a TCP connection to us, we identify it, serve its due work, hang up.

``GXAMI_LISTENERS=dlms-dial-in@tcp://0.0.0.0:4061`` (``iec62056-21-dial-in@...`` for IEC 62056-21
meters, ``mbus-dial-in@...`` for M-Bus; beside any ``dlms-push@...``). For each
accepted connection (at most ``GXAMI_DIAL_IN_MAX_SESSIONS`` at once; more are refused and the
meter calls again later):

1. **Identify** the caller. A modem may send an identification line first: whatever arrives
   within ``GXAMI_DIAL_IN_IDENT_WAIT_S`` is matched against ``GXAMI_DIAL_IN_IDENT_PATTERN``
   (its ``id`` group is the identity). If nothing arrives, we act as the DLMS client: the public
   client (16, no security) associates over the connection and reads the logical device name
   (0-0:42.0.0), else the serial number (0-0:96.1.0), then releases. The identity is looked up in
   the fleet directory (``ami.fleet``) as a serial / system title, or as the meter id itself; the
   meter must be enabled and marked ``connection: dial-in``.
2. **Claim** its pending jobs (see below) and serve those this replica won, each one exactly as
   a read job is run (:class:`~gxami_collector.jobs.MeterReader` over the open connection: the
   meter's own association, its purposes, the load-profile window the scheduler asked for), and
   publish readings, events and the JobResult as read jobs do. A session that fails (the meter
   stops answering: MeterTimeoutError) ends the call; its result says error, so the scheduler
   keeps the work pending and it is served at the meter's next call.
3. **Hang up**: the listener closes the connection when the handler returns.

How the due work reaches the replica the meter called. Two (or more) replicas sit behind one
service address and a meter may call any of them, so the work cannot be partitioned to one
consumer the way ``ami.read-jobs`` is. The scheduler publishes each dial-in meter's pending set
on the compacted topic ``ami.dial-in-work`` (key meter id, tombstone when nothing is pending);
every replica reads the whole topic into memory (:class:`DialInBoard`, no consumer group), the
way the fleet directory follows ``ami.fleet``: memory is one small record per dial-in meter with
work, and a replica that restarts catches up by reading the topic, with no database at the edge.

Exactly once. The scheduler's update after a session (the tombstone) reaches the other replica
a moment later; a meter that hangs up and calls the other replica at once could find the old
work there. So before serving, a replica publishes a :class:`~gxami_contracts.DialInClaim` for the
job ids on ``ami.dial-in-claims`` (key meter id: one partition orders every claim on a meter),
waits until its own follower has read that partition up to its claim, and serves only the jobs
whose winning claim is its own. The winner of a job is the first claim on it in the log, and a
later claim wins only once the holder's ``expires_at`` has passed (a replica that died mid-session
frees the job then). Every replica reads the same log in the same order, so all agree: no clock
race, no shared database. A claim that cannot be confirmed in ``GXAMI_DIAL_IN_CLAIM_WAIT_S`` is
not served (the meter calls again). The claims topic is compacted (the latest claim per meter);
a replica that restarts and reads it may see a later, losing claim where the winning one was
compacted away: it then takes the loser for the holder, which only ever blocks a serve until that
claim expires, never allows a second one. What the claims cannot cover, a result lost after its
readings were published, ends in a re-read whose rows ingest stores once (natural key).

Every call of a known dial-in meter is reported on ``ami.dial-in-contacts`` (its outcome, how many
jobs were served), so the scheduler records the last contact also of calls that had no work.

Bad input: every read has a timeout (the ident wait, every DLMS exchange, the whole session,
the listener's idle timeout); a caller that does not identify, or is unknown, is counted
(``gxami_collector_dial_in_sessions_total{outcome}``) and hung up on; nothing logs a key or frame.
Pending commands have a seam (:attr:`DialInService.commands`) but no executor yet. IEC 62056-21
callers (``iec62056-21-dial-in@tcp://...``) are identified by the identification message their
sign-on answer carries (the collector sends ``/?!``; the ident part names the meter); M-Bus
callers (``mbus-dial-in@tcp://...``) by the secondary address of their first RSP_UD (SND_NKE and
REQ_UD2 to the broadcast-with-reply address 0xFE), listed in the fleet as ``serial`` whole or as
its 8 id digits.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import re
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import Counter, Gauge
from pydantic import ValidationError

from gxami_collector.batches import fitting_batches
from gxami_collector.fleet_cache import FleetDirectory
from gxami_collector.jobs import JobOutcome, MeterReader
from gxami_collector.listeners import ListenerSpec
from gxami_collector.settings import CollectorSettings
from gxami_contracts import DialInClaim, DialInContact, DialInWork, FleetEntry, JobStatus, ReadJob
from gxami_contracts.topics import DIAL_IN_CLAIMS, DIAL_IN_CONTACTS, DIAL_IN_WORK, EVENTS, JOB_RESULTS, READINGS
from gxami_runtime.kafka import Publisher, consumer_options, describe_validation_error, ensure_topics
from gxcore.drivers.dlms.driver import dlms_parameters
from gxcore.drivers.dlms.reader import DlmsSession
from gxcore.errors import ConfigurationError, GxError, MeterTimeoutError, ProtocolError
from gxcore.media import Medium
from gxcore.media.listener import DialInConnection, ListenerEvent, ListenerSettings, TcpListener
from gxcore.profiles import ProfileCatalog
from gxcore.protocols.dlms.parameters import PUBLIC_CLIENT
from gxcore.protocols.iec62056_21.frames import encode_request, next_line, parse_identification
from gxcore.protocols.mbus.frame import ADDRESS_BROADCAST_REPLY, Ack, LongFrame, decode_frame, req_ud2, snd_nke
from gxcore.protocols.mbus.telegram import decode_user_data

log = logging.getLogger("gxami.collector.dialin")

# Listener kind -> the protocol of the meters that call it.
KINDS: Final = {"dlms-dial-in": "dlms", "iec62056-21-dial-in": "iec62056-21", "mbus-dial-in": "mbus"}
DEVICE_NAME: Final = "0.0.42.0.0.255"
SERIAL_NUMBER: Final = "0.0.96.1.0.255"
IDENT_MAX: Final = 128
MBUS_READ_MAX: Final = 512
CAUGHT_UP_WAIT_S: Final = 30.0
FETCH_TIMEOUT_MS: Final = 500
RETRY_S: Final = 2.0

SESSIONS = Counter("gxami_collector_dial_in_sessions_total", "Dial-in calls by outcome", ["listener", "outcome"])
DIAL_IN_JOBS = Counter("gxami_collector_dial_in_jobs_total", "Dial-in jobs served, by status", ["status"])
PENDING_METERS = Gauge("gxami_collector_dial_in_pending_meters", "Dial-in meters with pending work (ami.dial-in-work)")
REFUSED = Counter("gxami_collector_dial_in_records_refused_total", "Dial-in work or claim records that do not decode")


@dataclass(frozen=True, slots=True)
class Hold:
    """The claim that holds a job: who, and until when."""

    claim_id: str
    expires_at: datetime


class DialInBoard:
    """Pending work by meter (from ``ami.dial-in-work``) and the claims on it (``ami.dial-in-claims``).

    Plain and synchronous (tests call it directly); :class:`BoardFollower` feeds it in log order.
    """

    def __init__(self) -> None:
        self._work: dict[str, DialInWork] = {}
        self._holds: dict[str, dict[str, Hold]] = {}  # meter id -> job id -> hold
        self._applied: dict[TopicPartition, int] = {}  # next offset to read, per partition
        self._moved = asyncio.Event()
        self.caught_up = asyncio.Event()

    def apply_work(self, key: bytes | None, value: bytes | None) -> None:
        """One ``ami.dial-in-work`` record: a meter's pending set, or a tombstone (nothing pending)."""
        if value is None:
            if key is not None:
                self._work.pop(key.decode(errors="replace"), None)
        else:
            work = DialInWork.from_wire(value)
            self._work[work.meter_id] = work
        self._gauges()

    def apply_claim(self, value: bytes | None) -> None:
        """One claim, in log order: it takes each job that nobody holds, or whose hold had expired when it was made."""
        if value is None:
            return
        claim = DialInClaim.from_wire(value)
        holds = self._holds.setdefault(claim.meter_id, {})
        for job_id, hold in list(holds.items()):  # bounded: drop holds that had expired by this claim
            if hold.expires_at < claim.claimed_at:
                del holds[job_id]
        for job_id in claim.job_ids:
            if job_id not in holds:
                holds[job_id] = Hold(claim.claim_id, claim.expires_at)
        self._gauges()

    def moved(self, tp: TopicPartition, next_offset: int) -> None:
        """The follower has applied ``tp`` up to ``next_offset``; wake claim waiters."""
        self._applied[tp] = next_offset
        self._moved.set()
        self._moved = asyncio.Event()

    async def wait_applied(self, tp: TopicPartition, offset: int, timeout: float) -> bool:
        """True once the record at ``offset`` of ``tp`` has been applied; False after ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._applied.get(tp, 0) <= offset:
            left = deadline - loop.time()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._moved.wait(), timeout=left)
        return True

    def pending(self, meter_id: str, now: datetime) -> list[ReadJob]:
        """The meter's pending jobs that no live claim holds."""
        work = self._work.get(meter_id)
        if work is None:
            return []
        holds = self._holds.get(meter_id, {})
        return [j for j in work.jobs if (h := holds.get(j.job_id)) is None or h.expires_at < now]

    def winner(self, meter_id: str, job_id: str) -> str | None:
        """The claim id that holds a job, as the log decided."""
        hold = self._holds.get(meter_id, {}).get(job_id)
        return hold.claim_id if hold is not None else None

    def _gauges(self) -> None:
        PENDING_METERS.set(len(self._work))  # O(1): called for every record of a catch-up

    @property
    def meters(self) -> int:
        return len(self._work)


class BoardFollower:
    """Reads both dial-in topics from the beginning into a :class:`DialInBoard`, then follows them (no group)."""

    def __init__(self, settings: CollectorSettings, board: DialInBoard) -> None:
        self.settings = settings
        self.board = board

    async def run(self, stop: asyncio.Event) -> None:
        """Follow until ``stop``; a broker outage is logged and retried, never raised."""
        while not stop.is_set():
            try:
                await self._follow(stop)
            except (KafkaError, OSError) as exc:
                log.warning("following the dial-in topics failed; retrying", extra={"error": type(exc).__name__})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=RETRY_S)

    async def _follow(self, stop: asyncio.Event) -> None:
        options = consumer_options(self.settings, "unused")
        options["group_id"] = None  # every replica reads all the work and every claim
        consumer = AIOKafkaConsumer(**options)
        work_topic = self.settings.topic(DIAL_IN_WORK.name)
        claims_topic = self.settings.topic(DIAL_IN_CLAIMS.name)
        try:
            await consumer.start()
            if not (consumer.partitions_for_topic(work_topic) and consumer.partitions_for_topic(claims_topic)):
                await consumer.topics()  # a metadata round trip, then the partitions are known
            work_parts = consumer.partitions_for_topic(work_topic)
            claim_parts = consumer.partitions_for_topic(claims_topic)
            if not work_parts or not claim_parts:
                raise KafkaError(f"topics {work_topic}, {claims_topic} have no partitions yet")
            tps = [TopicPartition(work_topic, p) for p in sorted(work_parts)]
            tps += [TopicPartition(claims_topic, p) for p in sorted(claim_parts)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            pending = {tp for tp in tps if ends[tp] > 0}
            while not stop.is_set():
                fetched = await consumer.getmany(timeout_ms=FETCH_TIMEOUT_MS, max_records=5000)
                for tp, records in fetched.items():
                    for rec in records:
                        self._apply(tp.topic == work_topic, rec.key, rec.value, rec.offset)
                    self.board.moved(tp, records[-1].offset + 1)
                for tp in list(pending):
                    position = int(await consumer.position(tp))
                    if position >= ends[tp]:
                        pending.discard(tp)
                        self.board.moved(tp, position)
                if not pending and not self.board.caught_up.is_set():
                    log.info("dial-in work caught up", extra={"meters": self.board.meters})
                    self.board.caught_up.set()
        finally:
            await consumer.stop()

    def _apply(self, is_work: bool, key: bytes | None, value: bytes | None, offset: int) -> None:
        try:
            if is_work:
                self.board.apply_work(key, value)
            else:
                self.board.apply_claim(value)
        except ValidationError as exc:
            REFUSED.inc()
            log.warning(
                "dial-in record refused; skipped", extra={"offset": offset, "error": describe_validation_error(exc)}
            )


class IdentityError(ProtocolError):
    """A caller that did not identify itself in a way we understand."""


async def read_ident(connection: Medium, pattern: re.Pattern[bytes], wait: float) -> str | None:
    """The identity in an identification line the caller sends first; None if it sends nothing in ``wait``.

    IdentityError when it sends something that is not such a line (nothing of it is logged).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    got = b""
    while len(got) < IDENT_MAX:
        left = deadline - loop.time()
        if left <= 0:
            break
        try:
            got += await connection.receive(IDENT_MAX - len(got), timeout=left)
        except MeterTimeoutError:
            break
        if b"\n" in got:
            break
    if not got:
        return None
    match = pattern.match(got)
    if match is None:
        raise IdentityError(f"{connection.describe()}: {len(got)} bytes that are not an identification line")
    return match.group("id").decode("ascii", "replace")


async def read_device_name(connection: Medium, session: DlmsSession) -> str:
    """The logical device name (else serial number) read by the public client over the connection."""
    async with session:
        for obis in (DEVICE_NAME, SERIAL_NUMBER):
            try:
                raw = await session.get(1, obis, 2)
            except ProtocolError:
                if session.broken:
                    raise
                continue
            if isinstance(raw, bytes | bytearray) and raw:
                return bytes(raw).decode("ascii", "replace").strip("\x00 ")
            if isinstance(raw, str) and raw:
                return raw
    raise IdentityError(f"{connection.describe()}: neither logical device name nor serial number readable")


async def _mbus_reply(connection: Medium, deadline: float, what: str) -> tuple[bytes, LongFrame | Ack | None]:
    """The next whole M-Bus frame from the connection (bytes before it are dropped), by ``deadline``."""
    loop = asyncio.get_running_loop()
    buf = b""
    while True:
        consumed, frame = decode_frame(buf)
        if frame is not None:
            if isinstance(frame, LongFrame | Ack):
                return buf[consumed:], frame
            raise IdentityError(f"{connection.describe()}: {what}: not an M-Bus reply")
        buf = buf[consumed:]
        left = deadline - loop.time()
        if left <= 0:
            raise MeterTimeoutError(f"{connection.describe()}: no M-Bus {what} in time")
        buf += await connection.receive(MBUS_READ_MAX, timeout=left)


async def read_mbus_identity(connection: Medium, timeout: float) -> str:
    """M-Bus: SND_NKE and REQ_UD2 to the broadcast-with-reply address; the RSP_UD's secondary address.

    A caller is one meter (or one gateway slave) on its own line, so the broadcast has one answer.
    """
    loop = asyncio.get_running_loop()
    await connection.send(snd_nke(ADDRESS_BROADCAST_REPLY), timeout=timeout)
    _, ack = await _mbus_reply(connection, loop.time() + timeout, "acknowledgement")
    if not isinstance(ack, Ack):
        raise IdentityError(f"{connection.describe()}: SND_NKE not acknowledged")
    await connection.send(req_ud2(ADDRESS_BROADCAST_REPLY, True), timeout=timeout)
    _, reply = await _mbus_reply(connection, loop.time() + timeout, "RSP_UD")
    if not isinstance(reply, LongFrame):
        raise IdentityError(f"{connection.describe()}: REQ_UD2 answered without user data")
    return decode_user_data(reply.ci, reply.data, address=reply.address).secondary_address


async def read_iec_identity(connection: Medium, timeout: float) -> str:
    """IEC 62056-21: send the sign-on request ``/?!``, read the identification ``/XXXZ<ident>``; the ident.

    The meter is then left waiting for an option select it never gets; the read job's own sign-on
    starts it over (a new request always does, by the standard).
    """
    await connection.send(encode_request(), timeout=timeout)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    buf = b""
    while True:
        consumed, line = next_line(buf)
        if line is not None and not line.startswith(b"/?"):  # skip our own request, echoed by a probe
            return parse_identification(line).ident
        buf = buf[consumed:]
        left = deadline - loop.time()
        if left <= 0:
            raise MeterTimeoutError(f"{connection.describe()}: no IEC 62056-21 identification within {timeout:g} s")
        buf += await connection.receive(IDENT_MAX, timeout=left)


CommandHook = Callable[[FleetEntry, Medium], Awaitable[None]]
"""The seam for pending commands: run after the reads, over the same connection (no executor yet)."""


class DialInService:
    """Every dial-in listener of this collector: identify, claim, serve, publish, hang up."""

    def __init__(
        self,
        settings: CollectorSettings,
        profiles: ProfileCatalog,
        reader: MeterReader,
        directory: FleetDirectory,
        publisher: Publisher,
        producer: AIOKafkaProducer,
        board: DialInBoard | None = None,
    ) -> None:
        self.settings = settings
        self.specs = _dial_in_specs(settings)
        self._profiles = profiles
        self._reader = reader
        self.directory = directory
        self.board = board if board is not None else DialInBoard()
        self._publisher = publisher
        self._producer = producer
        self._pattern = re.compile(settings.dial_in_ident_pattern.encode())
        self.replica = f"{socket.gethostname()}:{os.getpid()}"
        self.commands: CommandHook | None = None
        self._listeners: list[TcpListener] = []
        self._slots = asyncio.Semaphore(settings.dial_in_max_sessions)

    # -- one call ----------------------------------------------------------------------

    async def serve(self, connection: DialInConnection, listener: str) -> str:
        """Serve one call; returns its outcome (also counted, and reported as a contact for a known meter)."""
        outcome, meter, served = await self._serve(connection, listener)
        SESSIONS.labels(listener, outcome).inc()
        if meter is not None:
            contact = DialInContact(
                meter_id=meter,
                at=datetime.now(UTC),
                replica=self.replica,
                outcome=outcome,  # type: ignore[arg-type]  # one of ContactOutcome once the meter is known
                jobs_served=served,
            )
            try:
                await self._publisher.send(DIAL_IN_CONTACTS.name, meter, contact)
            except KafkaError as exc:  # the job results carry the contact too; the call is done
                log.warning("dial-in contact not published", extra={"meter_id": meter, "error": type(exc).__name__})
        return outcome

    async def _serve(self, connection: DialInConnection, listener: str) -> tuple[str, str | None, int]:
        for ready in (self.directory.caught_up, self.board.caught_up):
            if not ready.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ready.wait(), timeout=CAUGHT_UP_WAIT_S)
        try:
            identity = await self._identify(connection, listener)
        except GxError as exc:
            log.info("dial-in caller not identified", extra={"listener": listener, "error": exc.reason})
            return "unidentified", None, 0
        protocol = KINDS[self._spec(listener).kind]
        entry = self.directory.find(identity) or self.directory.get(identity)
        if entry is None and protocol == "mbus":  # a secondary address may be listed as its 8 id digits
            entry = self.directory.find(identity[:8])
        if entry is None or not entry.enabled or entry.connection != "dial-in" or entry.protocol != protocol:
            log.info("dial-in caller unknown", extra={"listener": listener, "identity": identity[:64]})
            return "unknown-meter", None, 0
        jobs = self.board.pending(entry.meter_id, datetime.now(UTC))
        if not jobs:
            return "no-work", entry.meter_id, 0
        won = await self._claim(entry.meter_id, jobs)
        if not won:
            return "claimed-elsewhere", entry.meter_id, 0
        for served, job in enumerate(won):
            result = await self._run(job, connection)
            DIAL_IN_JOBS.labels(result.result.status.value).inc()
            if result.result.status is JobStatus.ERROR:
                log.info(
                    "dial-in session failed; the work stays pending",
                    extra={"meter_id": entry.meter_id, "error_kind": result.result.error_kind},
                )
                return "failed", entry.meter_id, served
        if self.commands is not None:
            await self.commands(entry, connection)
        return "served", entry.meter_id, len(won)

    def _spec(self, listener: str) -> ListenerSpec:
        return next(s for s in self.specs if str(s) == listener)

    async def _identify(self, connection: DialInConnection, listener: str) -> str:
        spec = self._spec(listener)
        if KINDS[spec.kind] == "iec62056-21":
            return await read_iec_identity(connection, self.settings.exchange_timeout_s)
        if KINDS[spec.kind] == "mbus":
            return await read_mbus_identity(connection, self.settings.exchange_timeout_s)
        ident = await read_ident(connection, self._pattern, self.settings.dial_in_ident_wait_s)
        if ident is not None:
            return ident
        profile = self._profiles.get(self.settings.dial_in_profile)
        params = dataclasses.replace(
            dlms_parameters(profile),
            client_address=PUBLIC_CLIENT,
            authentication="none",
            password=None,
            security=None,
        )
        url = f"tcp://{spec.host or '0.0.0.0'}:{spec.port or 1}"
        session = DlmsSession(url, params, timeout=self.settings.exchange_timeout_s, medium=connection)
        return await read_device_name(connection, session)

    async def _claim(self, meter_id: str, jobs: Sequence[ReadJob]) -> list[ReadJob]:
        """Publish a claim for ``jobs``, read the log up to it, return the jobs this claim won."""
        now = datetime.now(UTC)
        claim = DialInClaim(
            claim_id=uuid.uuid4().hex,
            meter_id=meter_id,
            job_ids=[j.job_id for j in jobs],
            replica=self.replica,
            claimed_at=now,
            expires_at=now + timedelta(seconds=self.settings.dial_in_claim_s),
        )
        topic = self.settings.topic(DIAL_IN_CLAIMS.name)
        sent = await self._producer.send(topic, claim.model_dump_json().encode(), key=meter_id.encode())
        meta = await sent
        seen = await self.board.wait_applied(
            TopicPartition(meta.topic, meta.partition), meta.offset, self.settings.dial_in_claim_wait_s
        )
        if not seen:
            log.warning("own dial-in claim not seen in time; not serving", extra={"meter_id": meter_id})
            return []
        return [j for j in jobs if self.board.winner(meter_id, j.job_id) == claim.claim_id]

    async def _run(self, job: ReadJob, connection: Medium) -> JobOutcome:
        async with self._slots:
            outcome = await self._reader.run(job, medium=connection)
        await publish_outcome(self._publisher, outcome)
        return outcome

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        for spec in self.specs:
            name = str(spec)

            async def handler(conn: DialInConnection, name: str = name) -> None:
                await self.serve(conn, name)

            def on_event(event: ListenerEvent, name: str = name) -> None:
                if event.kind in {"rejected", "idle", "failed"}:
                    SESSIONS.labels(name, event.kind).inc()

            tcp = TcpListener(
                ListenerSettings(
                    spec.host,
                    spec.port,
                    max_connections=s.dial_in_max_sessions,
                    idle_timeout=s.dial_in_idle_timeout_s,
                ),
                handler,
                on_event=on_event,
            )
            await tcp.start()
            self._listeners.append(tcp)
            log.info("dial-in listener started", extra={"listener": name, "port": tcp.port})

    async def close(self) -> None:
        for tcp in self._listeners:
            await tcp.close()
        self._listeners = []

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the dial-in topics and listen until ``stop``."""
        try:
            await ensure_topics(self.settings, [DIAL_IN_WORK.name, DIAL_IN_CLAIMS.name])
        except (KafkaError, OSError) as exc:  # an edge user may not create topics: they must exist
            log.warning("cannot create the dial-in topics; they must exist", extra={"error": type(exc).__name__})
        follower = asyncio.create_task(BoardFollower(self.settings, self.board).run(stop), name="dial-in-work")
        try:
            await self.start()
            await stop.wait()
        finally:
            await self.close()
            stop.set()
            await asyncio.gather(follower, return_exceptions=True)


async def publish_outcome(publisher: Publisher, outcome: JobOutcome) -> None:
    """Readings and events first, then the result, exactly as a read job's (the scheduler's "ok" means stored)."""
    if outcome.batch is not None:
        parts = fitting_batches(outcome.batch)
        await publisher.send_many(READINGS.name, [(p.meter_id, p) for p in parts])
    if outcome.events:
        await publisher.send_many(EVENTS.name, [(e.meter_id, e) for e in outcome.events])
    await publisher.send(JOB_RESULTS.name, outcome.result.meter_id, outcome.result)


def _dial_in_specs(settings: CollectorSettings) -> list[ListenerSpec]:
    specs = [ListenerSpec.parse(t) for t in settings.listeners]
    out = [s for s in specs if s.kind in KINDS]
    for s in out:
        if s.scheme != "tcp":
            raise ConfigurationError(f"listener {s}: a dial-in listener takes tcp://host:port")
    return out
