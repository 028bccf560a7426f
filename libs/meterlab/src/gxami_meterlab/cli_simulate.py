"""`gxami simulate ...`: deterministic meter simulators for demos, tests and benchmarks.

``--fleet-out`` writes a fleet file the scheduler imports, ``--secrets-out`` the collector's
secrets file; both are written atomically, so a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:  # asyncio and YAML load when a simulator runs, not when the CLI starts
    import asyncio

app = typer.Typer(help="Simulated meters speaking real protocols.", no_args_is_help=True, add_completion=False)


def _write_atomic(path: Path, data: Any) -> None:
    import yaml

    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    os.chmod(tmp, 0o600)
    tmp.replace(path)


async def _until_signalled(stop: asyncio.Event) -> None:
    import asyncio
    import signal

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


@app.command("dlms")
def dlms(
    meters: int = typer.Option(50, min=1, help="how many meters (one TCP port each)"),
    seed: int = typer.Option(1, help="values are deterministic from this"),
    host: str = typer.Option("127.0.0.1", help="address to listen on"),
    base_port: int = typer.Option(0, help="first port (0: free ports)"),
    advertise_host: str | None = typer.Option(None, help="host name written into the fleet file"),
    authentication: str = typer.Option(
        "low",
        help="none, low (password), high, high-md5, high-sha1, high-sha256 (HLS, the password as secret)"
        " or high-gmac (security suite 0)",
    ),
    security_policy: str = typer.Option("authenticated-encrypted", help="with high-gmac: the security policy"),
    schedule: str = typer.Option("15m", help="read interval written into the fleet file"),
    fleet_out: Path | None = typer.Option(None, help="write a fleet file here"),
    secrets_out: Path | None = typer.Option(None, help="write the collector's secrets file here"),
    push_to: list[str] = typer.Option(
        [], help="HOST:PORT of a push listener; the meters push there instead of serving (repeat: in turn)"
    ),
    every: str = typer.Option("15m", help="with --push-to: how often each meter pushes (e.g. 15m, 30s)"),
    ciphered: bool = typer.Option(False, help="with --push-to: general-glo-ciphered pushes (the meters' own keys)"),
    pushes: int = typer.Option(0, min=0, help="with --push-to: stop each meter after this many pushes (0: never)"),
    sent_log: Path | None = typer.Option(None, help="with --push-to: append one JSON line per push sent"),
    write_only: bool = typer.Option(
        False, help="with --push-to/--dial-in: write the fleet and secrets files, then exit"
    ),
    firmware_block_refusal_rate: float = typer.Option(
        0.0, min=0.0, max=1.0, help="share of image blocks a meter refuses (seeded, per meter)"
    ),
    firmware_verify_failure_rate: float = typer.Option(
        0.0, min=0.0, max=1.0, help="share of image_verify calls that fail (seeded, per meter)"
    ),
    dial_in: list[str] = typer.Option(
        [], help="HOST:PORT of a dial-in listener; the meters call there (repeat: each call picks one at random)"
    ),
    calls: int = typer.Option(1, min=0, help="with --dial-in: calls per meter, --every apart (0: until stopped)"),
    ident: bool = typer.Option(True, help="with --dial-in: send an identification line (the meter id) first"),
    only: list[int] = typer.Option([], help="with --dial-in: only these meter indexes call (repeat)"),
    stall_meter: list[int] = typer.Option(
        [], help="with --dial-in: this meter (index) stops answering mid-session on its first call (repeat)"
    ),
    stall_after: int = typer.Option(3, min=0, help="with --stall-meter: requests answered before it goes silent"),
    idle: float = typer.Option(10.0, help="with --dial-in: hang up after this many silent seconds"),
    call_log: Path | None = typer.Option(None, help="with --dial-in: append one JSON line per call made"),
    push_framing: str = typer.Option("wrapper", help="with --push-to: wrapper or hdlc"),
    dedicated: bool = typer.Option(False, help="with --push-to --ciphered: general-ded, each meter's dedicated key"),
    han: str | None = typer.Option(
        None, help="with --push-to: HAN-port lists over HDLC, aidon, kaifa or kamstrup style (profile han-<style>)"
    ),
) -> None:
    """Serve DLMS/COSEM meters (TCP wrapper, LN referencing) until Ctrl-C or SIGTERM; push (--push-to); dial in."""
    import asyncio
    import secrets

    if dial_in:
        from gxami_meterlab.cli_dialin import DialInOptions, dial

        dial(
            DialInOptions(
                meters=meters,
                seed=seed,
                targets=dial_in,
                every=_every_seconds(every),
                calls=calls,
                ident=ident,
                only=only,
                stall=dict.fromkeys(stall_meter, stall_after),
                idle_s=idle,
                authentication=authentication,
                security_policy=security_policy,
                schedule=schedule,
                fleet_out=fleet_out,
                secrets_out=secrets_out,
                call_log=call_log,
                write_only=write_only,
            )
        )
        return
    if push_to:
        files = (fleet_out, secrets_out)
        if push_framing not in {"wrapper", "hdlc"} or han not in {None, "aidon", "kaifa", "kamstrup"}:
            typer.echo(
                "gxami simulate dlms: --push-framing is wrapper or hdlc; --han aidon, kaifa or kamstrup", err=True
            )
            raise typer.Exit(2)
        style = PushStyle(push_framing, dedicated, han)
        _push(
            meters,
            seed,
            push_to,
            every,
            ciphered,
            pushes,
            security_policy,
            files,
            sent_log,
            write_only=write_only,
            style=style,
        )
        return

    from gxami_meterlab.dlms.image_transfer import FirmwareFaults
    from gxami_meterlab.simulators.dlms import SimulatedMeter, meter_secrets, meter_system_title, run_simulator
    from gxcore.protocols.dlms.parameters import AUTHENTICATIONS, PASSWORD_HLS

    if authentication not in AUTHENTICATIONS:
        typer.echo(f"gxami simulate dlms: --authentication must be one of {', '.join(AUTHENTICATIONS)}", err=True)
        raise typer.Exit(2)
    # 12 random bytes as 16 characters: within the one AES-128 key that "high" takes.
    password = secrets.token_urlsafe(12) if authentication == "low" or authentication in PASSWORD_HLS else None

    def options(m: SimulatedMeter) -> dict[str, str | int]:
        if authentication != "high-gmac":
            return {"authentication": authentication}
        return {
            "authentication": "high-gmac",
            "client": 1,
            "security_policy": security_policy,
            "server_system_title": meter_system_title(seed, m.index).hex(),
        }

    def started(fleet: list[SimulatedMeter]) -> None:
        where = advertise_host or host
        if secrets_out is not None:
            secured = authentication == "high-gmac"
            per_meter = {m.meter_id: meter_secrets(seed, m.index) for m in fleet} if secured else {}
            _write_atomic(secrets_out, {"default": {"password": password} if password else {}, "meters": per_meter})
        if fleet_out is not None:
            _write_atomic(
                fleet_out,
                {
                    "meters": [
                        {
                            "meter_id": m.meter_id,
                            "protocol": "dlms",
                            "address": f"tcp://{where}:{m.port}",
                            "profile": "generic-dlms",
                            "group": f"sim-{seed}",
                            "schedule": schedule,
                            "options": options(m),
                        }
                        for m in fleet
                    ]
                },
            )
        typer.echo(
            f"serving {len(fleet)} DLMS meters on {host}, ports {fleet[0].port}..{fleet[-1].port}"
            if fleet
            else "serving no meters"
        )

    async def main() -> None:
        stop = asyncio.Event()
        await _until_signalled(stop)
        await run_simulator(
            meters,
            seed,
            host,
            base_port,
            authentication,  # type: ignore[arg-type]  # typer gives str; the Choice option bounds it
            password,
            stop,
            on_started=started,
            security_policy=security_policy,  # type: ignore[arg-type]  # as above
            firmware_faults=FirmwareFaults(firmware_block_refusal_rate, firmware_verify_failure_rate),
        )

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


def _every_seconds(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    value = text.strip().lower()
    try:
        seconds = float(value[:-1]) * units[value[-1]] if value and value[-1] in units else float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        typer.echo(f"gxami simulate dlms: --every {text!r}: write a duration such as 15m, 30s or 0.5s", err=True)
        raise typer.Exit(2)
    return seconds


@dataclass(frozen=True, slots=True)
class PushStyle:
    """How the simulated meters frame and cipher their pushes (``--push-framing``, ``--dedicated``, ``--han``)."""

    framing: str = "wrapper"
    dedicated: bool = False
    han: str | None = None


def _push(
    meters: int,
    seed: int,
    push_to: list[str],
    every: str,
    ciphered: bool,
    pushes: int,
    security_policy: str,
    files: tuple[Path | None, Path | None],
    sent_log: Path | None,
    *,
    write_only: bool = False,
    style: PushStyle | None = None,
) -> None:
    """Meters that push to listeners (issue 8): fleet file with ``connection: push`` and identities."""
    style = style or PushStyle()
    fleet_out, secrets_out = files
    import asyncio
    import json

    from gxami_meterlab.simulators.dlms import SentPush, meter_id, meter_secrets, meter_system_title, run_pusher

    every_s = _every_seconds(every)
    targets: list[tuple[str, int]] = []
    for t in push_to:
        host, sep, port = t.rpartition(":")
        if not sep or not host or not port.isdigit():
            typer.echo(f"gxami simulate dlms: --push-to {t!r}: write HOST:PORT", err=True)
            raise typer.Exit(2)
        targets.append((host.strip("[]"), int(port)))
    ids = [meter_id(seed, i) for i in range(meters)]
    if secrets_out is not None:
        per_meter = {ids[i]: meter_secrets(seed, i) for i in range(meters)} if ciphered else {}
        _write_atomic(secrets_out, {"default": {}, "meters": per_meter})
    if fleet_out is not None:
        options: dict[str, str | int] = (
            {"authentication": "high-gmac", "client": 1, "security_policy": security_policy}
            if ciphered
            else {"authentication": "none"}
        )
        _write_atomic(
            fleet_out,
            {
                "meters": [
                    {
                        "meter_id": ids[i],
                        "protocol": "dlms",
                        "address": f"tcp://{targets[i % len(targets)][0]}:{targets[i % len(targets)][1]}",
                        "profile": f"han-{style.han}" if style.han else "generic-dlms",
                        "group": f"sim-{seed}",
                        "schedule": every if every_s >= 60 else "1m",
                        "connection": "push",
                        "system_title": meter_system_title(seed, i).hex(),
                        "serial": ids[i],
                        "options": {
                            **options,
                            **({"server_system_title": meter_system_title(seed, i).hex()} if ciphered else {}),
                        },
                    }
                    for i in range(meters)
                ]
            },
        )
    if write_only:
        return
    log_file = sent_log.open("a", encoding="utf-8") if sent_log is not None else None

    def sent(p: SentPush) -> None:
        if log_file is not None:
            record = {"meter_id": p.meter_id, "index": p.index, "at": p.at.isoformat(), "counter": p.invocation_counter}
            log_file.write(json.dumps({**record, "target": p.target}) + "\n")
            log_file.flush()

    async def main() -> None:
        stop = asyncio.Event()
        await _until_signalled(stop)
        typer.echo(f"{meters} DLMS meters pushing every {every_s:g} s to {', '.join(push_to)}")
        await run_pusher(
            meters,
            seed,
            targets,
            every_s,
            stop,
            ciphered=ciphered,
            policy=security_policy,  # type: ignore[arg-type]  # typer gives str; the driver checks it
            pushes=pushes,
            on_sent=sent,
            interface=style.framing,  # type: ignore[arg-type]  # checked above: wrapper or hdlc
            dedicated=style.dedicated,
            han=style.han,  # type: ignore[arg-type]  # checked above: aidon, kaifa or kamstrup
        )

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(main())
    finally:
        if log_file is not None:
            log_file.close()


@app.command("modbus")
def modbus(
    profile: str = typer.Option("eastron-sdm630", help="device profile whose register map is simulated"),
    meters: int = typer.Option(1, min=1, max=247, help="device ids 1..N on one port (an RS-485 bus behind a gateway)"),
    seed: int = typer.Option(1, help="values are deterministic from this"),
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(0, help="port (0: a free one)"),
) -> None:
    """Serve Modbus TCP meters built from a device profile's register map."""
    import asyncio

    from gxami_meterlab.simulators.modbus import ModbusMeterSimulator
    from gxcore.profiles import ProfileCatalog

    async def main() -> None:
        stop = asyncio.Event()
        await _until_signalled(stop)
        sim = ModbusMeterSimulator(ProfileCatalog().get(profile), meters=meters, seed=seed, host=host, port=port)
        await sim.start()
        typer.echo(f"serving {meters} Modbus meters ({profile}) at {sim.url()} (device ids 1..{meters})")
        try:
            await stop.wait()
        finally:
            await sim.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


