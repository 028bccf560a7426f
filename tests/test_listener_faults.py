"""The push listener under hostile traffic (issue 8, "Bad input and faults"), over real sockets.

One in-process listener (the collector's PushListeners, broker stood in by a recorder) meets,
all at once: garbage, half-open connections, senders trickling one byte a second, pushes
ciphered with a wrong key, and 10,000 connections opened and dropped. Meanwhile one
well-behaved meter pushes every 0.1 s, and each of its pushes is published exactly once.
Afterwards: every reason is counted in the metrics, the process's memory grew by a bounded
amount, and no key or tag appears in the logs or the dead letters. Then the bound on
concurrent connections: beyond it connections are refused, and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import pytest
from prometheus_client import REGISTRY

from gxami_collector.fleet_cache import FleetDirectory
from gxami_collector.listeners import PushCounters, PushListeners
from gxami_collector.secret_store import SecretStore
from gxami_collector.settings import CollectorSettings
from gxami_contracts import FleetEntry, Message, ReadingBatch
from gxami_meterlab.simulators.dlms import meter_id, meter_secrets, meter_security, meter_system_title, push_message
from gxami_runtime.kafka import DeadLetters, Publisher
from gxcore.profiles import ProfileCatalog
from gxcore.secrets import Secret

pytestmark = pytest.mark.timeout(300)

GOOD_PUSHES = 12  # the well-behaved meter's pushes during the faults, at the least

SEED = 21
AT = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)
IDLE_S = 2.0
FLOOD = 10_000
FLOOD_THREADS = 8
MAX_CONNECTIONS = 256  # above what the scenarios hold at once: the good meter is never refused
RSS_BOUND = 64 << 20  # generous: what 10,000 leaked connections would exceed many times over


class RecordingPublisher:
    """Stands in for the broker: what would be published, by topic."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Message]] = []

    async def send(self, logical_topic: str, key: str, message: Message) -> None:
        self.sent.append((logical_topic, key, message))

    async def send_many(self, logical_topic: str, items: Sequence[tuple[str, Message]]) -> None:
        self.sent.extend((logical_topic, k, m) for k, m in items)


def _entry(index: int) -> FleetEntry:
    return FleetEntry.model_validate(
        {
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
        }
    )


def _metric(name: str, **labels: str) -> float:
    total = 0.0
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


_FLOOD_CLIENT = """
import socket, struct, sys, threading
port, count, threads = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
errors = []
def flood(n):
    for i in range(n):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                if i % 2:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError as exc:
            errors.append(type(exc).__name__)
ts = [threading.Thread(target=flood, args=(count // threads,)) for _ in range(threads)]
for t in ts: t.start()
for t in ts: t.join()
print(",".join(errors[:5]))
sys.exit(1 if errors else 0)
"""


async def _flood(port: int) -> str:
    """Open and drop FLOOD connections from another process (half closed politely, half reset)."""
    client = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _FLOOD_CLIENT, str(port), str(FLOOD), str(FLOOD_THREADS), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await client.communicate()
    return "" if client.returncode == 0 else f"exit {client.returncode}: {out.decode().strip()}"


async def _push(port: int, frame: bytes) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(frame)
        await writer.drain()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _push_and_confirm(port: int, frame: bytes) -> bool:
    """Push, half-close, and wait for the listener to close: True once it did (the push was
    served), False when it reset the connection (refused at the bound on connections)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(frame)
        await writer.drain()
        writer.write_eof()
        return await asyncio.wait_for(reader.read(1), timeout=30) == b""
    except OSError:  # reset (ECONNRESET, or ENOTCONN once reset before the half-close)
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _trickle(port: int, frame: bytes) -> int:
    """Send ``frame`` one byte a second until the listener hangs up; how many bytes went."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = 0
    try:
        for byte in frame:
            writer.write(bytes([byte]))
            await writer.drain()
            sent += 1
            await asyncio.sleep(1.0)
    except OSError:
        pass  # the listener closed it: what we wait for
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return sent


