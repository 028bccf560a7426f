"""`gxami simulate dlms --dial-in HOST:PORT`: meters that call a collector (issue 8, item 3).

Writes the fleet file (``connection: dial-in``, the meter id as serial) and the secrets file the
collector needs, then lets the meters call (see :mod:`gxami_meterlab.simulators.dlms_dialin`).
With ``low`` authentication the password is derived from the seed, so the run that writes the
files and the run that dials agree on it; ``high-gmac`` meters have their own keys per meter.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer


@dataclass(frozen=True, slots=True)
class DialInOptions:
    """The dial-in options of ``gxami simulate dlms``."""

    meters: int
    seed: int
    targets: Sequence[str]
    every: float
    calls: int
    ident: bool
    only: Sequence[int]
    stall: Mapping[int, int]
    idle_s: float
    authentication: str
    security_policy: str
    schedule: str
    fleet_out: Path | None
    secrets_out: Path | None
    call_log: Path | None
    write_only: bool


def dial_in_password(seed: int) -> str:
    """The simulated fleet's LLS password: a function of the seed (a simulator, not a secret)."""
    return hashlib.blake2b(f"gxami-dial-in:{seed}".encode(), digest_size=9).hexdigest()


def _targets(texts: Sequence[str]) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for t in texts:
        host, sep, port = t.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            typer.echo(f"gxami simulate dlms: --dial-in {t!r}: write HOST:PORT", err=True)
            raise typer.Exit(2)
        out.append((host.strip("[]"), int(port)))
    return out


def _files(o: DialInOptions, targets: list[tuple[str, int]]) -> None:
    from gxami_meterlab.cli_simulate import _write_atomic
    from gxami_meterlab.simulators.dlms import meter_id, meter_secrets, meter_system_title

    ids = [meter_id(o.seed, i) for i in range(o.meters)]
    secured = o.authentication == "high-gmac"
    if o.secrets_out is not None:
        default = {"password": dial_in_password(o.seed)} if o.authentication == "low" else {}
        per_meter = {ids[i]: meter_secrets(o.seed, i) for i in range(o.meters)} if secured else {}
        _write_atomic(o.secrets_out, {"default": default, "meters": per_meter})
    if o.fleet_out is not None:
        host, port = targets[0]

        def options(i: int) -> dict[str, Any]:
            if not secured:
                return {"authentication": o.authentication}
            return {
                "authentication": "high-gmac",
                "client": 1,
                "security_policy": o.security_policy,
                "server_system_title": meter_system_title(o.seed, i).hex(),
            }

        meters = [
            {
                "meter_id": ids[i],
                "protocol": "dlms",
                "address": f"tcp://{host}:{port}",  # where it calls; informative
                "link_id": f"dial-in:{ids[i]}",
                "profile": "generic-dlms",
                "group": f"sim-{o.seed}",
                "schedule": o.schedule,
                "connection": "dial-in",
                "serial": ids[i],
                "options": options(i),
            }
            for i in range(o.meters)
        ]
        _write_atomic(o.fleet_out, {"meters": meters})


def dial(o: DialInOptions) -> None:
    """Write the files, then (unless ``write_only``) let the meters call until done or signalled."""
    import asyncio
    import contextlib

    from gxami_meterlab.cli_simulate import _until_signalled
    from gxami_meterlab.simulators.dlms_dialin import DialInCall, DialInMeters, run_dialer

    if o.authentication not in {"none", "low", "high-gmac"}:
        typer.echo("gxami simulate dlms: --authentication must be none, low or high-gmac", err=True)
        raise typer.Exit(2)
    bad = [i for i in [*o.only, *o.stall] if not 0 <= i < o.meters]
    if bad:
        typer.echo(f"gxami simulate dlms: meter index {bad[0]} outside 0..{o.meters - 1}", err=True)
        raise typer.Exit(2)
    targets = _targets(o.targets)
    _files(o, targets)
    if o.write_only:
        return
    log_file = o.call_log.open("a", encoding="utf-8") if o.call_log is not None else None

    def logged(c: DialInCall) -> None:
        if log_file is not None:
            record = {
                "meter_id": c.meter_id,
                "index": c.index,
                "call": c.call,
                "target": c.target,
                "answered": c.answered,
                "ended": c.ended,
                "started_at": c.started_at.isoformat(),
                "finished_at": c.finished_at.isoformat(),
            }
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()

    async def main() -> None:
        stop = asyncio.Event()
        await _until_signalled(stop)
        fleet = DialInMeters(
            o.meters,
            targets,
            seed=o.seed,
            authentication=o.authentication,  # type: ignore[arg-type]  # checked above
            password=dial_in_password(o.seed) if o.authentication == "low" else None,
            security_policy=o.security_policy,  # type: ignore[arg-type]  # the driver checks it
            ident=o.ident,
            stall=o.stall,
            idle_timeout=o.idle_s,
        )
        who = len(o.only) if o.only else o.meters
        typer.echo(f"{who} DLMS meters dialling in to {', '.join(o.targets)}")
        await run_dialer(fleet, stop, calls=o.calls, every_s=o.every, only=o.only or None, on_call=logged)
        # A secured meter saw one (system title, invocation counter) twice: a reused GCM nonce.
        repeats = [(i, counter) for i, state in enumerate(fleet.states) for _, counter in state.counters.repeats]
        if repeats:
            shown = ", ".join(f"meter {i}: counter {c}" for i, c in repeats[:5])
            typer.echo(f"gxami simulate dlms: invocation counters used twice (GCM nonce reuse): {shown}", err=True)
            raise typer.Exit(1)

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(main())
    finally:
        if log_file is not None:
            log_file.close()