async def _serve_until_stopped(start: Any, stop_server: Any, banner: Any) -> None:
    import asyncio

    stop = asyncio.Event()
    await _until_signalled(stop)
    await start()
    typer.echo(banner())
    try:
        await stop.wait()
    finally:
        await stop_server()


def _now() -> datetime:
    return datetime.now(UTC)


@app.command("mbus")
def mbus(
    meters: int = typer.Option(
        5, min=1, max=250, help="slaves on the simulated bus (with --dial-in: meters that call)"
    ),
    seed: int = typer.Option(1, help="values and addresses are deterministic from this"),
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(0, help="port of the M-Bus TCP gateway (0: a free one)"),
    dial_in: list[str] = typer.Option(
        [], help="HOST:PORT of a collector's dial-in listener: the meters call it (repeat)"
    ),
    calls: int = typer.Option(1, min=0, help="with --dial-in: calls per meter, --every apart (0: until stopped)"),
    every: str = typer.Option("15m", help="with --dial-in: time between two calls of a meter (e.g. 15m, 30s)"),
    schedule: str = typer.Option("15m", help="with --dial-in: read interval written into the fleet file"),
    fleet_out: Path | None = typer.Option(None, help="with --dial-in: write the calling meters' fleet file here"),
    call_log: Path | None = typer.Option(None, help="with --dial-in: append one JSON line per call made"),
    write_only: bool = typer.Option(False, "--write-only", help="with --dial-in: write the fleet file, call nobody"),
) -> None:
    """Serve a wired M-Bus bus behind a TCP gateway (raw EN 13757-2 frames); or meters that dial in (--dial-in)."""
    import asyncio

    if dial_in:
        from gxami_meterlab.cli_dialin_meters import DialInRun, mbus_dial_in

        every_s = _every_seconds(every)
        mbus_dial_in(
            DialInRun("mbus", meters, seed, dial_in, every_s, calls, schedule, fleet_out, call_log, write_only)
        )
        return

    from gxami_meterlab.simulators.mbus import MBusBus, MBusTcpGateway

    bus = MBusBus(seed, meters, clock=_now)
    gw = MBusTcpGateway(bus, host, port)

    def banner() -> str:
        addrs = ", ".join(f"{m.primary_address}/{m.secondary}" for m in bus.meters)
        return f"M-Bus gateway at tcp://{host}:{gw.port}; meters (primary/secondary): {addrs}"

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_until_stopped(gw.start, gw.stop, banner))


