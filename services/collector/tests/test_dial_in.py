"""Dial-in pieces called directly: the board's claims, ident lines, and whole calls from simulated
meters over a real TCP listener (identified by ident line or by logical device name, served,
stalled mid-session, claimed by another replica), with the broker replaced by recorders."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import cast

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from gxami_collector.dialin import DialInBoard, DialInService, IdentityError, read_ident
from gxami_collector.fleet_cache import FleetDirectory
from gxami_collector.jobs import MeterReader
from gxami_collector.secret_store import SecretStore
from gxami_collector.settings import DIAL_IN_IDENT_PATTERN, CollectorSettings
from gxami_contracts import (
    DialInClaim,
    DialInContact,
    DialInWork,
    FleetEntry,
    JobResult,
    JobStatus,
    Message,
    ReadingBatch,
    ReadJob,
)
from gxami_meterlab.simulators.dlms import meter_id
from gxami_meterlab.simulators.dlms_dialin import DialInMeters, run_dialer
from gxami_meterlab.simulators.iec_dialin import IecDialInMeters
from gxami_meterlab.simulators.mbus_dialin import MBusDialInMeters
from gxami_runtime.kafka import Publisher
from gxcore.media.memory import memory_pair
from gxcore.profiles import ProfileCatalog

SEED = 9
NOW = datetime(2026, 11, 26, 3, 15, tzinfo=UTC)


def job(index: int, job_id: str, now: datetime = NOW) -> ReadJob:
    return ReadJob(
        job_id=job_id,
        meter_id=meter_id(SEED, index),
        link_id=f"dial-in:{index}",
        protocol="dlms",
        url="tcp://127.0.0.1:4061",
        profile="generic-dlms",
        options={"authentication": "none"},
        purposes=["billing", "load-profile"],
        profile_from=now - timedelta(hours=1),
        profile_to=now,
        issued_at=now,
        deadline=now + timedelta(hours=1),
    )


def work(index: int, *job_ids: str, now: datetime = NOW) -> bytes:
    jobs = [job(index, j, now) for j in job_ids]
    return DialInWork(meter_id=meter_id(SEED, index), jobs=jobs, updated_at=now).model_dump_json().encode()


def claim(index: int, claim_id: str, job_ids: Sequence[str], at: datetime, life_s: float = 60) -> bytes:
    c = DialInClaim(
        claim_id=claim_id,
        meter_id=meter_id(SEED, index),
        job_ids=list(job_ids),
        replica="r",
        claimed_at=at,
        expires_at=at + timedelta(seconds=life_s),
    )
    return c.model_dump_json().encode()


async def test_the_first_live_claim_in_the_log_wins_and_an_expired_one_frees_the_job() -> None:
    board = DialInBoard()
    board.apply_work(meter_id(SEED, 1).encode(), work(1, "j1", "j2"))
    assert [j.job_id for j in board.pending(meter_id(SEED, 1), NOW)] == ["j1", "j2"]
    board.apply_claim(claim(1, "a", ["j1"], NOW))
    board.apply_claim(claim(1, "b", ["j1", "j2"], NOW + timedelta(seconds=1)))  # the other replica, later
    assert board.winner(meter_id(SEED, 1), "j1") == "a"
    assert board.winner(meter_id(SEED, 1), "j2") == "b"
    assert board.pending(meter_id(SEED, 1), NOW + timedelta(seconds=2)) == []
    # A's claim expired (it died mid-session): a claim made after that takes the job.
    board.apply_claim(claim(1, "c", ["j1"], NOW + timedelta(seconds=61)))
    assert board.winner(meter_id(SEED, 1), "j1") == "c"
    board.apply_work(meter_id(SEED, 1).encode(), None)  # the scheduler's tombstone: nothing pending
    assert board.pending(meter_id(SEED, 1), NOW) == []
    assert board.meters == 0


async def test_waiting_for_an_offset_returns_once_the_follower_passes_it() -> None:
    board = DialInBoard()
    tp = TopicPartition("ami.dial-in-claims", 2)
    assert not await board.wait_applied(tp, 5, 0.05)
    waiter = asyncio.create_task(board.wait_applied(tp, 5, 10))
    await asyncio.sleep(0)
    board.moved(tp, 5)  # offset 5 not yet applied
    await asyncio.sleep(0)
    assert not waiter.done()
    board.moved(tp, 6)
    assert await waiter


async def test_an_ident_line_names_the_caller_and_anything_else_is_refused() -> None:
    pattern = re.compile(DIAL_IN_IDENT_PATTERN.encode())
    ours, theirs = memory_pair()
    await theirs.send(b"SIM00900004\r")
    await theirs.send(b"\n")
    assert await read_ident(ours, pattern, 1.0) == "SIM00900004"
    ours, theirs = memory_pair()
    assert await read_ident(ours, pattern, 0.05) is None  # silent: the caller waits for our AARQ
    ours, theirs = memory_pair()
    await theirs.send(bytes.fromhex("0001000100100005") + b"hello")
    with pytest.raises(IdentityError) as caught:
        await read_ident(ours, pattern, 1.0)
    assert "hello" not in str(caught.value)  # the bytes themselves are never echoed


class RecordingPublisher:
    """Collects what would go to the broker."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Message]] = []

    async def send(self, logical_topic: str, key: str, message: Message) -> None:
        self.sent.append((logical_topic, key, message))

    async def send_many(self, logical_topic: str, items: Sequence[tuple[str, Message]]) -> None:
        self.sent.extend((logical_topic, k, m) for k, m in items)

    def results(self) -> list[JobResult]:
        return [m for t, _, m in self.sent if isinstance(m, JobResult)]


