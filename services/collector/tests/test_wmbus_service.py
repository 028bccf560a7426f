"""wM-Bus receiver pieces called directly: receiver specs, address keys, the intake of heard telegrams
(match, decrypt, map, dedupe, unknown IDs, wrong keys), and the receivers over a real TCP feed."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from gxami_collector.fleet_cache import FleetDirectory
from gxami_collector.secret_store import SecretStore
from gxami_collector.settings import CollectorSettings
from gxami_collector.spool import Spool
from gxami_collector.wmbus_service import (
    ReceiverSpec,
    ReceiverState,
    TelegramIntake,
    WMBusReceivers,
    address_keys,
    with_wmbus_receivers,
)
from gxami_contracts import FleetEntry, ReadingBatch
from gxami_meterlab.simulators.wmbus import MANUFACTURER, WMBusFeedServer, WMBusTelegramGenerator, volume_litres
from gxcore.errors import ConfigurationError
from gxcore.profiles import ProfileCatalog
from gxcore.protocols.mbus.frame import manufacturer_value
from gxcore.protocols.wmbus.frame import strip_crcs
from gxcore.protocols.wmbus.heard import HeardTelegram, hear
from gxcore.protocols.wmbus.receivers import ReceivedFrame
from gxcore.secrets import Secret

SEED = 9
AT = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
GEN = WMBusTelegramGenerator(SEED, 6)


def entry(index: int, wmbus_id: str | None = None, **changes: object) -> FleetEntry:
    fields: dict[str, object] = {
        "meter_id": f"WM{index:03d}",
        "protocol": "wmbus",
        "url": "tcp://127.0.0.1:2000",
        "link_id": "tcp://127.0.0.1:2000",
        "profile": "generic-wmbus-water",
        "connection": "push",
        "interval_s": 900,
        "purposes": ["billing", "diagnostics"],
        "wmbus_id": wmbus_id or GEN.meters[index].id,
        "updated_at": AT,
        **changes,
    }
    return FleetEntry.model_validate(fields)


def secrets(wrong: int | None = None) -> SecretStore:
    keys = {}
    for m in GEN.meters:
        if m.key is not None:
            keys[f"WM{m.index:03d}"] = {"key": Secret((bytes(16) if m.index == wrong else m.key).hex())}
    return SecretStore(meters=keys)


def heard(index: int, instant: datetime, *, crc: bool = False, offset: int = 0) -> HeardTelegram:
    raw = GEN.telegram(index, instant, with_crc=crc)
    return hear(ReceivedFrame(raw, offset, "auto"), 0.0)


def intake(directory: FleetDirectory, store: SecretStore | None = None) -> TelegramIntake:
    return TelegramIntake(directory, ProfileCatalog(), store or secrets())


def test_receiver_specs_parse_and_refuse_with_the_reason() -> None:
    spec = ReceiverSpec.parse("tcp://10.1.2.3:2000?framing=lfield")
    assert (spec.framing, spec.rssi, spec.name) == ("lfield", True, "tcp://10.1.2.3:2000")
    serial = ReceiverSpec.parse("serial:///dev/ttyUSB0?framing=amber&rssi=false&baud=9600")
    assert (serial.framing, serial.rssi, serial.name) == ("amber", False, "serial:///dev/ttyUSB0")
    assert ReceiverSpec.parse("tcp://gw:1").framing == "hex"
    for bad, why in [
        ("udp://10.1.2.3:2000", "tcp://host:port"),
        ("tcp://10.1.2.3", "host and port"),
        ("tcp://10.1.2.3:2000?framing=morse", "framing must be one of"),
        ("tcp://10.1.2.3:2000?colour=red", "unknown parameters ['colour']"),
        ("tcp://user:hunter2@10.1.2.3:2000", "credentials"),
        ("serial://?framing=hex", "device path"),
        ("serial:///dev/ttyUSB0?rssi=maybe", "rssi must be"),
    ]:
        with pytest.raises(ConfigurationError) as caught:
            ReceiverSpec.parse(bad)
        assert why in caught.value.reason
        assert "hunter2" not in str(caught.value)
    with pytest.raises(ValidationError) as refused:
        CollectorSettings(wmbus_receivers="tcp://127.0.0.1:2000,tcp://127.0.0.1:2001?framing=x")
    assert "framing must be one of" in str(refused.value)
    ok = CollectorSettings(wmbus_receivers="tcp://127.0.0.1:2000, serial:///dev/ttyUSB0?framing=im871a")
    assert len(ok.wmbus_receivers) == 2


def test_address_keys_run_from_the_full_address_to_the_bare_id() -> None:
    m = GEN.meters[0]
    keys = address_keys(strip_crcs(GEN.telegram(0, AT), crc="absent"))
    assert keys == [f"{MANUFACTURER}{m.id}0107", f"{MANUFACTURER}{m.id}", m.id]


def test_a_telegram_is_matched_decrypted_mapped_and_stamped_with_the_meter_clock() -> None:
    d = FleetDirectory()
    d.put(entry(0))  # ID alone
    d.put(entry(1, f"{MANUFACTURER}{GEN.meters[1].id}"))  # manufacturer and ID
    d.put(entry(2, f"{MANUFACTURER}{GEN.meters[2].id}0107"))  # the full address
    take = intake(d)
    for index in range(3):
        state = ReceiverState(ReceiverSpec.parse("tcp://127.0.0.1:1"))
        taken = take.take(heard(index, AT + timedelta(seconds=17)), now=0.0, wall=AT + timedelta(hours=1), state=state)
        assert taken.outcome == "published", taken
        batch = taken.batch
        assert isinstance(batch, ReadingBatch)
        assert batch.meter_id == f"WM{index:03d}"
        volume = next(s for s in batch.series if s.quantity == "8-0:1.0.0")
        assert volume.ts == [AT]  # the telegram's clock (minute resolution), not when it was heard
        assert volume.values == [pytest.approx(volume_litres(SEED, index, AT + timedelta(seconds=17)) / 1000)]
        flags = next(s for s in batch.series if s.quantity == "8-0:97.97.0")
        assert flags.values == [0]


def test_duplicates_are_dropped_unknown_ids_tallied_and_a_wrong_key_counted_not_remembered() -> None:
    d = FleetDirectory()
    for index in range(4):
        d.put(entry(index))
    d.put(entry(5, connection="poll"))  # polled by its jobs: not served here
    state = ReceiverState(ReceiverSpec.parse("tcp://127.0.0.1:1"))
    take = intake(d, secrets(wrong=2))
    wall = AT + timedelta(minutes=5)
    first = take.take(heard(0, AT), now=10.0, wall=wall, state=state)
    assert first.outcome == "published"
    # The same telegram through another receiver that keeps the data-link CRCs: the same telegram.
    assert take.take(heard(0, AT, crc=True), now=11.0, wall=wall, state=state).outcome == "duplicate"
    assert take.take(heard(0, AT), now=10.0 + 121, wall=wall, state=state).outcome == "published"  # window over
    assert take.take(heard(4, AT), now=12.0, wall=wall, state=state).outcome == "unknown-meter"
    assert take.take(heard(4, AT + timedelta(minutes=1)), now=13.0, wall=wall, state=state).outcome == "unknown-meter"
    assert take.take(heard(5, AT), now=12.0, wall=wall, state=state).outcome == "not-served"
    bad = take.take(heard(2, AT), now=12.0, wall=wall, state=state)
    assert bad.outcome == "undecryptable"
    assert "2F 2F" in bad.reason and bad.meter_id == "WM002"
    assert bytes(16).hex() not in bad.reason and GEN.meters[2].key is not None
    assert GEN.meters[2].key.hex() not in bad.reason
    assert take.take(heard(2, AT), now=13.0, wall=wall, state=state).outcome == "undecryptable"  # not a "duplicate"
    unknown = state.unknown.meters
    assert list(unknown) == [GEN.meters[4].id]
    assert unknown[GEN.meters[4].id].count == 2
    listed = state.to_json_dict()["unknown"]
    assert isinstance(listed, list) and listed[0]["count"] == 2 and listed[0]["last_heard_at"] == wall.isoformat()


def _plain(index: int, records: bytes, ci: int = 0x7A) -> bytes:
    m = GEN.meters[index]
    man = manufacturer_value(MANUFACTURER).to_bytes(2, "little")
    address = bytes.fromhex(m.id)[::-1] + bytes([m.version, m.device_type])
    body = b"\x44" + man + address + bytes([ci, 0x11, 0x00, 0x00, 0x00]) + records
    return bytes([len(body)]) + body


def test_a_telegram_without_a_plausible_clock_is_stamped_when_first_heard() -> None:
    d = FleetDirectory()
    d.put(entry(1))
    take = intake(d)
    state = ReceiverState(ReceiverSpec.parse("tcp://127.0.0.1:1"))
    wall = AT + timedelta(seconds=42)
    no_clock = hear(ReceivedFrame(_plain(1, b"\x04\x13\x10\x27\x00\x00"), 0, "auto"), 0.0)
    taken = take.take(no_clock, now=0.0, wall=wall, state=state)
    assert taken.outcome == "published" and taken.batch is not None
    assert taken.batch.series[0].ts == [wall] and taken.batch.series[0].values == [10.0]
    # A clock stuck at 2000-01-01 would put every reading on one ts: stamped when heard instead.
    stuck = b"\x04\x13\x11\x27\x00\x00\x04\x6d\x00\x00\x21\x01"  # type F: 2000-01-01 00:00
    taken = take.take(hear(ReceivedFrame(_plain(1, stuck), 0, "auto"), 0.0), now=1.0, wall=wall, state=state)
    assert taken.outcome == "published" and taken.batch is not None
    assert taken.batch.series[0].ts == [wall]
    # Frames (its link header reads) but does not decode: a compact frame needs a format signature.
    damaged = take.take(
        hear(ReceivedFrame(_plain(1, b"\x00" * 6, ci=0x79), 0, "auto"), 0), now=2, wall=wall, state=state
    )
    assert damaged.outcome == "damaged" and "compact" in damaged.reason


async def test_receivers_hear_a_real_feed_reconnect_and_write_the_heard_file(tmp_path: Path) -> None:
    feed = WMBusFeedServer(GEN, framing="im871a", rounds=1, interval=0.05, start=AT)
    await feed.start()
    heard_file = tmp_path / "heard.json"
    settings = CollectorSettings(
        wmbus_receivers=f"tcp://127.0.0.1:{feed.port}?framing=im871a",
        wmbus_heard_file=heard_file,
        wmbus_reconnect_max_s=0.2,
        kafka_bootstrap="127.0.0.1:1",  # the fleet follower retries in the background; the directory is filled here
    )
    d = FleetDirectory()
    for index in range(5):  # meter 5 is not in the fleet
        d.put(entry(index))
    d.caught_up.set()
    published: list[ReadingBatch] = []
    got = asyncio.Event()

    failures = [RuntimeError("a bug in the sink"), OSError("disk away")]

    async def sink(batches: list[ReadingBatch]) -> None:
        if failures:  # the first two telegrams fail to publish: the receiver goes on, their next copies are taken
            raise failures.pop(0)
        published.extend(batches)
        if len(published) >= 10:
            got.set()

    receivers = WMBusReceivers(settings, TelegramIntake(d, ProfileCatalog(), secrets()), sink, clock=lambda: AT)
    stop = asyncio.Event()
    task = asyncio.create_task(receivers.run(stop))
    try:
        # One round per connection and the feed hangs up: the receiver is reconnected and hears it again
        # (5 meters, duplicates dropped within the window: the second round adds nothing).
        async with asyncio.timeout(30):
            while receivers.states[f"tcp://127.0.0.1:{feed.port}"].telegrams < 12:
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task
        await feed.stop()
    assert not failures
    assert len(published) == 5
    assert {b.meter_id for b in published} == {f"WM{i:03d}" for i in range(5)}
    written = json.loads(heard_file.read_text())
    (receiver,) = written["receivers"]
    assert receiver["framing"] == "im871a" and receiver["telegrams"] >= 12
    assert [(m["id"], m["count"] >= 2) for m in receiver["unknown"]] == [(GEN.meters[5].id, True)]
    assert receiver["unknown"][0]["last_rssi_raw"] == GEN.rssi_of(5)
    assert not got.is_set()


async def test_an_edge_collector_spools_what_its_receivers_hear(tmp_path: Path) -> None:
    feed = WMBusFeedServer(GEN, framing="hex", rounds=1, interval=0.05, start=AT)
    await feed.start()
    settings = CollectorSettings(
        wmbus_receivers=f"tcp://127.0.0.1:{feed.port}",
        wmbus_heard_file=tmp_path / "heard.json",
        kafka_bootstrap="127.0.0.1:1",  # the broker is away: the spool keeps what is heard
    )
    d = FleetDirectory()
    for index in range(5):
        d.put(entry(index))
    d.caught_up.set()
    spool = await Spool.open(tmp_path / "spool", max_bytes=1 << 20)
    jobs_stopped = asyncio.Event()

    async def jobs(stop: asyncio.Event) -> None:  # the collector's job loop, here only waiting
        await stop.wait()
        jobs_stopped.set()

    stop = asyncio.Event()
    task = asyncio.create_task(with_wmbus_receivers(settings, jobs, ProfileCatalog(), secrets(), spool, d)(stop))
    try:
        async with asyncio.timeout(30):
            while spool.records < 5:
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task
        await feed.stop()
    try:
        spooled = await spool.head(100)
    finally:
        await spool.close()
    assert jobs_stopped.is_set()
    assert {s.record.topic for s in spooled} == {"ami.readings"}
    batches = [ReadingBatch.model_validate_json(s.record.value) for s in spooled]
    assert sorted(b.meter_id for b in batches) == [f"WM{i:03d}" for i in range(5)]
    assert all(s.record.key == b.meter_id.encode() for s, b in zip(spooled, batches, strict=True))