@app.command("wmbus")
def wmbus(
    meters: int = typer.Option(5, min=1, max=10_000, help="simulated water meters (even ones encrypted, mode 5)"),
    seed: int = typer.Option(1, help="values, ids and keys are deterministic from this"),
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(0, help="port of the telegram feed (0: a free one)"),
    feed: str = typer.Option("tcp", "--feed", help="how the receiver is reached: tcp (a gateway or ser2net bridge)"),
    framing: str = typer.Option(
        "hex", "--framing", help="hex, length, lfield, im871a or amber (the receiver's framing)"
    ),
    interval: float = typer.Option(1.0, min=0.0, help="mean seconds between two telegrams of one meter"),
    schedule: str = typer.Option("own", "--schedule", help="own: each meter at its own interval; rounds: all at once"),
    telegrams: int | None = typer.Option(None, "--telegrams", min=1, help="telegrams per meter (default: endless)"),
    junk: bool = typer.Option(False, "--junk", help="mix comments, noise and dongle status frames into the feed"),
    keys_out: Path | None = typer.Option(None, help="write the meters' AES keys here (a secrets file)"),
    fleet_out: Path | None = typer.Option(
        None, help="write a fleet file of the meters (connection: push, meter id = wM-Bus ID, as --keys-out)"
    ),
    start: datetime | None = typer.Option(
        None, "--start", formats=["%Y-%m-%dT%H:%M:%S%z"], help="the meters' clock at the first telegram (default: now)"
    ),
    time_scale: float = typer.Option(
        1.0, "--time-scale", min=0.001, help="meter-clock seconds per real second between telegrams (own schedule)"
    ),
) -> None:
    """Serve a wM-Bus receiver's TCP feed: N meters sending raw telegrams, in a receiver's framing."""
    import asyncio

    from gxami_meterlab.simulators.wmbus import WMBusFeedServer, WMBusTelegramGenerator

    if (
        feed != "tcp"
        or framing not in {"hex", "length", "lfield", "im871a", "amber"}
        or schedule not in {"own", "rounds"}
    ):
        typer.echo(
            "gxami simulate wmbus: --feed tcp, --framing hex|length|lfield|im871a|amber, --schedule own|rounds",
            err=True,
        )
        raise typer.Exit(2)
    gen = WMBusTelegramGenerator(seed, meters)
    server = WMBusFeedServer(
        gen,
        host=host,
        port=port,
        framing=framing,  # type: ignore[arg-type]  # checked against the framings above
        interval=interval,
        start=(start.astimezone(UTC) if start.tzinfo else start.replace(tzinfo=UTC)) if start else _now(),
        own_intervals=schedule == "own",
        rounds=telegrams if schedule == "rounds" else None,
        per_meter=telegrams if schedule == "own" else None,
        junk=junk,
        time_scale=time_scale,
    )
    if keys_out is not None:
        keys = {str(k): v.hex() for k, v in gen.keys().items() if v is not None}
        _write_atomic(keys_out, {"meters": {m: {"key": k} for m, k in keys.items()}})

    def banner() -> str:
        if fleet_out is not None:  # once the feed is up: its port is the meters' (informative) address
            address = f"tcp://{host}:{server.port}"
            rows = [
                {"meter_id": m.id, "protocol": "wmbus", "address": address, "profile": "generic-wmbus-water",
                 "schedule": "15m", "connection": "push", "wmbus_id": m.id, "purposes": ["billing", "diagnostics"]}
                for m in gen.meters
            ]  # fmt: skip
            _write_atomic(fleet_out, {"meters": rows})
        each = f"{telegrams} telegrams each" if telegrams else "endlessly"
        how = "each at its own interval" if schedule == "own" else "in rounds"
        return (
            f"wM-Bus feed at tcp://{host}:{server.port}: {meters} meters, {framing} framing,"
            f" about every {interval:g} s {how}, {each}"
        )

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_until_stopped(server.start, server.stop, banner))