@dataclass
class _Meta:
    topic: str
    partition: int
    offset: int


class ClaimLog:
    """The claims partition as a producer sees it: each claim appended and applied to every board in order.

    ``ahead`` holds, by key, another replica's claim that reaches the partition just before ours (a race).
    """

    def __init__(self, *boards: DialInBoard) -> None:
        self.boards = boards
        self.offset = 0
        self.ahead: dict[bytes, bytes] = {}

    async def send(self, topic: str, value: bytes, *, key: bytes) -> asyncio.Future[_Meta]:
        if key in self.ahead:
            await self.send(topic, self.ahead.pop(key), key=b"")
        meta = _Meta(topic, 0, self.offset)
        self.offset += 1
        for board in self.boards:
            board.apply_claim(value)
            board.moved(TopicPartition(topic, 0), self.offset)
        done: asyncio.Future[_Meta] = asyncio.get_running_loop().create_future()
        done.set_result(meta)
        return done


def fleet_entry(index: int) -> FleetEntry:
    return FleetEntry(
        meter_id=meter_id(SEED, index),
        protocol="dlms",
        url="tcp://127.0.0.1:4061",
        link_id=f"dial-in:{index}",
        profile="generic-dlms",
        connection="dial-in",
        interval_s=900,
        options={"authentication": "none"},
        serial=meter_id(SEED, index) if index % 2 == 0 else None,  # odd ones found by meter id
        updated_at=NOW,
    )


