"""DLMS meter sessions per second: our reader against the simulated fleet over TCP, 50 meters at once.

A session is what the collector runs for a 15-minute read: associate, read the clock,
scaler/unit and value of five registers, the last hour of the load profile, release
(:class:`gxcore.drivers.dlms.driver.DlmsDriver` with the built-in ``generic-dlms`` profile, the DLMS
wrapper over TCP, no authentication).

``value``: sessions per second when this process (one core) reads 50 simulated meters
concurrently, served by ``gxami simulate dlms`` in its own process (the other core).

``limit``: the simulator's own ceiling, measured in the same run: the same sessions run
in memory (the same driver over :mod:`gxami_meterlab.simulators.dlms_memory`: our client and
the simulator's meter core back to back, no sockets),
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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from bench.figures import Figure, RunContext
from gxami_meterlab.dlms.server import CosemMeterCore
from gxami_meterlab.simulators.dlms import PROFILES, REGISTERS, _MeterValues
from gxami_meterlab.simulators.dlms_memory import memory_media
from gxcore.drivers import MeterTarget, ReadRequest, ReadResult
from gxcore.drivers.dlms.driver import DlmsDriver
from gxcore.profiles.model import BUILTIN_DIR, load_profile

SEED = 1
METERS = 50
FLEET_TARGET = 1_100  # design.md: a million meters read every 15 minutes
TIMEOUT_S = 10.0


PROFILE = load_profile(Path(BUILTIN_DIR) / "generic-dlms.yaml")
# The generic profile's points for these purposes: the five registers and the load profile's two columns.
PURPOSES = frozenset({"billing", "instantaneous", "load-profile"})


def request(now: datetime) -> ReadRequest:
    """Clock, five registers and the last hour of the load profile."""
    return ReadRequest(purposes=PURPOSES, profile_from=now - timedelta(hours=1))


def check(result: ReadResult, where: str) -> None:
    """Every register and at least one load-profile row, or the figure would time a failure."""
    quantities = {r.quantity for r in result.readings}
    if len(quantities) != len(REGISTERS) or len(result.readings) <= len(REGISTERS):
        raise RuntimeError(f"{where}: read {len(result.readings)} readings of {sorted(quantities)}")


@dataclass(slots=True)
class MeterClock:
    """Time spent inside the simulated meter cores (the in-memory peer's only cost)."""

    seconds: float = 0.0
    exchanges: int = 0


@dataclass(slots=True)
class TimedMeter:
    """The simulator's per-connection meter core, timed."""

    core: CosemMeterCore
    clock: MeterClock

    @classmethod
    def make(cls, index: int, clock: MeterClock) -> TimedMeter:
        start = time.perf_counter()
        core = CosemMeterCore(_MeterValues(SEED, index), REGISTERS, PROFILES)  # the simulator's per-connection core
        clock.seconds += time.perf_counter() - start
        return cls(core, clock)

    def receive_data(self, data: bytes, now: datetime) -> bytes:
        start = time.perf_counter()
        reply = self.core.receive_data(data, now)
        self.clock.seconds += time.perf_counter() - start
        self.clock.exchanges += 1
        return reply


async def _in_memory(sessions: int) -> tuple[float, float]:
    """(meter-core sessions/s, client-core sessions/s) of ``sessions`` sequential in-memory reads."""
    clock = MeterClock()
    # tcp://memory:N is simulated meter N - 1 (a port is never 0).
    driver = DlmsDriver(media=memory_media(lambda url: TimedMeter.make(int(url.rsplit(":", 1)[1]) - 1, clock)))
    start = time.perf_counter()
    for n in range(sessions):
        target = MeterTarget(f"SIM-{n % METERS}", f"tcp://memory:{n % METERS + 1}")
        result = await driver.read(target, PROFILE, request(datetime.now(UTC)), timeout=TIMEOUT_S)
        check(result, f"in-memory session {n}")
    total = time.perf_counter() - start
    return sessions / clock.seconds, sessions / (total - clock.seconds)


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
    driver = DlmsDriver()

    async def worker(port: int) -> None:
        target = MeterTarget(f"SIM-{port}", f"tcp://127.0.0.1:{port}")
        for _ in range(per_meter):
            result = await driver.read(target, PROFILE, request(datetime.now(UTC)), timeout=TIMEOUT_S)
            check(result, f"meter at port {port}")

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
