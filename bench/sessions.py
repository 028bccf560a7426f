"""DLMS meter sessions per second: our reader against the simulated fleet over TCP, 50 meters at once.

A session is what the collector runs for a 15-minute read: associate, read the clock,
scaler/unit and value of five registers, the last hour of the load profile, release
(:func:`gxcore.dlms.read_dlms`, the DLMS wrapper over TCP, no authentication).

``value``: sessions per second when this process (one core) reads 50 simulated meters
concurrently, served by ``gxami simulate dlms`` in its own process (the other core).

``limit``: the simulator's own ceiling, measured in the same run: the same sessions run
in memory (our client core and the simulator's meter core back to back, no sockets),
counting only the time spent inside the meter core, a fresh one per session as the
simulator makes per connection. The simulator cannot answer faster than that, so the
ratio says how much of its capacity the TCP path and our client reach. Beside it:
``client_core_sessions_per_s`` (the client side of the in-memory run, the most one
collector core could do with free I/O) and the pods that the design's 1,100 sessions/s
for a million meters every 15 minutes would need at the measured rate.
"""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest import mock

import yaml

from bench.figures import Figure, RunContext
from gxcore.dlms import reader
from gxcore.dlms.parameters import DlmsParameters, DlmsReadRequest, ProfileRange
from gxcore.dlms.server import CosemMeterCore
from gxcore.dlms.session import Exchange
from gxcore.simulators.dlms import LOAD_PROFILE, PROFILES, REGISTERS, _MeterValues

SEED = 1
METERS = 50
FLEET_TARGET = 1_100  # design.md: a million meters read every 15 minutes
TIMEOUT_S = 10.0


def request(now: datetime) -> DlmsReadRequest:
    """Clock, five registers and the last hour of the load profile."""
    return DlmsReadRequest(
        registers=tuple(r.obis for r in REGISTERS),
        profile=ProfileRange(LOAD_PROFILE, now - timedelta(hours=1), now),
    )


@dataclass(slots=True)
class MeterClock:
    """Time spent inside the simulated meter cores (the in-memory peer's only cost)."""

    seconds: float = 0.0
    exchanges: int = 0
    meters: dict[int, int] = field(default_factory=dict)


class MemoryLink:
    """Stands in for gxcore.dlms.transport.TcpLink: exchanges go straight to a meter core."""

    clock = MeterClock()

    def __init__(self, meter: CosemMeterCore) -> None:
        self.meter = meter
        self.broken = False

    @classmethod
    async def open(cls, host: str, port: int, *, timeout: float) -> MemoryLink:
        start = time.perf_counter()
        meter = CosemMeterCore(_MeterValues(SEED, port), REGISTERS, PROFILES)  # the simulator's per-connection core
        cls.clock.seconds += time.perf_counter() - start
        return cls(meter)

    async def run(self, exchange: Exchange, *, timeout: float) -> Exchange:
        while not exchange.complete:
            out = exchange.data_to_send()
            start = time.perf_counter()
            reply = self.meter.receive_data(out, datetime.now(UTC))
            self.clock.seconds += time.perf_counter() - start
            self.clock.exchanges += 1
            exchange.receive_data(reply)
        return exchange

    async def close(self) -> None:
        return None


async def _in_memory(sessions: int) -> tuple[float, float]:
    """(meter-core sessions/s, client-core sessions/s) of ``sessions`` sequential in-memory reads."""
    MemoryLink.clock = MeterClock()
    params = DlmsParameters()
    # The reader opens its link through its module global TcpLink; the in-memory peer stands in for it.
    with mock.patch.object(reader, "TcpLink", MemoryLink):
        start = time.perf_counter()
        for n in range(sessions):
            result = await reader.read_dlms("memory", n % METERS, params, request(datetime.now(UTC)), timeout=TIMEOUT_S)
            if result.failures or len(result.registers) != len(REGISTERS):
                raise RuntimeError(f"in-memory session {n} failed: {result.failures}")
        total = time.perf_counter() - start
    meter = MemoryLink.clock.seconds
    return sessions / meter, sessions / (total - meter)


class FleetProcess:
    """``gxami simulate dlms`` in its own process; ports read from the fleet file it writes."""

    def __init__(self, workdir: Path, meters: int) -> None:
        self.fleet = workdir / "fleet.yaml"
        self.log = workdir / "simulator.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gxami_cli",
                    "simulate",
                    "dlms",
                    "--meters",
                    str(meters),
                    "--seed",
                    str(SEED),
                    "--authentication",
                    "none",
                    "--fleet-out",
                    str(self.fleet),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def ports(self, timeout: float = 60.0) -> list[int]:
        deadline = time.monotonic() + timeout
        while not self.fleet.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"simulator did not start: {self.log.read_text(errors='replace')[-2000:]}")
            await asyncio.sleep(0.1)
        meters = yaml.safe_load(self.fleet.read_text())["meters"]
        return [int(m["address"].rsplit(":", 1)[1]) for m in meters]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


async def _over_tcp(ports: list[int], per_meter: int) -> float:
    """Sessions per second with one worker per meter, each reading its meter ``per_meter`` times."""
    params = DlmsParameters()

    async def worker(port: int) -> None:
        for _ in range(per_meter):
            result = await reader.read_dlms("127.0.0.1", port, params, request(datetime.now(UTC)), timeout=TIMEOUT_S)
            if result.failures:
                raise RuntimeError(f"meter at port {port}: {result.failures}")

    await asyncio.gather(*(worker(p) for p in ports[:1]))  # one warm-up read: imports and first-call costs
    start = time.perf_counter()
    await asyncio.gather(*(worker(p) for p in ports))
    return len(ports) * per_meter / (time.perf_counter() - start)


def run(ctx: RunContext) -> Iterator[Figure]:
    # Best of a few rounds on both sides, as for the CPU figures: the machine is shared.
    rounds = ctx.size.pick(1, 3, 3)
    per_meter = ctx.size.pick(1, 8, 20)
    memory_sessions = ctx.size.pick(10, 100, 300)
    ctx.note(f"sessions: {rounds} x {memory_sessions} in-memory sessions (the simulator's ceiling)")
    in_memory = [asyncio.run(_in_memory(memory_sessions)) for _ in range(rounds)]
    meter_rate, client_rate = max(m for m, _ in in_memory), max(c for _, c in in_memory)
    workdir = ctx.stack().scratch("sessions")
    fleet = FleetProcess(workdir, METERS)
    try:
        ports = asyncio.run(fleet.ports())
        ctx.note(f"sessions: {rounds} x {METERS} meters x {per_meter} sessions over TCP")
        rate = max(asyncio.run(_over_tcp(ports, per_meter)) for _ in range(rounds))
    finally:
        fleet.stop()
    yield Figure(
        "dlms_sessions_tcp",
        rate,
        "sessions/s",
        meter_rate,
        "higher",
        {
            "peer": "the simulator's meter core alone (in memory, same sessions, one core): its ceiling",
            "concurrent_meters": METERS,
            "sessions_per_round": METERS * per_meter,
            "rounds": rounds,
            "session": "associate, clock, 5 registers (scaler+value), 1 h load profile, release",
            "client_core_sessions_per_s": round(client_rate, 1),
            "fleet_target_sessions_per_s": FLEET_TARGET,
            "collector_pods_for_target_at_this_rate": math.ceil(FLEET_TARGET / rate),
        },
    )
