"""Push listener pieces called directly: the fleet directory, replay counters, listener specs, and
serving real simulator pushes (ciphered, replayed, unknown, alarms) over a real TCP listener."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import pytest

from gxami_collector.fleet_cache import FleetDirectory
from gxami_collector.listeners import ListenerSpec, PushCounters, PushListeners
from gxami_collector.secret_store import SecretStore
from gxami_collector.settings import CollectorSettings
from gxami_contracts import FleetEntry, Message, MeterRegistration, ReadingBatch
from gxami_meterlab.simulators.dlms import dedicated_key, meter_id, meter_secrets, meter_system_title, push_message
from gxami_runtime.kafka import DeadLetters, Publisher
from gxcore.errors import ConfigurationError
from gxcore.profiles import ProfileCatalog
from gxcore.secrets import Secret

SEED = 5
AT = datetime(2026, 11, 26, 3, 15, tzinfo=UTC)


def entry(index: int, **changes: object) -> FleetEntry:
    fields: dict[str, object] = {
        "meter_id": meter_id(SEED, index),
        "protocol": "dlms",
        "url": "tcp://127.0.0.1:4059",
        "link_id": f"push:{index}",
        "profile": "generic-dlms",
        "connection": "push",
        "interval_s": 900,
        "options": {"authentication": "high-gmac", "client": "1", "security_policy": "authenticated-encrypted"},
        "system_title": meter_system_title(SEED, index).hex(),
        "serial": meter_id(SEED, index),
        "updated_at": AT,
        **changes,
    }
    return FleetEntry.model_validate(fields)


def test_the_directory_finds_meters_by_each_identity_and_forgets_them_on_a_tombstone() -> None:
    d = FleetDirectory()
    d.apply(b"x", entry(1).model_dump_json().encode())
    one = meter_id(SEED, 1)
    assert d.find(meter_system_title(SEED, 1).hex()) == d.find(one) == d.get(one)
    d.put(entry(1, system_title="00" * 8))  # a new title replaces the old one
    assert d.find(meter_system_title(SEED, 1).hex()) is None
    assert d.find("00" * 8) is not None
    d.apply(one.encode(), None)
    assert d.find(one) is None
    assert len(d) == 0


def test_an_identity_two_meters_claim_matches_neither() -> None:
    d = FleetDirectory()
    d.put(entry(1, serial="SHARED"))
    d.put(entry(2, serial="SHARED"))
    assert d.find("SHARED") is None
    assert d.find(meter_id(SEED, 2)) is None  # its serial was the shared one
    assert d.find(meter_system_title(SEED, 2).hex()) is not None


def test_replay_counters_refuse_what_is_not_above_the_last_and_hold_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "counters.json"
    c = PushCounters(path)
    assert c.accept("aa" * 8, 10)
    assert not c.accept("aa" * 8, 10)
    assert not c.accept("aa" * 8, 9)
    assert c.accept("aa" * 8, 11)
    assert c.accept("bb" * 8, 1)
    c.flush()
    again = PushCounters(path)
    assert not again.accept("aa" * 8, 11)
    assert again.accept("aa" * 8, 12)
    path.write_text("[1, 2]")
    with pytest.raises(ConfigurationError, match="counters"):
        PushCounters(path)


@pytest.mark.parametrize(
    "text",
    [
        "tcp://0.0.0.0:4059",
        "dlms-push@http://h:1",
        "dlms-push@tcp://h",
        "other@tcp://h:1",
        "dlms-push@tcp://h:1?profile=",
        "dlms-push@tcp://h:1?key=00",
    ],
)
def test_a_listener_spec_that_does_not_parse_is_refused(text: str) -> None:
    with pytest.raises(ConfigurationError, match="listener"):
        ListenerSpec.parse(text)


def test_listener_specs_parse() -> None:
    assert str(ListenerSpec.parse(" dlms-push@udp://0.0.0.0:4059 ")) == "dlms-push@udp://0.0.0.0:4059"
    assert ListenerSpec.parse("dlms-push@tcp://0.0.0.0:4060?profile=han-kaifa").profile == "han-kaifa"
    s = CollectorSettings(listeners="dlms-push@tcp://127.0.0.1:0, dlms-push@udp://127.0.0.1:0")  # type: ignore[arg-type]
    assert len(s.listeners) == 2


class RecordingPublisher:
    """Stands in for the broker: what would be published, by topic."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Message]] = []

    async def send(self, logical_topic: str, key: str, message: Message) -> None:
        self.sent.append((logical_topic, key, message))

    async def send_many(self, logical_topic: str, items: Sequence[tuple[str, Message]]) -> None:
        self.sent.extend((logical_topic, k, m) for k, m in items)