async def _hold(port: int, data: bytes, seconds: float) -> bool:
    """Open a connection, send ``data``, and wait; True when the listener closed it first."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if data:
            writer.write(data)
            await writer.drain()
        try:
            got = await asyncio.wait_for(reader.read(1), timeout=seconds)
        except TimeoutError:
            return False
        except OSError:
            return True
        return got == b""
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def _listeners(tmp_path: Path, publisher: RecordingPublisher, *, max_connections: int) -> PushListeners:
    settings = CollectorSettings(
        listeners=["dlms-push@tcp://127.0.0.1:0"],
        push_counters_file=tmp_path / f"counters-{max_connections}.json",
        push_idle_timeout_s=IDLE_S,
        listener_max_connections=max_connections,
        kafka_bootstrap="127.0.0.1:1",
    )
    secrets = SecretStore(meters={meter_id(SEED, 0): {k: Secret(v) for k, v in meter_secrets(SEED, 0).items()}})
    directory = FleetDirectory()
    directory.put(_entry(0))
    directory.caught_up.set()
    return PushListeners(
        settings,
        ProfileCatalog(),
        secrets,
        directory,
        cast(Publisher, publisher),
        DeadLetters(cast(Publisher, publisher), "collector"),
        PushCounters(settings.push_counters_file),
    )


def test_the_listener_serves_a_good_meter_through_garbage_stalls_wrong_keys_and_a_flood(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Its own loop, not in asyncio debug mode: debug mode records a stack for each of the
    # flood's 10,000 connections' callbacks, which is the test's cost, not the listener's.
    for logger in ("gxami", "gxcore"):
        caplog.set_level(logging.DEBUG, logger=logger)
    asyncio.run(_hostile_traffic(tmp_path, caplog))


async def _hostile_traffic(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    name = "dlms-push@tcp://127.0.0.1:0"
    before = {
        "framing": _metric("gxami_collector_listener_faults_total", listener=name, reason="framing"),
        "timeout": _metric("gxami_collector_listener_faults_total", listener=name, reason="timeout"),
        "idle": _metric("gxami_collector_listener_connections_total", listener=name, kind="idle"),
        "accepted": _metric("gxami_collector_listener_connections_total", listener=name, kind="accepted"),
        "rejected": _metric("gxami_collector_listener_connections_total", listener=name, kind="rejected"),
        "wrong-key": _metric("gxami_collector_pushes_total", listener=name, outcome="wrong-key"),
        "served": _metric("gxami_collector_pushes_total", listener=name, outcome="served"),
    }
    publisher = RecordingPublisher()
    listeners = _listeners(tmp_path, publisher, max_connections=MAX_CONNECTIONS)
    stop = asyncio.Event()
    run = asyncio.create_task(listeners.run(stop))
    keys = meter_security(SEED, 0)
    other = meter_security(SEED + 1, 0)  # the keys the forged push is ciphered with
    good_sent: list[datetime] = []
    good_refused: list[datetime] = []
    try:
        while not listeners._tcp:
            await asyncio.sleep(0.01)
        port = listeners._tcp[0].port

        async def good_meter(done: asyncio.Event) -> None:
            n = 0
            # Through the whole fault scenario, and at least GOOD_PUSHES pushes however slow the machine.
            while not done.is_set() or len(good_sent) < GOOD_PUSHES:
                at = AT + timedelta(minutes=n)
                frame = push_message(SEED, 0, at, policy="authenticated-encrypted", invocation_counter=1000 + n)
                if await _push_and_confirm(port, frame):
                    good_sent.append(at)
                    n += 1
                else:
                    good_refused.append(at)  # refused at the bound: a meter sends it again
                await asyncio.sleep(0.1)

        # A push from meter 0's title, ciphered with other keys: the tag cannot check.
        forged = bytearray(push_message(SEED + 1, 0, AT, policy="authenticated-encrypted", invocation_counter=5))
        forged[10:18] = meter_system_title(SEED, 0)
        rss_before = _rss()
        done = asyncio.Event()
        good = asyncio.create_task(good_meter(done))
        flood = asyncio.create_task(_flood(port))
        garbage = [
            _push(port, os.urandom(64) if i % 2 else b"\x00\x01\x00\x01\x00\x66\xff\xffnot dlms at all" * 9)
            for i in range(40)
        ]
        stalls = [_hold(port, b"", IDLE_S * 5) for _ in range(10)]  # half-open: connect, then silence
        partial = [_hold(port, push_message(SEED, 0, AT)[:20], IDLE_S * 5) for _ in range(5)]
        slow = [_trickle(port, push_message(SEED, 0, AT)) for _ in range(3)]
        wrong = [_push(port, bytes(forged)) for _ in range(3)]
        results = await asyncio.gather(*garbage, *stalls, *partial, *slow, *wrong)
        errors = await flood
        done.set()
        await good
        await asyncio.sleep(0.5)  # the last pushes published
        gc.collect()
        rss_growth = _rss() - rss_before
        port_open = await _hold(port, b"", 0.1) is False
    finally:
        stop.set()
        await run

    closed_by_listener = results[40 : 40 + 10 + 5]
    trickled = results[55:58]
    assert all(closed_by_listener), "every half-open or half-sent connection was closed by the listener"
    frame_length = len(push_message(SEED, 0, AT))
    assert all(isinstance(n, int) and n < frame_length for n in trickled), "a trickling sender is cut off"
    assert not errors, f"the flood's connections were refused at the socket: {errors}"
    assert port_open

    # The good meter: every push it sent published exactly once, nothing else published as readings.
    batches = [cast(ReadingBatch, m) for t, _, m in publisher.sent if t == "ami.readings"]
    stamps = sorted(b.series[0].ts[0] for b in batches)
    assert stamps == sorted(good_sent) and len(good_sent) >= GOOD_PUSHES
    assert {b.meter_id for b in batches} == {meter_id(SEED, 0)}

    def delta(key: str, metric: str, **labels: str) -> float:
        return _metric(metric, listener=name, **labels) - before[key]

    faults = "gxami_collector_listener_faults_total"
    conns = "gxami_collector_listener_connections_total"
    assert delta("framing", faults, reason="framing") >= 20, "garbage counted"
    assert delta("timeout", faults, reason="timeout") >= 3, "trickles counted: a frame not whole in time"
    assert delta("idle", conns, kind="idle") >= 10 + 5, "half-open and half-sent (then silent) connections counted"
    assert delta("accepted", conns, kind="accepted") + delta("rejected", conns, kind="rejected") >= FLOOD
    assert delta("wrong-key", "gxami_collector_pushes_total", outcome="wrong-key") == 3
    assert delta("served", "gxami_collector_pushes_total", outcome="served") == len(good_sent)
    assert delta("rejected", conns, kind="rejected") >= len(good_refused)
    assert rss_growth < RSS_BOUND, f"memory grew by {rss_growth >> 20} MiB"

    # Nothing secret in the logs or the dead letters: keys, and the tags of what was refused.
    letters = [json.loads(m.model_dump_json()) for t, _, m in publisher.sent if t == "ami.dead-letter"]
    assert sum("wrong-key" in letter["reason"] for letter in letters) == 3
    shown = (caplog.text + json.dumps([letter["reason"] for letter in letters])).lower()
    assert "decryption" in shown, "the refusals were logged (so the search below searched something)"
    for secret in (
        keys.block_cipher_key,
        keys.authentication_key,
        other.block_cipher_key,
        other.authentication_key,
    ):
        assert secret.reveal().hex() not in shown
    assert bytes(forged[-12:]).hex() not in shown


async def test_connections_beyond_the_bound_are_refused_and_counted(tmp_path: Path) -> None:
    name = "dlms-push@tcp://127.0.0.1:0"
    rejected_before = _metric("gxami_collector_listener_connections_total", listener=name, kind="rejected")
    publisher = RecordingPublisher()
    listeners = _listeners(tmp_path, publisher, max_connections=8)
    await listeners.start()
    writers: list[asyncio.StreamWriter] = []
    try:
        port = listeners._tcp[0].port
        readers = []
        for _ in range(8):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            readers.append(reader)
            writers.append(writer)
        while listeners._tcp[0].active < 8:
            await asyncio.sleep(0.01)
        refused = [await _hold(port, b"", IDLE_S / 2) for _ in range(5)]
        # The held ones are still served: a push on one of them is published.
        writers[0].write(push_message(SEED, 0, AT, policy="authenticated-encrypted", invocation_counter=1))
        await writers[0].drain()
        for _ in range(200):
            if publisher.sent:
                break
            await asyncio.sleep(0.01)
    finally:
        for w in writers:
            w.close()
        await listeners.close()
    assert refused == [True] * 5, "each connection beyond the bound is closed at once"
    rejected = _metric("gxami_collector_listener_connections_total", listener=name, kind="rejected") - rejected_before
    assert rejected == 5
    assert [(t, k) for t, k, _ in publisher.sent] == [("ami.readings", meter_id(SEED, 0))]