@app.command("dsmr")
def dsmr(
    seed: int = typer.Option(1, help="values are deterministic from this"),
    variant: str = typer.Option("5.0", help="DSMR version or variant (2.2, 3.0, 4.2, 5.0, e-mucs, smarty)"),
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(0, help="port of the P1-to-TCP bridge (0: a free one)"),
    interval: float = typer.Option(10.0, help="seconds between telegrams (DSMR 5 meters send every 1 s)"),
) -> None:
    """Serve a P1 port over TCP (as ser2net would): a telegram to every client every interval."""
    import asyncio

    from gxami_meterlab.simulators.dsmr import DsmrTcpServer, SimulatedP1Meter

    server = DsmrTcpServer(SimulatedP1Meter(seed, 0, variant=variant), host=host, port=port, interval=interval)

    def banner() -> str:
        return f"DSMR {variant} P1 bridge at tcp://{host}:{server.port}, a telegram every {interval} s"

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_until_stopped(server.start, server.stop, banner))


@app.command("iec62056-21")
def iec62056_21(
    seed: int = typer.Option(1, help="values are deterministic from this"),
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(0, help="port of the optical-probe bridge (0: a free one)"),
    address: str = typer.Option("", help="device address the meter answers to (empty: any)"),
    dial_in: list[str] = typer.Option(
        [], help="HOST:PORT of a collector's dial-in listener: the meters call it (repeat)"
    ),
    meters: int = typer.Option(1, min=1, max=10_000, help="with --dial-in: how many meters call"),
    calls: int = typer.Option(1, min=0, help="with --dial-in: calls per meter, --every apart (0: until stopped)"),
    every: str = typer.Option("15m", help="with --dial-in: time between two calls of a meter (e.g. 15m, 30s)"),
    schedule: str = typer.Option("15m", help="with --dial-in: read interval written into the fleet file"),
    fleet_out: Path | None = typer.Option(None, help="with --dial-in: write the calling meters' fleet file here"),
    call_log: Path | None = typer.Option(None, help="with --dial-in: append one JSON line per call made"),
    write_only: bool = typer.Option(False, "--write-only", help="with --dial-in: write the fleet file, call nobody"),
) -> None:
    """Serve an IEC 62056-21 meter (mode C sign-on, option select, readout with BCC) over TCP; or dial in."""
    import asyncio

    if dial_in:
        from gxami_meterlab.cli_dialin_meters import DialInRun, iec_dial_in

        every_s = _every_seconds(every)
        run = DialInRun("iec62056-21", meters, seed, dial_in, every_s, calls, schedule, fleet_out, call_log, write_only)
        iec_dial_in(run)
        return

    from gxami_meterlab.simulators.iec62056_21 import Iec62056TcpServer, SimulatedIecMeter

    server = Iec62056TcpServer(lambda: SimulatedIecMeter(seed, 0, address=address), host=host, port=port)

    def banner() -> str:
        return f"IEC 62056-21 meter at tcp://{host}:{server.port}" + (f", address {address}" if address else "")

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_until_stopped(server.start, server.stop, banner))