async def test_calls_are_identified_served_once_and_a_stalled_session_is_an_error() -> None:
    settings = CollectorSettings(
        listeners=["dlms-dial-in@tcp://127.0.0.1:0"],
        exchange_timeout_s=1.0,
        dial_in_ident_wait_s=0.3,
        dial_in_idle_timeout_s=20,
    )
    profiles = ProfileCatalog()
    reader = MeterReader(profiles, SecretStore.load(None), exchange_timeout=1.0, session_timeout=30)
    directory = FleetDirectory()
    for i in range(4):
        directory.put(fleet_entry(i))
    directory.put(fleet_entry(5).model_copy(update={"connection": "poll"}))  # not a dial-in meter
    directory.caught_up.set()
    board, other = DialInBoard(), DialInBoard()
    board.caught_up.set()
    now = datetime.now(UTC).replace(microsecond=0)
    for i in range(4):
        for b in (board, other):
            b.apply_work(meter_id(SEED, i).encode(), work(i, f"job-{i}", now=now))
    log = ClaimLog(board, other)
    # Meter 3's job is claimed by the other replica in the same instant, its claim landing first.
    log.ahead[meter_id(SEED, 3).encode()] = claim(3, "other", ["job-3"], now)
    publisher = RecordingPublisher()
    service = DialInService(
        settings,
        profiles,
        reader,
        directory,
        cast(Publisher, publisher),
        cast(AIOKafkaProducer, log),
        board,
    )
    outcomes: list[str] = []
    original = service.serve

    async def serve(conn: object, listener: str) -> str:
        outcome = await original(conn, listener)  # type: ignore[arg-type]
        outcomes.append(outcome)
        return outcome

    service.serve = serve  # type: ignore[method-assign]
    await service.start()
    try:
        port = service._listeners[0].port
        # Meters 0, 1: ident lines; meter 2: silent (identified by its logical device name) and it
        # stalls after the identification and its own association; meter 3: claimed elsewhere;
        # meter 5: not a dial-in meter.
        named = DialInMeters(6, [("127.0.0.1", port)], seed=SEED, ident=True, idle_timeout=5)
        silent = DialInMeters(6, [("127.0.0.1", port)], seed=SEED, ident=False, stall={2: 4}, idle_timeout=5)
        calls = await run_dialer(named, asyncio.Event(), only=[0, 1, 3, 5])
        calls += await run_dialer(silent, asyncio.Event(), only=[2])
        # Meter 0 calls again before any scheduler update: its job is claimed (by this replica) and not re-served.
        calls += await run_dialer(named, asyncio.Event(), only=[0])
    finally:
        await service.close()

    assert sorted(outcomes) == sorted(["served", "served", "claimed-elsewhere", "unknown-meter", "failed", "no-work"])
    results = {r.meter_id: r for r in publisher.results()}
    assert len(publisher.results()) == 3, "one result per job served, none for the second call of meter 0"
    assert results[meter_id(SEED, 0)].status is JobStatus.OK
    assert results[meter_id(SEED, 1)].status is JobStatus.OK
    stalled = results[meter_id(SEED, 2)]
    assert stalled.status is JobStatus.ERROR and stalled.error_kind == "timeout"
    batches = [m for _, _, m in publisher.sent if isinstance(m, ReadingBatch)]
    assert {b.meter_id for b in batches} == {meter_id(SEED, 0), meter_id(SEED, 1)}
    assert all(b.job_id in {"job-0", "job-1"} for b in batches)
    # Every call of a known dial-in meter is reported as a contact; unknown callers are not.
    contacts = sorted(
        (m.meter_id, m.outcome, m.jobs_served) for _, _, m in publisher.sent if isinstance(m, DialInContact)
    )
    assert contacts == [
        (meter_id(SEED, 0), "no-work", 0),
        (meter_id(SEED, 0), "served", 1),
        (meter_id(SEED, 1), "served", 1),
        (meter_id(SEED, 2), "failed", 0),
        (meter_id(SEED, 3), "claimed-elsewhere", 0),
    ]
    by_meter = {(c.index, c.call): c for c in calls}
    assert by_meter[(2, 0)].ended == "stalled"
    assert by_meter[(0, 0)].ended == by_meter[(0, 1)].ended == "hung-up"


