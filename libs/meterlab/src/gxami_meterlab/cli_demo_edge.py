"""`gxami demo --scenario edge`: meters without static addresses and an edge site whose uplink is cut.

On the local stack: the scheduler, ingest and a central collector (push and dial-in listeners, a
wM-Bus receiver) run as processes beside an edge collector (``GXAMI_SITE=edge``, a spool) that
reads a few polled meters. The broker advertises a relay's address (:mod:`gxami_meterlab.tcp_relay`),
so the demo can cut the edge's connections alone for 30 s while the centre keeps running. It ends
with the line ``edge: <P> pushed readings stored, <D> dial-in meters read, <W> wM-Bus meters heard,
<S> spooled readings forwarded, <L> lost`` counted from the database, the simulators' logs and the
edge's spool and metrics; it exits non-zero unless nothing was lost.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import yaml
from rich.console import Console

from gxami_meterlab.cli_procs import ServiceProcess, gxami_argv, service_env
from gxami_meterlab.devstack import DevStack, DevStackError, default_root
from gxami_meterlab.devstack_procs import free_port
from gxami_meterlab.simulators.dlms import ROW_PERIOD
from gxami_meterlab.tcp_relay import CutRelay

CUT_S = 30.0
SLOT_S, LEAD_S = 60, 5.0  # the edge meters' read interval (1m); the cut begins this long before a slot
AUTONOMOUS_AFTER_S = 10  # the edge's GXAMI_EDGE_AUTONOMOUS_AFTER: its local read comes LEAD_S + this into the cut
SITE = "edge"
HISTORY_DAYS = 0.05  # 72 minutes of load profile asked of a new meter: a few rows each
SEEDS = {"polled": 31, "push": 32, "dial-in": 33, "wmbus": 34, "iec": 35, "mbus": 36}
METERS = 3
PUSH_EVERY_S, PUSHES = 10, 8
DIAL_EVERY_S, CALLS = 30, 2
QUANTITIES = ("1-0:1.8.0", "1-0:2.8.0")  # what a load-profile row of the simulated meters gives
SPOOL_FILE = "spool.sqlite3"  # gxami_collector.spool.SPOOL_FILE (a library does not import a service)
FLEET_COPY = "edge-fleet.json"
SIMULATORS_THAT_END = frozenset(
    {"pushing-meters", "dial-in-meters", "iec-dial-in-meters", "mbus-dial-in-meters"}
)  # gxami_collector.edge_schedule.STATE_FILE


@dataclass
class Tally:
    """The figures of the summary line, and what is missing."""

    pushed_stored: int = 0
    dial_in_read: int = 0
    wmbus_heard: int = 0
    spooled_forwarded: int = 0
    missing: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"edge: {self.pushed_stored} pushed readings stored, {self.dial_in_read} dial-in meters read,"
            f" {self.wmbus_heard} wM-Bus meters heard, {self.spooled_forwarded} spooled readings forwarded,"
            f" {len(self.missing)} lost"
        )


def _metric(url: str, name: str) -> float | None:
    """The sum of one metric's samples at a service's /metrics (None when it does not answer)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - our own local service
            text = resp.read().decode()
    except OSError:
        return None
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.split("{")[0].split(" ")[0] == name)


def _ready(port: int) -> bool:
    """The service's /ready answers 200 (a collector is ready once its listeners listen)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as resp:
            return int(resp.status) == 200
    except OSError:
        return False


def _spooled_readings(spool_dir: Path) -> set[tuple[str, str, datetime]]:
    """(meter, quantity, ts) of the readings waiting in the edge's spool (read beside the collector)."""
    from gxami_contracts import ReadingBatch

    db = spool_dir / SPOOL_FILE
    if not db.exists():
        return set()
    conn = sqlite3.connect(db, timeout=10)
    try:
        rows = conn.execute("SELECT topic, value FROM outbox WHERE topic = 'ami.readings'").fetchall()
    finally:
        conn.close()
    out: set[tuple[str, str, datetime]] = set()
    for _, value in rows:
        batch = ReadingBatch.from_wire(value)
        out |= {(batch.meter_id, r.quantity, r.ts) for r in batch.readings()}
    return out


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


