"""`gxami demo`: a simulated DLMS fleet read end to end, on the local stack.

Brings up the broker and database, starts the meter simulator and the four services
as separate processes, imports the fleet, shows progress while collecting, prints the
daily report and where to look, and shuts everything down (unless --keep-running).
"""

from __future__ import annotations

import asyncio
import signal
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from gxami_meterlab.cli_procs import ServiceProcess, gxami_argv, service_env
from gxami_meterlab.devstack import DevStack, DevStackError, default_root
from gxami_meterlab.devstack_procs import free_port

SERVICES = ("scheduler", "collector", "ingest", "reports")


@dataclass
class CollectState:
    meters_read: int
    meters_failed: int
    readings: int
    published: int = 0


def _ingested(metrics_url: str) -> int:
    """Readings ingest has handled (stored, duplicate, revision, replaced estimate), from its /metrics."""
    try:
        with urllib.request.urlopen(metrics_url, timeout=2) as resp:  # noqa: S310 - our own local service
            text = resp.read().decode()
    except OSError:
        return -1
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("gxami_ingest_readings_total{")
        )
    )


async def _progress(dsn: str) -> CollectState:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        rec = await conn.fetchrow(
            """SELECT (SELECT count(*) FROM meter_schedule WHERE last_success_at IS NOT NULL) AS ok,
                      (SELECT count(*) FROM meter_schedule WHERE last_success_at IS NULL
                                                          AND consecutive_failures > 0) AS failed,
                      (SELECT count(*) FROM readings WHERE job_id IS DISTINCT FROM 'vee:estimate') AS readings,
                      (SELECT coalesce(sum(readings_count), 0) FROM job_results WHERE status = 'ok') AS published"""
        )
    finally:
        await conn.close()
    assert rec is not None
    return CollectState(int(rec["ok"]), int(rec["failed"]), int(rec["readings"]), int(rec["published"]))