async def _push(port: int, frame: bytes) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(frame)
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def test_pushes_are_served_replays_refused_and_unknown_meters_dead_lettered(tmp_path: Path) -> None:
    settings = CollectorSettings(
        listeners=["dlms-push@tcp://127.0.0.1:0"],
        push_counters_file=tmp_path / "c.json",
        push_idle_timeout_s=2,
        kafka_bootstrap="127.0.0.1:1",
    )
    secrets = SecretStore(
        meters={meter_id(SEED, i): {k: Secret(v) for k, v in meter_secrets(SEED, i).items()} for i in range(2)}
    )
    publisher = RecordingPublisher()
    directory = FleetDirectory()
    for i in range(2):
        directory.put(entry(i))
    directory.caught_up.set()
    listeners = PushListeners(
        settings,
        ProfileCatalog(),
        secrets,
        directory,
        cast(Publisher, publisher),
        DeadLetters(cast(Publisher, publisher), "collector"),
        PushCounters(settings.push_counters_file),
    )
    stop = asyncio.Event()
    run = asyncio.create_task(listeners.run(stop))
    try:
        while not listeners._tcp:
            await asyncio.sleep(0.01)
        port = listeners._tcp[0].port
        first = push_message(SEED, 0, AT, policy="authenticated-encrypted", invocation_counter=100)
        await _push(port, first + push_message(SEED, 1, AT, policy="authenticated-encrypted", invocation_counter=7))
        await _push(port, first)  # replayed
        await _push(port, b"garbage that is no DLMS frame at all" * 3)
        await _push(port, push_message(SEED, 9, AT, policy="authenticated-encrypted"))  # nobody's meter
        later = AT + timedelta(minutes=15)
        await _push(port, push_message(SEED, 0, later, policy="authenticated-encrypted", invocation_counter=101))
        for _ in range(300):
            if sum(t == "ami.dead-letter" for t, _, _ in publisher.sent) and len(publisher.sent) >= 4:
                break
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        await run
    batches = [m for t, _, m in publisher.sent if t == "ami.readings"]
    assert all(isinstance(b, ReadingBatch) for b in batches)
    got = sorted((b.meter_id, s.ts[0]) for b in cast(list[ReadingBatch], batches) for s in b.series[:1])
    assert got == [(meter_id(SEED, 0), AT), (meter_id(SEED, 0), later), (meter_id(SEED, 1), AT)]
    letters = [m for t, _, m in publisher.sent if t == "ami.dead-letter"]
    assert len(letters) == 1
    letter = json.loads(letters[0].model_dump_json())
    assert "unknown-meter" in letter["reason"]
    assert meter_system_title(SEED, 9).hex() in letter["reason"]
    assert json.loads((tmp_path / "c.json").read_text())[meter_system_title(SEED, 0).hex()] == 101


async def test_a_push_in_a_udp_datagram_is_served(tmp_path: Path) -> None:
    settings = CollectorSettings(
        listeners=["dlms-push@udp://127.0.0.1:0"],
        push_counters_file=tmp_path / "c.json",
        push_idle_timeout_s=2,
        kafka_bootstrap="127.0.0.1:1",
    )
    secrets = SecretStore(meters={meter_id(SEED, 0): {k: Secret(v) for k, v in meter_secrets(SEED, 0).items()}})
    publisher = RecordingPublisher()
    directory = FleetDirectory()
    directory.put(entry(0))
    directory.caught_up.set()
    listeners = PushListeners(
        settings,
        ProfileCatalog(),
        secrets,
        directory,
        cast(Publisher, publisher),
        DeadLetters(cast(Publisher, publisher), "collector"),
        PushCounters(settings.push_counters_file),
    )
    await listeners.start()
    try:
        port = listeners._udp[0].port
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, remote_addr=("127.0.0.1", port))
        transport.sendto(b"\x00\x01garbage")  # a bad datagram costs only itself
        transport.sendto(push_message(SEED, 0, AT, policy="authenticated-encrypted", invocation_counter=3))
        later = AT + timedelta(minutes=15)
        hdlc = push_message(SEED, 0, later, policy="authenticated-encrypted", invocation_counter=4, interface="hdlc")
        transport.sendto(hdlc)
        ded = push_message(
            SEED,
            0,
            later + timedelta(minutes=15),
            policy="authenticated-encrypted",
            invocation_counter=5,
            dedicated_key=dedicated_key(SEED, 0),
        )
        transport.sendto(ded)
        transport.close()
        for _ in range(200):
            if len(publisher.sent) >= 3:
                break
            await asyncio.sleep(0.02)
    finally:
        await listeners.close()
    assert [(t, k) for t, k, _ in publisher.sent] == [("ami.readings", meter_id(SEED, 0))] * 3
    stamps = sorted(cast(ReadingBatch, m).series[0].ts[0] for _, _, m in publisher.sent)
    assert stamps == [AT, later, later + timedelta(minutes=15)], "wrapper, HDLC and general-ded datagrams"


def test_an_accepted_counter_is_taken_back_when_its_push_was_not_published(tmp_path: Path) -> None:
    c = PushCounters(tmp_path / "c.json")
    assert c.accept("aa" * 8, 5)
    assert c.accept("aa" * 8, 6)
    c.undo("aa" * 8, 6, 5)
    assert c.accept("aa" * 8, 6), "the same push sent again is not a replay"
    c.undo("aa" * 8, 5, 4)  # a later counter came since: nothing is taken back
    assert c.last("aa" * 8) == 6