class EdgeDemo:
    """One run of the edge scenario; every process it starts is stopped in ``shutdown``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.console = Console()
        self.relay_port = free_port()
        self.stack = DevStack(root / "stack", fresh=True, advertised_port=self.relay_port)
        self.relay: CutRelay | None = None
        self.procs: list[ServiceProcess] = []
        self.ports: dict[str, int] = {}
        self.ids: dict[str, list[str]] = {}
        self.dialers: dict[str, list[str]] = {}  # the IEC and M-Bus dial-in simulators, started with the others
        self.spool_dir = root / "edge-spool"
        self.began = datetime.now(UTC)

    def _spawn(self, name: str, argv: list[str], env: dict[str, str], port: int = 0) -> ServiceProcess:
        p = ServiceProcess(name, argv, service_env(env, port, name), self.root / "logs" / f"{name}.log")
        p.start()
        self.procs.append(p)
        return p

    def _run(self, steps: dict[str, list[str]], env: dict[str, str]) -> None:
        """Run the commands at once and wait for all; any failing one is a DevStackError."""
        procs = [
            ServiceProcess(n, a, service_env(env, 0, n), self.root / "logs" / f"{n}.log") for n, a in steps.items()
        ]
        for p in procs:
            p.start()
        for p in procs:
            assert p.proc is not None
            if p.proc.wait(120) != 0:
                raise DevStackError(f"{p.name} failed; see {p.log_path}")

    def _wait(self, what: str, until: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not until():
            dead = [p.name for p in self.procs if not p.alive() and p.name not in SIMULATORS_THAT_END]
            if dead:
                raise DevStackError(f"{', '.join(dead)} stopped unexpectedly; see {self.root / 'logs'}")
            if time.monotonic() > deadline:
                raise DevStackError(f"timed out waiting for {what}; see {self.root / 'logs'}")
            time.sleep(0.5)

    def _files(self, base: dict[str, str]) -> Path:
        """Write each simulated fleet's files, merge them into one fleet file and one secrets file."""
        files = self.root / "files"
        files.mkdir(parents=True, exist_ok=True)
        for f in files.iterdir():
            f.unlink()
        self.ports.update(push=free_port(), dial_in=free_port(), wmbus=free_port(), iec=free_port(), mbus=free_port())
        common = ("--meters", str(METERS), "--fleet-out")

        def out(kind: str) -> tuple[str, str, str, str]:
            return (str(files / f"{kind}.yaml"), "--secrets-out", str(files / f"{kind}-secrets.yaml"), "--write-only")

        dlms = ("simulate", "dlms", "--seed")
        push_files = gxami_argv(*dlms, str(SEEDS["push"]), "--push-to", f"127.0.0.1:{self.ports['push']}",
                                "--ciphered", "--every", f"{PUSH_EVERY_S}s", *common, *out("push"))  # fmt: skip
        dial_files = gxami_argv(*dlms, str(SEEDS["dial-in"]), "--dial-in", f"127.0.0.1:{self.ports['dial_in']}",
                                "--schedule", "1m", *common, *out("dial-in"))  # fmt: skip
        steps = {"files-push": push_files, "files-dial-in": dial_files}
        # One IEC 62056-21 and one M-Bus meter call too; their fleet files are written as they start.
        for kind, cmd in (("iec", "iec62056-21"), ("mbus", "mbus")):
            argv = gxami_argv("simulate", cmd, "--meters", "1", "--seed", str(SEEDS[kind]), "--dial-in",
                              f"127.0.0.1:{self.ports[kind]}", "--calls", str(CALLS), "--every", f"{DIAL_EVERY_S}s",
                              "--schedule", "1m", "--fleet-out", str(files / f"{kind}.yaml"),
                              "--call-log", str(files / f"{kind}-calls.jsonl"))  # fmt: skip
            self.dialers[kind] = argv
            steps[f"files-{kind}"] = [*argv, "--write-only"]
        self._run(steps, base)
        polled = self._spawn(
            "polled-meters",
            gxami_argv(
                *dlms,
                str(SEEDS["polled"]),
                "--authentication",
                "high-gmac",
                "--schedule",
                "1m",
                *common,
                *out("polled")[:3],
            ),
            base,
        )
        self._spawn(
            "wmbus-feed",
            gxami_argv(
                "simulate",
                "wmbus",
                "--seed",
                str(SEEDS["wmbus"]),
                "--meters",
                str(METERS),
                "--port",
                str(self.ports["wmbus"]),
                "--interval",
                "5",
                "--keys-out",
                str(files / "wmbus-secrets.yaml"),
                "--fleet-out",
                str(files / "wmbus.yaml"),
            ),
            base,
        )
        self._wait(
            "the simulators' fleet files", lambda: all((files / f"{k}.yaml").exists() for k in ("polled", "wmbus")), 60
        )
        assert polled.alive()
        meters: list[dict[str, Any]] = []
        secrets: dict[str, Any] = {"default": {}, "meters": {}}
        for kind in ("polled", "push", "dial-in", "wmbus", "iec", "mbus"):
            fleet = yaml.safe_load((files / f"{kind}.yaml").read_text())["meters"]
            for m in fleet:
                if kind == "polled":
                    m.update(site=SITE, purposes=["billing", "load-profile"])
                if kind == "dial-in":
                    m.update(purposes=["billing", "load-profile"])
            meters += fleet
            self.ids[kind] = [m["meter_id"] for m in fleet]
            secrets_of = files / f"{kind}-secrets.yaml"
            sec = (yaml.safe_load(secrets_of.read_text()) if secrets_of.exists() else None) or {}
            secrets["meters"].update(sec.get("meters") or {})
            secrets["default"].update(sec.get("default") or {})
        (self.root / "fleet.yaml").write_text(yaml.safe_dump({"meters": meters}))
        secrets_file = self.root / "secrets.yaml"
        secrets_file.touch(mode=0o600)
        secrets_file.write_text(yaml.safe_dump(secrets))
        return secrets_file

    def start(self) -> None:
        c = self.console
        c.print("[bold]gxami demo --scenario edge[/bold]: starting the broker (behind a relay) and PostgreSQL ...")
        self.stack.start()
        self.relay = CutRelay(self.relay_port, int(self.stack.endpoints.kafka_bootstrap.rsplit(":", 1)[1]))
        self.relay.start()
        base = {**self.stack.env(), "GXAMI_KAFKA_BOOTSTRAP": f"127.0.0.1:{self.relay_port}"}
        secrets_file = self._files(base)
        env = {
            **base,
            "GXAMI_SECRETS_FILE": str(secrets_file),
            "GXAMI_HISTORY_DAYS": str(HISTORY_DAYS),
            "GXAMI_KAFKA_REQUEST_TIMEOUT_MS": "5000",
        }
        self._run({"migrate": gxami_argv("db", "migrate")}, env)
        self._run({"fleet-import": gxami_argv("fleet", "import", str(self.root / "fleet.yaml"))}, env)
        for name in ("ingest", "scheduler"):
            self.ports[name] = free_port()
            self._spawn(name, gxami_argv(name), env, self.ports[name])
        listeners = ",".join(
            f"{kind}@tcp://127.0.0.1:{self.ports[port]}"
            for kind, port in (("dlms-push", "push"), ("dlms-dial-in", "dial_in"),
                               ("iec62056-21-dial-in", "iec"), ("mbus-dial-in", "mbus"))
        )  # fmt: skip
        central = {
            **env,
            "XDG_STATE_HOME": str(self.root / "state" / "central"),
            "GXAMI_LISTENERS": listeners,
            "GXAMI_WMBUS_RECEIVERS": f"tcp://127.0.0.1:{self.ports['wmbus']}?framing=hex",
        }
        self.ports["collector"] = free_port()
        self._spawn("collector", gxami_argv("collector"), central, self.ports["collector"])
        edge = {
            **env,
            "XDG_STATE_HOME": str(self.root / "state" / "edge"),
            "GXAMI_SITE": SITE,
            "GXAMI_SPOOL_DIR": str(self.spool_dir),
            "GXAMI_CONSUMER_GROUP": "collector-edge",
            "GXAMI_EDGE_AUTONOMOUS_AFTER": f"{AUTONOMOUS_AFTER_S}s",
        }
        self.ports["edge"] = free_port()
        self.edge = self._spawn("edge-collector", gxami_argv("collector"), edge, self.ports["edge"])
        self._wait(
            "the central collector's listeners",
            lambda: _ready(self.ports["collector"]) and _ready(self.ports["edge"]),
            90,
        )
        files = self.root / "files"
        dlms = ("simulate", "dlms", "--meters", str(METERS), "--seed")
        self._spawn(
            "pushing-meters",
            gxami_argv(
                *dlms,
                str(SEEDS["push"]),
                "--push-to",
                f"127.0.0.1:{self.ports['push']}",
                "--ciphered",
                "--every",
                f"{PUSH_EVERY_S}s",
                "--pushes",
                str(PUSHES),
                "--sent-log",
                str(files / "pushes.jsonl"),
            ),
            base,
        )
        self._spawn(
            "dial-in-meters",
            gxami_argv(
                *dlms,
                str(SEEDS["dial-in"]),
                "--dial-in",
                f"127.0.0.1:{self.ports['dial_in']}",
                "--every",
                f"{DIAL_EVERY_S}s",
                "--calls",
                str(CALLS),
                "--call-log",
                str(files / "calls.jsonl"),
            ),
            base,
        )
        for kind, argv in self.dialers.items():
            self._spawn(f"{kind}-dial-in-meters", argv, base)
        c.print("services: " + ", ".join(f"{p.name} (pid {p.pid})" for p in self.procs))

    def cut(self) -> set[tuple[str, str, datetime]]:
        """Read the edge's meters once through the scheduler, cut its uplink for CUT_S, mend it;
        return the readings its spool held when the link came back."""
        assert self.relay is not None
        polled = set(self.ids["polled"])
        self._wait(
            "a read of every edge meter through the scheduler", lambda: asyncio.run(self._read_ok()) >= polled, 180
        )
        self._wait("the edge's copy of its site's fleet", (self.spool_dir / FLEET_COPY).exists, 60)
        # The cut begins just before a read slot (slots end on the clock): the scheduler's job for
        # that slot cannot reach the edge, which then reads its meters on its own schedule
        # (GXAMI_EDGE_AUTONOMOUS_AFTER later) into its spool while it is still cut off.
        time.sleep((SLOT_S - LEAD_S - time.time() % SLOT_S) % SLOT_S)
        self.console.print(f"cutting the edge collector's uplink for {CUT_S:g} s (the centre runs on) ...")
        self.relay.cut([self.edge.pid])
        time.sleep(CUT_S)
        spooled = _spooled_readings(self.spool_dir)
        self.relay.mend()
        self.console.print(f"uplink back; {len(spooled)} readings waited in the edge's spool")
        return spooled

    async def _read_ok(self) -> set[str]:
        conn = await asyncpg.connect(self.stack.database_url, timeout=5)
        try:
            rows = await conn.fetch("SELECT DISTINCT meter_id FROM job_results WHERE status = 'ok'")
        finally:
            await conn.close()
        return {r["meter_id"] for r in rows}

    async def _tally(self, spooled: set[tuple[str, str, datetime]]) -> Tally:
        conn = await asyncpg.connect(self.stack.database_url, timeout=5)
        try:
            recs = await conn.fetch("SELECT meter_id, quantity, ts FROM readings")
            last_ok = {
                r["meter_id"]: r["started_at"]
                for r in await conn.fetch(
                    "SELECT meter_id, max(started_at) AS started_at FROM job_results"
                    " WHERE status = 'ok' GROUP BY meter_id"
                )
            }
        finally:
            await conn.close()
        stored = {(r["meter_id"], r["quantity"], r["ts"]) for r in recs}
        by_meter: dict[str, set[datetime]] = {}
        for m, _, ts in stored:
            by_meter.setdefault(m, set()).add(ts)
        t = Tally()
        t.pushed_stored = sum(1 for m, _, _ in stored if m in set(self.ids["push"]))
        dial_in = [*self.ids["dial-in"], *self.ids["iec"], *self.ids["mbus"]]
        t.dial_in_read = sum(1 for m in dial_in if by_meter.get(m))
        t.missing += [f"never read {m}" for m in [*self.ids["iec"], *self.ids["mbus"]] if not by_meter.get(m)]
        t.wmbus_heard = sum(1 for m in self.ids["wmbus"] if by_meter.get(m))
        t.spooled_forwarded = len(spooled & stored)
        t.missing += [f"spooled {m} {q} {ts.isoformat()}" for m, q, ts in sorted(spooled - stored)]
        # Every push the simulator sent carries its instant: the readings it gave are stamped with it.
        for p in _jsonl(self.root / "files" / "pushes.jsonl"):
            if datetime.fromisoformat(p["at"]) not in by_meter.get(p["meter_id"], set()):
                t.missing.append(f"push {p['meter_id']} {p['at']}")
        # A meter that was read holds a load-profile row every ROW_PERIOD: each row of the window
        # asked (history back from the start) up to its last good read must be stored.
        first = self.began - timedelta(days=HISTORY_DAYS) + timedelta(seconds=ROW_PERIOD)
        start = int(first.timestamp()) // ROW_PERIOD * ROW_PERIOD + ROW_PERIOD
        for m in [*self.ids["polled"], *self.ids["dial-in"]]:
            if m not in last_ok:
                t.missing.append(f"never read {m}")
                continue
            end = int(last_ok[m].timestamp()) - 60
            for s in range(start, end + 1, ROW_PERIOD):
                ts = datetime.fromtimestamp(s, UTC)
                t.missing += [f"profile {m} {q} {ts.isoformat()}" for q in QUANTITIES if (m, q, ts) not in stored]
        return t

    def settle(self, spooled: set[tuple[str, str, datetime]], timeout: float) -> Tally:
        """Wait for the simulators to finish and the spool to drain, until nothing is missing or time is up."""
        edge_metrics = f"http://127.0.0.1:{self.ports['edge']}/metrics"
        done = SIMULATORS_THAT_END
        deadline = time.monotonic() + timeout
        while True:
            finished = all(not p.alive() for p in self.procs if p.name in done)
            drained = _metric(edge_metrics, "gxami_collector_spool_records") == 0
            tally = asyncio.run(self._tally(spooled))
            if (finished and drained and not tally.missing) or time.monotonic() > deadline:
                return tally
            self._wait("nothing", lambda: True, 0)
            time.sleep(1)

    def shutdown(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        if self.relay is not None:
            self.relay.stop()
        self.stack.stop()


def run_edge_demo(*, timeout: float) -> int:
    demo = EdgeDemo(default_root().parent / "demo-edge")
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        demo.start()
        spooled = demo.cut()
        tally = demo.settle(spooled, timeout)
    except DevStackError as exc:
        demo.console.print(f"[red]gxami demo: {exc}[/red]")
        return 2
    except KeyboardInterrupt:
        demo.console.print("interrupted; stopping")
        return 130
    finally:
        demo.shutdown()
    for what in tally.missing[:20]:
        demo.console.print(f"[red]missing[/red] {what}")
    demo.console.print(f"logs      {demo.root / 'logs'}")
    print(tally.line())  # noqa: T201 - the demo's result on stdout, after the live console is gone
    return 0 if not tally.missing else 1
