"""`gxami simulate iec62056-21 --dial-in` and `gxami simulate mbus --dial-in`: meters that call a collector.

Over the library simulators :mod:`gxami_meterlab.simulators.iec_dialin` and ``.mbus_dialin``:
writes the fleet file (``connection: dial-in``, the identity the collector matches as ``serial``)
and lets each meter call ``--calls`` times, ``--every`` apart, one JSON line per call in the call log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from gxami_meterlab.simulators.dlms_dialin import DialInCall


@dataclass(frozen=True, slots=True)
class DialInRun:
    """The options both commands share."""

    command: str
    meters: int
    seed: int
    targets: Sequence[str]
    every_s: float
    calls: int
    schedule: str
    fleet_out: Path | None
    call_log: Path | None
    write_only: bool = False


def parse_targets(command: str, texts: Sequence[str]) -> list[tuple[str, int]]:
    """HOST:PORT each, else one line and exit 2."""
    out: list[tuple[str, int]] = []
    for t in texts:
        host, sep, port = t.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            typer.echo(f"gxami simulate {command}: --dial-in {t!r}: write HOST:PORT", err=True)
            raise typer.Exit(2)
        out.append((host.strip("[]"), int(port)))
    return out


def run_dial_in(o: DialInRun, rows: list[dict[str, Any]], call: Callable[[int], Awaitable[DialInCall]]) -> None:
    """Write the fleet file of ``rows``, then let every meter call until done (or Ctrl-C / SIGTERM)."""
    from gxami_meterlab.cli_simulate import _until_signalled, _write_atomic

    if o.fleet_out is not None:
        _write_atomic(o.fleet_out, {"meters": rows})
    if o.write_only:
        return
    log_file = o.call_log.open("a", encoding="utf-8") if o.call_log is not None else None

    async def meter(index: int, stop: asyncio.Event) -> None:
        n = 0
        while not stop.is_set() and (o.calls <= 0 or n < o.calls):
            c = await call(index)
            if log_file is not None:
                record = {"meter_id": rows[index]["meter_id"], "index": c.index, "call": c.call, "target": c.target,
                          "answered": c.answered, "ended": c.ended, "started_at": c.started_at.isoformat(),
                          "finished_at": c.finished_at.isoformat()}  # fmt: skip
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
            n += 1
            if o.calls > 0 and n >= o.calls:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=o.every_s)

    async def main() -> None:
        stop = asyncio.Event()
        await _until_signalled(stop)
        typer.echo(f"{o.meters} {o.command} meters dialling in to {', '.join(o.targets)}")
        await asyncio.gather(*(meter(i, stop) for i in range(o.meters)))

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(main())
    finally:
        if log_file is not None:
            log_file.close()


def iec_dial_in(o: DialInRun) -> None:
    from gxami_meterlab.simulators.dlms import meter_id
    from gxami_meterlab.simulators.iec_dialin import IecDialInMeters

    targets = parse_targets(o.command, o.targets)
    fleet = IecDialInMeters(o.meters, targets, seed=o.seed)
    host, port = targets[0]
    rows = [
        {"meter_id": meter_id(o.seed, i), "protocol": "iec62056-21", "profile": "generic-iec62056-21",
         "address": f"tcp://{host}:{port}", "schedule": o.schedule, "connection": "dial-in",
         "serial": meter_id(o.seed, i), "purposes": ["billing"]}
        for i in range(o.meters)
    ]  # fmt: skip
    run_dial_in(o, rows, fleet.call)


def mbus_dial_in(o: DialInRun) -> None:
    from gxami_meterlab.simulators.mbus_dialin import MBusDialInMeters

    targets = parse_targets(o.command, o.targets)
    fleet = MBusDialInMeters([o.seed * 1000 + i for i in range(o.meters)], targets)
    host, port = targets[0]
    rows = [
        {"meter_id": f"MB{o.seed:03d}{i:05d}", "protocol": "mbus", "profile": "generic-mbus-heat",
         "address": f"tcp://{host}:{port}", "schedule": o.schedule, "connection": "dial-in",
         "serial": fleet.secondary_address(i), "options": {"secondary_address": fleet.secondary_address(i)},
         "purposes": ["billing"]}
        for i in range(o.meters)
    ]  # fmt: skip
    run_dial_in(o, rows, fleet.call)
