"""The collector's spool: durable through SIGKILL, ordered, bounded without dropping, forwarded over the real broker."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import textwrap
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka.structs import ConsumerRecord

from gxami_collector.app import Collector
from gxami_collector.fleet_cache import FleetDirectory
from gxami_collector.jobs import MeterReader
from gxami_collector.listeners import PushCounters, PushListeners
from gxami_collector.secret_store import SecretStore
from gxami_collector.settings import CollectorSettings
from gxami_collector.spool import SPOOL_FULL, Outgoing, Spool, SpoolError, SpoolPublisher, forward
from gxami_contracts import DeadLetter, FleetEntry, JobResult, JobStatus, ReadingBatch, ReadingValue, ReadJob
from gxami_meterlab.devstack import StackEndpoints
from gxami_meterlab.simulators.dlms import (
    DlmsFleetSimulator,
    meter_id,
    meter_secrets,
    meter_system_title,
    push_message,
)
from gxami_runtime.kafka import DeadLetters, ensure_topics, make_consumer, make_producer
from gxami_runtime.settings import ServiceSettings
from gxcore.profiles import ProfileCatalog
from gxcore.secrets import Secret


def _rec(i: int, topic: str = "ami.readings", size: int = 10) -> Outgoing:
    return Outgoing(topic, f"k{i % 3}".encode(), f"{i:0{size}d}".encode())


async def test_records_come_back_in_order_after_a_reopen_and_leave_only_when_deleted(tmp_path: Path) -> None:
    spool = await Spool.open(tmp_path, max_bytes=1 << 20)
    await spool.put([_rec(i) for i in range(5)])
    await spool.put([_rec(i) for i in range(5, 8)])
    first = await spool.head(3)
    await spool.delete(first)
    await spool.close()
    again = await Spool.open(tmp_path, max_bytes=1 << 20)
    try:
        rest = await again.head(100)
        assert [s.record for s in rest] == [_rec(i) for i in range(3, 8)]
        assert again.records == 5
        assert again.bytes == sum(_rec(i).size for i in range(3, 8))
    finally:
        await again.close()


def test_what_a_put_returned_for_survives_sigkill(tmp_path: Path) -> None:
    child = textwrap.dedent(
        f"""
        import asyncio, os, signal, sys
        from pathlib import Path
        from gxami_collector.spool import Outgoing, Spool

        async def main() -> None:
            spool = await Spool.open(Path({str(tmp_path)!r}), max_bytes=1 << 20)
            for i in range(50):
                await spool.put([Outgoing("ami.readings", b"m", str(i).encode())])
            print("put", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)  # no close, no flush, no atexit

        asyncio.run(main())
        """
    )
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert done.stdout.strip() == "put"

    async def read_back() -> list[bytes]:
        spool = await Spool.open(tmp_path, max_bytes=1 << 20)  # the dead process's lock is gone with it
        try:
            return [s.record.value for s in await spool.head(100)]
        finally:
            await spool.close()

    assert asyncio.run(read_back()) == [str(i).encode() for i in range(50)]


async def test_a_second_collector_on_the_same_spool_is_refused(tmp_path: Path) -> None:
    spool = await Spool.open(tmp_path, max_bytes=1 << 20)
    try:
        with pytest.raises(SpoolError, match="in use by another collector"):
            await Spool.open(tmp_path, max_bytes=1 << 20)
    finally:
        await spool.close()


async def test_high_water_raises_the_alarm_and_the_bound_makes_puts_wait_not_drop(tmp_path: Path) -> None:
    spool = await Spool.open(tmp_path, max_bytes=10_000, high_water=0.5)
    try:
        await spool.put([_rec(i, size=998) for i in range(4)])  # 4,000 bytes (keys 2 bytes each)
        assert not spool.full
        assert SPOOL_FULL._value.get() == 0
        await spool.put([_rec(4, size=998)])
        assert spool.full, "5,000 of 10,000 bytes is at the 50 % mark"
        assert SPOOL_FULL._value.get() == 1
        await spool.put([_rec(i, size=998) for i in range(5, 10)])  # exactly at the bound: taken
        late = asyncio.create_task(spool.put([_rec(10, size=998)]))
        await asyncio.sleep(0.3)
        assert not late.done(), "a put over the bound waits for room"
        assert spool.records == 10
        await spool.delete(await spool.head(1))
        await asyncio.wait_for(late, 5)
        values = [s.record.value for s in await spool.head(100)]
        assert values == [_rec(i, size=998).value for i in range(1, 11)], "nothing dropped, order kept"
    finally:
        await spool.close()


async def test_a_put_bigger_than_the_bound_is_taken_by_an_empty_spool(tmp_path: Path) -> None:
    spool = await Spool.open(tmp_path, max_bytes=4096)
    try:
        await asyncio.wait_for(spool.put([_rec(0, size=10_000)]), 5)
        assert spool.records == 1
    finally:
        await spool.close()


@pytest.mark.integration
async def test_forward_sends_in_order_results_after_readings_and_empties_the_spool(
    stack: StackEndpoints, topic_prefix: str, tmp_path: Path
) -> None:
    names = ("ami.readings", "ami.job-results")
    s = ServiceSettings(
        kafka_bootstrap=stack.kafka_bootstrap,
        kafka_enable_idempotence=False,
        topic_overrides={n: f"{topic_prefix}{n}" for n in names},
    )
    await ensure_topics(s, list(names))
    spool = await Spool.open(tmp_path, max_bytes=1 << 20)
    producer = make_producer(s)
    await producer.start()
    forwarder = asyncio.create_task(forward(spool, producer, s.topic, last_topics=frozenset({"ami.job-results"})))
    out = make_consumer(s, f"{topic_prefix}check", *(s.topic(n) for n in names))
    await out.start()
    got: list[tuple[str, bytes, bytes, int]] = []
    try:
        for i in range(0, 300, 3):  # a "job": two readings records, then its result, like the collector puts them
            await spool.put(
                [
                    Outgoing("ami.readings", f"m{i % 7}".encode(), f"r{i}".encode()),
                    Outgoing("ami.readings", f"m{i % 7}".encode(), f"r{i + 1}".encode()),
                    Outgoing("ami.job-results", f"m{i % 7}".encode(), f"j{i + 2}".encode()),
                ]
            )
        deadline = asyncio.get_running_loop().time() + 60
        while len(got) < 300 and asyncio.get_running_loop().time() < deadline:
            for recs in (await out.getmany(timeout_ms=300)).values():
                got += [(r.topic, r.key or b"", r.value or b"", r.timestamp) for r in recs]
        await asyncio.wait_for(spool.emptied(), 10)
    finally:
        forwarder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await forwarder
        await out.stop()
        await producer.stop()
        await spool.close()
    assert len(got) == 300
    by_key: dict[bytes, list[int]] = {}
    for _, key, value, _ in got:
        by_key.setdefault(key, []).append(int(value[1:]))
    for key, seq in by_key.items():
        readings = [n for n in seq if n % 3 != 2]
        results = [n for n in seq if n % 3 == 2]
        assert readings == sorted(readings), key  # per key (partition): spool order
        assert results == sorted(results), key
    sent_at = {value: ts for _, _, value, ts in got}
    for i in range(0, 300, 3):
        assert sent_at[f"j{i + 2}".encode()] >= sent_at[f"r{i + 1}".encode()], "a job result after its readings"


def _job(meter_id: str, port: int) -> ReadJob:
    now = datetime.now(UTC)
    url = f"tcp://127.0.0.1:{port}"
    return ReadJob(
        job_id=uuid.uuid4().hex,
        meter_id=meter_id,
        link_id=url,
        protocol="dlms",
        url=url,
        profile="generic-dlms",
        options={"authentication": "low"},
        purposes=["billing"],
        issued_at=now,
        deadline=now + timedelta(minutes=5),
    )


@pytest.mark.integration
async def test_a_site_collector_takes_only_its_sites_jobs_and_publishes_through_its_spool(
    stack: StackEndpoints, topic_prefix: str, tmp_path: Path
) -> None:
    names = ("ami.read-jobs", "ami.readings", "ami.job-results", "ami.events", "ami.dead-letter")
    edge = CollectorSettings(
        kafka_bootstrap=stack.kafka_bootstrap,
        kafka_enable_idempotence=False,
        kafka_session_timeout_ms=2000,
        kafka_heartbeat_interval_ms=500,
        topic_overrides={n: f"{topic_prefix}{n}" for n in names},
        site="north",
        spool_dir=tmp_path / "spool",
        consumer_group=f"{topic_prefix}c",
    )
    assert edge.jobs_topic() == f"{topic_prefix}ami.read-jobs.north"
    assert edge.jobs_group() == f"{topic_prefix}c.north"
    await ensure_topics(edge, list(names))
    reader = MeterReader(
        ProfileCatalog(), SecretStore(default={"password": Secret("pw")}), exchange_timeout=2, session_timeout=30
    )
    async with DlmsFleetSimulator(2, seed=9, authentication="low", password="pw") as sim:
        north, central = (_job(m.meter_id, m.port) for m in sim.meters)
        spool = await Spool.open(tmp_path / "spool", max_bytes=1 << 20)
        stop = asyncio.Event()
        task = asyncio.create_task(Collector(edge, reader, spool).run(stop))
        producer = make_producer(edge)
        await producer.start()
        out = make_consumer(edge, f"{topic_prefix}check", edge.topic("ami.job-results"), edge.topic("ami.readings"))
        await out.start()
        results: dict[str, JobResult] = {}
        batches: list[ReadingBatch] = []
        try:
            await producer.send_and_wait(edge.jobs_topic(), north.model_dump_json().encode(), key=b"a")
            await producer.send_and_wait(edge.topic("ami.read-jobs"), central.model_dump_json().encode(), key=b"b")
            deadline = asyncio.get_running_loop().time() + 60
            while not results and asyncio.get_running_loop().time() < deadline:
                for tp, recs in (await out.getmany(timeout_ms=300)).items():
                    for r in recs:
                        if tp.topic == edge.topic("ami.job-results"):
                            jr = JobResult.model_validate_json(r.value or b"")
                            results[jr.meter_id] = jr
                        else:
                            batches.append(ReadingBatch.model_validate_json(r.value or b""))
            await asyncio.sleep(2)  # the central job would have been read by now
            for tp, recs in (await out.getmany(timeout_ms=500)).items():
                for r in recs:
                    if tp.topic == edge.topic("ami.job-results"):
                        jr = JobResult.model_validate_json(r.value or b"")
                        results[jr.meter_id] = jr
        finally:
            await out.stop()
            await producer.stop()
            stop.set()
            await asyncio.wait_for(task, 30)
            left = spool.records
            await spool.close()
    assert set(results) == {north.meter_id}, "the site collector read its site's job only"
    assert results[north.meter_id].status is JobStatus.OK
    assert [b.meter_id for b in batches] == [north.meter_id]
    assert left == 0, "everything spooled was acknowledged and deleted"


async def test_dead_letters_and_push_readings_go_through_the_spool_with_a_spool_publisher(tmp_path: Path) -> None:
    spool = await Spool.open(tmp_path, max_bytes=1 << 20)
    try:
        publisher = SpoolPublisher(spool)
        raw = b'{"not": "a job"}'
        record: ConsumerRecord[bytes, bytes] = ConsumerRecord(
            "ami.read-jobs.north", 3, 17, 0, 0, b"link-1", raw, None, 6, len(raw), ()
        )
        await DeadLetters(publisher, "collector").send(record, "job_id: field required")
        now = datetime.now(UTC)
        batch = ReadingBatch.of(
            batch_id="b1",
            meter_id="M1",
            collected_at=now,
            readings=[ReadingValue(quantity="1-0:1.8.0", ts=now, value=1.5, unit="kWh")],
        )
        await publisher.send_many("ami.readings", [("M1", batch)])
        head = await spool.head(10)
    finally:
        await spool.close()
    assert [(s.record.topic, s.record.key) for s in head] == [("ami.dead-letter", b"link-1"), ("ami.readings", b"M1")]
    letter = DeadLetter.model_validate_json(head[0].record.value)
    assert (letter.source_topic, letter.offset, letter.reason) == ("ami.read-jobs.north", 17, "job_id: field required")
    assert ReadingBatch.model_validate_json(head[1].record.value) == batch


class _FullSpool(Spool):
    """A spool that counts how often the collector asks whether it is full (one ask per loop round)."""

    asked = 0

    @property
    def full(self) -> bool:
        type(self).asked += 1
        return super().full


class _Consumer:
    def __init__(self) -> None:
        self.fetches = 0
        self.fetched = asyncio.Event()

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[object, list[object]]:
        del max_records
        self.fetches += 1
        self.fetched.set()
        await asyncio.sleep(timeout_ms / 1000)
        return {}


async def test_above_the_high_water_mark_the_collector_takes_no_new_jobs_until_the_spool_drains(tmp_path: Path) -> None:
    spool = await _FullSpool.open(tmp_path, max_bytes=10_000, high_water=0.5)
    consumer = _Consumer()
    stop = asyncio.Event()
    try:
        await spool.put([_rec(i, size=998) for i in range(6)])  # 6,000 of 10,000 bytes: above the mark
        assert spool.full
        assert SPOOL_FULL._value.get() == 1, "the alarm is raised"
        settings = CollectorSettings(spool_dir=tmp_path)
        reader = MeterReader(ProfileCatalog(), SecretStore(), exchange_timeout=1, session_timeout=5)
        collector = Collector(settings, reader, spool)
        _FullSpool.asked = 0
        loop = asyncio.create_task(
            collector._loop(consumer, None, None, stop)  # type: ignore[arg-type]  # fetches nothing: no publisher needed
        )
        while _FullSpool.asked < 3:  # three rounds of the loop, each finding the spool full
            assert not loop.done()
            await asyncio.sleep(0.1)
        assert consumer.fetches == 0, "no jobs fetched while the spool is above its high-water mark"
        await spool.delete(await spool.head(2))  # the uplink drains two records: 4,000 bytes left
        assert not spool.full
        assert SPOOL_FULL._value.get() == 0, "the alarm clears"
        await asyncio.wait_for(consumer.fetched.wait(), 10)
        assert spool.records == 4, "nothing was dropped"
    finally:
        stop.set()
        await asyncio.wait_for(loop, 10)
        await spool.close()


async def test_an_edges_push_listener_puts_what_it_serves_into_the_spool(tmp_path: Path) -> None:
    seed, at = 5, datetime(2026, 11, 26, 3, 15, tzinfo=UTC)
    settings = CollectorSettings(
        listeners=["dlms-push@udp://127.0.0.1:0"],
        push_counters_file=tmp_path / "c.json",
        kafka_bootstrap="127.0.0.1:1",  # no broker at all: the spool holds it
    )
    secrets = SecretStore(meters={meter_id(seed, 0): {k: Secret(v) for k, v in meter_secrets(seed, 0).items()}})
    directory = FleetDirectory()
    directory.put(
        FleetEntry(
            meter_id=meter_id(seed, 0),
            protocol="dlms",
            url="tcp://127.0.0.1:4059",
            link_id="push:0",
            profile="generic-dlms",
            connection="push",
            interval_s=900,
            options={"authentication": "high-gmac", "client": "1", "security_policy": "authenticated-encrypted"},
            system_title=meter_system_title(seed, 0).hex(),
            updated_at=at,
        )
    )
    directory.caught_up.set()
    spool = await Spool.open(tmp_path / "spool", max_bytes=1 << 20)
    publisher = SpoolPublisher(spool)
    listeners = PushListeners(
        settings,
        ProfileCatalog(),
        secrets,
        directory,
        publisher,
        DeadLetters(publisher, "collector"),
        PushCounters(settings.push_counters_file),
    )
    await listeners.start()
    try:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, remote_addr=("127.0.0.1", listeners._udp[0].port)
        )
        transport.sendto(push_message(seed, 0, at, policy="authenticated-encrypted", invocation_counter=3))
        transport.close()
        deadline = loop.time() + 10
        while not spool.records and loop.time() < deadline:
            await asyncio.sleep(0.02)
        head = await spool.head(10)
    finally:
        await listeners.close()
        await spool.close()
    assert [(s.record.topic, s.record.key) for s in head] == [("ami.readings", meter_id(seed, 0).encode())]
    assert ReadingBatch.model_validate_json(head[0].record.value).meter_id == meter_id(seed, 0)


@pytest.fixture(scope="module")
def catalog() -> ProfileCatalog:
    """The built-in profiles, loaded outside the event loop (loading them is blocking file I/O)."""
    return ProfileCatalog()


async def test_an_edge_with_listeners_starts_without_a_broker_and_a_central_one_does_not(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, catalog: ProfileCatalog
) -> None:
    from gxami_collector.listeners import serve_with_listeners
    from gxami_runtime.service import StartupError

    settings = CollectorSettings(
        listeners=["dlms-push@tcp://127.0.0.1:0", "dlms-dial-in@tcp://127.0.0.1:0"],
        push_counters_file=tmp_path / "c.json",
        kafka_bootstrap="127.0.0.1:1",  # nothing listens there: the broker is away
        kafka_request_timeout_ms=2000,
    )
    reader = MeterReader(catalog, SecretStore(), exchange_timeout=5, session_timeout=30)
    jobs_ran = asyncio.Event()

    async def jobs(stop: asyncio.Event) -> None:
        jobs_ran.set()
        await stop.wait()

    # Central (no spool): an absent broker is still the one-line start error.
    with pytest.raises(StartupError, match=r"127\.0\.0\.1:1"):
        await serve_with_listeners(settings, jobs, catalog, SecretStore(), asyncio.Event(), dial_in=reader)

    spool = await Spool.open(tmp_path / "spool", max_bytes=1 << 20)
    stop = asyncio.Event()
    caplog.set_level("WARNING", logger="gxami.collector.listeners")
    task = asyncio.create_task(
        serve_with_listeners(
            settings, jobs, catalog, SecretStore(), stop, dial_in=reader, spooled=SpoolPublisher(spool)
        )
    )
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while "push listeners serve into the spool, dial-in waits" not in caplog.text:
            assert not task.done(), task.exception()
            assert loop.time() < deadline, "no retry of the broker logged"
            await asyncio.sleep(0.05)
        assert jobs_ran.is_set(), "the job loop runs meanwhile"
        assert not task.done(), "an edge with listeners waits for its broker instead of exiting"
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)  # stops cleanly, no error
        await spool.close()