async def test_an_iec_meter_that_calls_is_identified_by_its_sign_on_answer_and_read() -> None:
    settings = CollectorSettings(listeners=["iec62056-21-dial-in@tcp://127.0.0.1:0"], exchange_timeout_s=2.0)
    profiles = ProfileCatalog()
    reader = MeterReader(profiles, SecretStore.load(None), exchange_timeout=2.0, session_timeout=30)
    directory = FleetDirectory()
    iec = fleet_entry(4).model_copy(update={"protocol": "iec62056-21", "profile": "generic-iec62056-21", "options": {}})
    directory.put(iec)
    directory.put(fleet_entry(6))  # a DLMS dial-in meter: not served by an IEC listener
    directory.caught_up.set()
    board = DialInBoard()
    board.caught_up.set()
    now = datetime.now(UTC)
    for index in (4, 6):
        pending = job(index, f"iec-{index}", now).model_copy(
            update={"protocol": "iec62056-21", "profile": "generic-iec62056-21", "options": {}, "purposes": ["billing"]}
        )
        board.apply_work(
            meter_id(SEED, index).encode(),
            DialInWork(meter_id=meter_id(SEED, index), jobs=[pending], updated_at=now).model_dump_json().encode(),
        )
    publisher = RecordingPublisher()
    service = DialInService(
        settings,
        profiles,
        reader,
        directory,
        cast(Publisher, publisher),
        cast(AIOKafkaProducer, ClaimLog(board)),
        board,
    )
    await service.start()
    try:
        meters = IecDialInMeters(8, [("127.0.0.1", service._listeners[0].port)], seed=SEED, idle_timeout=5)
        calls = [await meters.call(4), await meters.call(6)]
    finally:
        await service.close()
    (result,) = publisher.results()
    assert result.meter_id == meter_id(SEED, 4) and result.status is JobStatus.OK and result.job_id == "iec-4"
    (batch,) = [m for _, _, m in publisher.sent if isinstance(m, ReadingBatch)]
    assert {s.quantity for s in batch.series} >= {"1-0:1.8.0", "1-0:2.8.0"}
    assert calls[0].ended == "hung-up" and calls[0].answered >= 2  # identification twice, then the readout
    assert calls[1].answered == 1  # identified, then hung up on: the meter is not an IEC dial-in meter


async def test_an_mbus_meter_that_calls_is_identified_by_its_secondary_address_and_read() -> None:
    settings = CollectorSettings(listeners=["mbus-dial-in@tcp://127.0.0.1:0"], exchange_timeout_s=2.0)
    profiles = ProfileCatalog()
    reader = MeterReader(profiles, SecretStore.load(None), exchange_timeout=2.0, session_timeout=30)
    meters = MBusDialInMeters([31, 32], [("127.0.0.1", 1)], idle_timeout=5)
    directory = FleetDirectory()
    board = DialInBoard()
    now = datetime.now(UTC)
    for index, listed in ((0, meters.secondary_address(0)[:8]), (1, meters.secondary_address(1))):
        name = f"MB{index}"
        options = {"secondary_address": meters.secondary_address(index)}
        directory.put(
            fleet_entry(0).model_copy(
                update={"meter_id": name, "protocol": "mbus", "profile": "generic-mbus-heat", "serial": listed}
            )
        )
        pending = job(0, f"mbus-{index}", now).model_copy(
            update={"meter_id": name, "protocol": "mbus", "profile": "generic-mbus-heat", "options": options}
        )
        board.apply_work(
            name.encode(), DialInWork(meter_id=name, jobs=[pending], updated_at=now).model_dump_json().encode()
        )
    directory.caught_up.set()
    board.caught_up.set()
    publisher = RecordingPublisher()
    service = DialInService(
        settings,
        profiles,
        reader,
        directory,
        cast(Publisher, publisher),
        cast(AIOKafkaProducer, ClaimLog(board)),
        board,
    )
    await service.start()
    try:
        meters.targets = [("127.0.0.1", service._listeners[0].port)]
        calls = [await meters.call(0), await meters.call(1)]
    finally:
        await service.close()
    results = {r.meter_id: r for r in publisher.results()}
    assert sorted(results) == ["MB0", "MB1"], "found by the 8 id digits and by the whole secondary address"
    assert all(r.status is JobStatus.OK and r.readings_count > 0 for r in results.values())
    assert [c.ended for c in calls] == ["hung-up", "hung-up"]
