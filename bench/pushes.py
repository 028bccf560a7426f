"""DLMS pushes accepted and published per second by the collector's listener, on one core.

The pushes: general-glo-ciphered DataNotifications (authenticated and encrypted, security
suite 0) from the push simulator, 200 meters each pushing its five registers at successive
15-minute instants with rising invocation counters. They are built once, before any timing.

The figure: the real listener (:class:`gxami_collector.listeners.PushListeners` over a real
TCP listener, fleet directory, secret store, replay counters) in this process's one event
loop, fed by a client *process* that writes the pre-built byte stream over four connections.
What it publishes goes to an in-memory stand-in for the broker that serializes every message
to JSON bytes as the real publisher does before handing it to aiokafka: the figure is the
listener's own work (framing, lookup, deciphering, decoding, the profile's mapping, replay
check, the reading batch contract), not the broker's. It is timed from the first publish to
the last, so the client's start-up is not in it.

The limit: :func:`gxcore.protocols.dlms.push.decode_dlms_push` deciphering and decoding the
same frames in memory with nothing around them. The ratio says what the listener adds.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

from bench.figures import Figure, RunContext
from bench.timing import Contender, over, race
from gxcore.protocols.dlms.ciphering import SecurityPolicy

METERS = 200
CONNECTIONS = 4
SEED = 41
AT = datetime(2026, 12, 1, tzinfo=UTC)
POLICY: SecurityPolicy = "authenticated-encrypted"

_CLIENT = """
import socket, sys, threading
blobs = [open(p, "rb").read() for p in sys.argv[2:]]
def send(blob):
    with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=60) as s:
        s.sendall(blob)
        s.shutdown(socket.SHUT_WR)
        while s.recv(65536):
            pass
threads = [threading.Thread(target=send, args=(b,)) for b in blobs]
for t in threads: t.start()
for t in threads: t.join()
"""


def _frames(per_meter: int) -> list[tuple[int, bytes]]:
    from gxami_meterlab.simulators.dlms import push_message

    return [
        (i, push_message(SEED, i, AT + timedelta(minutes=15 * k), policy=POLICY, invocation_counter=k + 1))
        for k in range(per_meter)
        for i in range(METERS)
    ]


def limit_rate(frames: Sequence[tuple[int, bytes]], repeats: int) -> float:
    """Pushes/s deciphered and decoded in memory, nothing around them."""
    from gxami_meterlab.simulators.dlms import meter_security
    from gxcore.protocols.dlms.push import decode_dlms_push

    keys = {i: meter_security(SEED, i) for i in range(METERS)}

    def decode(item: tuple[int, bytes]) -> object:
        i, frame = item
        k = keys[i]
        return decode_dlms_push(frame, key=k.block_cipher_key, auth_key=k.authentication_key)

    return race([Contender("decode", over(frames, 1, decode))], repeats=repeats)["decode"]


async def _listener_rate(frames: Sequence[tuple[int, bytes]], workdir: Path) -> float:
    """Pushes/s through the real listener, from its first publish to its last."""
    from gxami_collector.fleet_cache import FleetDirectory
    from gxami_collector.listeners import PushCounters, PushListeners
    from gxami_collector.secret_store import SecretStore
    from gxami_collector.settings import CollectorSettings
    from gxami_contracts import FleetEntry, Message
    from gxami_meterlab.simulators.dlms import meter_id, meter_secrets, meter_system_title
    from gxami_runtime.kafka import DeadLetters, Publisher
    from gxcore.profiles import ProfileCatalog
    from gxcore.secrets import Secret

    done = asyncio.Event()
    stamps: list[float] = []

    class SerializingPublisher:
        """The broker stood in: each message serialized as the real publisher does, then dropped."""

        async def send(self, logical_topic: str, key: str, message: Message) -> None:
            await self.send_many(logical_topic, [(key, message)])

        async def send_many(self, logical_topic: str, items: Sequence[tuple[str, Message]]) -> None:
            for key, message in items:
                key.encode()
                message.model_dump_json().encode()
            if logical_topic == "ami.readings":
                stamps.append(time.perf_counter())
                if len(stamps) == len(frames):
                    done.set()

    settings = CollectorSettings(
        listeners=["dlms-push@tcp://127.0.0.1:0"],
        push_counters_file=workdir / "counters.json",
        push_idle_timeout_s=60,
        kafka_bootstrap="127.0.0.1:1",
    )
    options = {"authentication": "high-gmac", "client": "1", "security_policy": POLICY}
    directory = FleetDirectory()
    for i in range(METERS):
        directory.put(
            FleetEntry.model_validate(
                {
                    "meter_id": meter_id(SEED, i),
                    "protocol": "dlms",
                    "url": "tcp://127.0.0.1:4059",
                    "link_id": f"push:{i}",
                    "profile": "generic-dlms",
                    "connection": "push",
                    "interval_s": 900,
                    "options": options,
                    "system_title": meter_system_title(SEED, i).hex(),
                    "serial": meter_id(SEED, i),
                    "updated_at": AT,
                }
            )
        )
    directory.caught_up.set()
    secrets = SecretStore(
        meters={meter_id(SEED, i): {k: Secret(v) for k, v in meter_secrets(SEED, i).items()} for i in range(METERS)}
    )
    publisher = cast(Publisher, SerializingPublisher())
    listeners = PushListeners(
        settings,
        ProfileCatalog(),
        secrets,
        directory,
        publisher,
        DeadLetters(publisher, "collector"),
        PushCounters(settings.push_counters_file),
    )
    blobs = []
    for c in range(CONNECTIONS):
        path = workdir / f"stream-{c}.bin"
        path.write_bytes(b"".join(f for i, f in frames if i % CONNECTIONS == c))
        blobs.append(str(path))
    await listeners.start()
    try:
        port = listeners._tcp[0].port
        client = await asyncio.create_subprocess_exec(sys.executable, "-c", _CLIENT, str(port), *blobs)
        try:
            await asyncio.wait_for(done.wait(), timeout=600)
        finally:
            await client.wait()
    finally:
        await listeners.close()
    if client.returncode != 0:
        raise RuntimeError(f"push client exited with {client.returncode}")
    return (len(stamps) - 1) / max(stamps[-1] - stamps[0], 1e-9)


def run(ctx: RunContext) -> Iterator[Figure]:
    per_meter = ctx.size.pick(2, 25, 100)
    rounds = ctx.size.pick(1, 3, 3)
    ctx.note(f"pushes: building {METERS * per_meter} ciphered pushes")
    frames = _frames(per_meter)
    limit = limit_rate(frames, rounds)
    rates = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(prefix="gxami-bench-pushes-") as workdir:
            rates.append(asyncio.run(_listener_rate(frames, Path(workdir))))
    yield Figure(
        "dlms_pushes_listener",
        max(rates),
        "pushes/s",
        limit,
        "higher",
        {
            "peer": "decode_dlms_push deciphering and decoding the same pushes in memory, nothing around it",
            "pushes": len(frames),
            "meters": METERS,
            "connections": CONNECTIONS,
            "published_to": "in-memory stand-in serializing each message to JSON (no broker)",
            "ciphering": "general-glo, authenticated-encrypted, suite 0",
        },
    )