async def _report_rows(dsn: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        return list(
            await conn.fetch("SELECT meter_id, day, kwh, readings FROM daily_consumption ORDER BY meter_id, day")
        )
    finally:
        await conn.close()


class Demo:
    """One demo run; every process it starts is stopped in ``shutdown``."""

    def __init__(self, root: Path, meters: int, seed: int) -> None:
        self.root = root
        self.meters = meters
        self.seed = seed
        self.console = Console()
        # A fresh database each run, so the report shows this run only.
        self.stack = DevStack(root / "stack", fresh=True)
        self.procs: list[ServiceProcess] = []
        self.ports: dict[str, int] = {}

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> ServiceProcess:
        p = ServiceProcess(name, argv, env, self.root / "logs" / f"{name}.log")
        p.start()
        self.procs.append(p)
        return p

    def start(self) -> None:
        c = self.console
        c.print("[bold]gxami demo[/bold]: starting the local broker (Tansu) and PostgreSQL ...")
        self.stack.start()
        base = self.stack.env()
        fleet, secrets = self.root / "fleet.yaml", self.root / "secrets.yaml"
        for f in (fleet, secrets):
            f.unlink(missing_ok=True)
        c.print(f"starting {self.meters} simulated DLMS meters (seed {self.seed}) ...")
        sim = self._spawn(
            "simulator",
            gxami_argv(
                "simulate",
                "dlms",
                "--meters",
                str(self.meters),
                "--seed",
                str(self.seed),
                "--fleet-out",
                str(fleet),
                "--secrets-out",
                str(secrets),
            ),
            service_env(base, 0, "simulator"),
        )
        deadline = time.monotonic() + 60
        while not fleet.exists():
            if not sim.alive() or time.monotonic() > deadline:
                raise DevStackError(f"the simulator did not start; see {sim.log_path}")
            time.sleep(0.1)
        env_common = {**base, "GXAMI_SECRETS_FILE": str(secrets), "GXAMI_HISTORY_DAYS": "3"}
        migrate = ServiceProcess(
            "migrate",
            gxami_argv("db", "migrate"),
            service_env(env_common, 0, "migrate"),
            self.root / "logs" / "migrate.log",
        )
        migrate.start()
        assert migrate.proc is not None
        if migrate.proc.wait(60) != 0:
            raise DevStackError(f"schema migration failed; see {migrate.log_path}")
        imp = ServiceProcess(
            "fleet-import",
            gxami_argv("fleet", "import", str(fleet)),
            service_env(env_common, 0, "fleet-import"),
            self.root / "logs" / "fleet-import.log",
        )
        imp.start()
        assert imp.proc is not None
        if imp.proc.wait(60) != 0:
            raise DevStackError(f"fleet import failed; see {imp.log_path}")
        for name in SERVICES:
            port = free_port()
            self.ports[name] = port
            self._spawn(name, gxami_argv(name), service_env(env_common, port, name))
        c.print("services: " + ", ".join(f"{n} (pid {p.pid})" for n, p in zip(SERVICES, self.procs[1:], strict=True)))

    def collect(self, timeout: float) -> CollectState:
        """Show progress until every meter has been read once (or failed) and ingest has handled
        every reading the collector published for those reads."""
        dsn = self.stack.database_url
        metrics = f"http://127.0.0.1:{self.ports['ingest']}/metrics"
        state = CollectState(0, 0, 0)
        started = time.monotonic()
        with Progress(
            TextColumn("[bold blue]collecting"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("meters read"),
            TextColumn("[green]{task.fields[readings]} readings stored"),
            TextColumn("{task.fields[failed]} failing"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        ) as bar:
            task = bar.add_task("collect", total=self.meters, readings=0, failed=0)
            while time.monotonic() - started < timeout:
                dead = [p.name for p in self.procs if not p.alive()]
                if dead:
                    raise DevStackError(f"{', '.join(dead)} stopped unexpectedly; see {self.root / 'logs'}")
                try:
                    state = asyncio.run(_progress(dsn))
                except (OSError, asyncpg.PostgresError):
                    time.sleep(0.5)
                    continue
                bar.update(task, completed=state.meters_read, readings=state.readings, failed=state.meters_failed)
                all_read = state.meters_read + state.meters_failed >= self.meters
                if all_read and _ingested(metrics) >= state.published:
                    break
                time.sleep(0.5)
        return state

    def report(self) -> int:
        rows = asyncio.run(_report_rows(self.stack.database_url))
        from rich.table import Table

        table = Table(title=f"Daily consumption (kWh per UTC day), {len(rows)} rows; first 15 shown")
        for col in ("meter", "day", "kWh", "readings"):
            table.add_column(col, justify="right" if col in {"kWh", "readings"} else "left")
        for r in rows[:15]:
            table.add_row(r["meter_id"], r["day"].isoformat(), f"{r['kwh']:,.3f}", str(r["readings"]))
        self.console.print(table)
        c = self.console
        c.print(f"database  {self.stack.database_url}   (views: daily_consumption, meter_last_seen)")
        c.print(f"report    http://127.0.0.1:{self.ports['reports']}/reports/daily")
        c.print("          needs a viewer token: GXAMI_DATABASE_URL=... gxami token create --role viewer --name me")
        c.print("metrics   " + "  ".join(f"{n}: http://127.0.0.1:{p}/metrics" for n, p in self.ports.items()))
        c.print(f"logs      {self.root / 'logs'}")
        return len(rows)

    def shutdown(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        self.stack.stop()


def run_demo(*, meters: int, seed: int, keep_running: bool, timeout: float) -> int:
    root = default_root().parent / "demo"
    demo = Demo(root, meters, seed)
    # Ctrl-C and SIGTERM both end in the finally below, so nothing is left running.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        demo.start()
        state = demo.collect(timeout)
        rows = demo.report()
        if keep_running:
            demo.console.print("[bold]running[/bold]; press Ctrl-C to stop")
            try:
                while all(p.alive() for p in demo.procs):
                    time.sleep(1)
            except KeyboardInterrupt:
                demo.console.print("stopping")
        summary = f"demo: {state.meters_read} meters read, {state.readings} readings stored, {rows} report rows"
    except DevStackError as exc:
        demo.console.print(f"[red]gxami demo: {exc}[/red]")
        return 2
    except KeyboardInterrupt:
        demo.console.print("interrupted; stopping")
        return 130
    finally:
        demo.shutdown()
    print(summary)  # noqa: T201 - the demo's result on stdout, after the live console is gone
    return 0 if state.meters_read >= meters else 1