async def test_an_unknown_meter_is_served_and_its_registration_asked_for_with_auto_register(tmp_path: Path) -> None:
    settings = CollectorSettings(
        listeners=["dlms-push@tcp://127.0.0.1:0"],
        push_counters_file=tmp_path / "c.json",
        push_idle_timeout_s=2,
        push_auto_register="generic-dlms",
        kafka_bootstrap="127.0.0.1:1",
    )
    publisher = RecordingPublisher()
    directory = FleetDirectory()
    directory.put(entry(1, serial="SHARED"))
    directory.put(entry(2, serial="SHARED"))
    directory.caught_up.set()
    listeners = PushListeners(
        settings,
        ProfileCatalog(),
        SecretStore(default={k: Secret(v) for k, v in meter_secrets(SEED, 8).items()}),  # keys for strangers
        directory,
        cast(Publisher, publisher),
        DeadLetters(cast(Publisher, publisher), "collector"),
        PushCounters(settings.push_counters_file),
    )
    stop = asyncio.Event()
    run = asyncio.create_task(listeners.run(stop))
    stranger = meter_id(SEED, 7)
    try:
        while not listeners._tcp:
            await asyncio.sleep(0.01)
        port = listeners._tcp[0].port
        await _push(port, push_message(SEED, 7, AT) + push_message(SEED, 7, AT + timedelta(minutes=15)))
        await _push(port, push_message(SEED, 8, AT, policy="authenticated-encrypted", invocation_counter=3))
        assert listeners.lookup("SHARED") is None, "an identity two meters claim registers no third"
        for _ in range(300):
            if sum(t == "ami.registrations" for t, _, _ in publisher.sent) >= 2 and len(publisher.sent) >= 5:
                break
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        await run
    registrations = [cast(MeterRegistration, m) for t, _, m in publisher.sent if t == "ami.registrations"]
    assert len(registrations) == 2, "asked once per meter, though one pushed twice"
    reg, ciphered = sorted(registrations, key=lambda r: r.system_title or "")
    title = meter_system_title(SEED, 8).hex()
    assert (ciphered.meter_id, ciphered.system_title, ciphered.serial) == (title, title, None)
    assert ciphered.options == {"authentication": "high-gmac", "security_policy": "authenticated-encrypted"}
    assert (reg.meter_id, reg.profile, reg.serial, reg.system_title, reg.connection) == (
        stranger,
        "generic-dlms",
        stranger,
        None,
        "push",
    )
    batches = cast(list[ReadingBatch], [m for t, _, m in publisher.sent if t == "ami.readings"])
    assert sorted((b.meter_id, b.series[0].ts[0]) for b in batches) == [
        (title, AT),
        (stranger, AT),
        (stranger, AT + timedelta(minutes=15)),
    ]
    assert directory.find(stranger) is not None


async def test_a_han_listener_reads_bare_lists_with_the_profile_it_names(tmp_path: Path) -> None:
    settings = CollectorSettings(
        listeners=["dlms-push@tcp://127.0.0.1:0?profile=han-kaifa"],
        push_counters_file=tmp_path / "c.json",
        push_idle_timeout_s=2,
        kafka_bootstrap="127.0.0.1:1",
    )
    publisher = RecordingPublisher()
    directory = FleetDirectory()
    directory.put(entry(3, profile="han-kaifa", options={"authentication": "none"}, system_title=None))
    directory.caught_up.set()
    listeners = PushListeners(
        settings,
        ProfileCatalog(),
        SecretStore(),
        directory,
        cast(Publisher, publisher),
        DeadLetters(cast(Publisher, publisher), "collector"),
        PushCounters(settings.push_counters_file),
    )
    await listeners.start()
    try:
        await _push(listeners._tcp[0].port, push_message(SEED, 3, AT, han="kaifa"))
        for _ in range(200):
            if publisher.sent:
                break
            await asyncio.sleep(0.02)
    finally:
        await listeners.close()
    (batch,) = [cast(ReadingBatch, m) for t, _, m in publisher.sent if t == "ami.readings"]
    assert batch.meter_id == meter_id(SEED, 3)
    # The Kaifa list 3 (KFM_001): energies, powers, three phases of current and voltage.
    quantities = {s.quantity for s in batch.series}
    assert quantities >= {"1-0:1.8.0", "1-0:2.8.0", "1-0:1.7.0", "1-0:32.7.0", "1-0:31.7.0", "1-0:72.7.0", "1-0:4.8.0"}
    with pytest.raises(ConfigurationError, match="profile"):
        PushListeners(
            CollectorSettings(listeners=["dlms-push@tcp://127.0.0.1:0?profile=no-such"], kafka_bootstrap="127.0.0.1:1"),
            ProfileCatalog(),
            SecretStore(),
            directory,
            cast(Publisher, publisher),
            DeadLetters(cast(Publisher, publisher), "collector"),
            PushCounters(settings.push_counters_file),
        )
