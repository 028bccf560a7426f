"""`gxami demo --scenario control`: meters controlled through the real command API, end to end.

The local broker and database, the four services as processes, and a few ciphered DLMS meters
simulated in this process (so the demo can look inside them: relay, clock, calendars and the log
of what each meter carried out). Through the scheduler's API with an operator token it
disconnects and reconnects meters, arms a reconnection that the customer's button closes,
syncs a drifted clock, writes a tariff calendar to a group (``gxami tariff apply``), lets one
command expire before any collector runs it, replays one command id five times, and tries the
API without a valid token. Every effect is checked on the simulated meter itself. The last line:

    control: <S> commands succeeded, <X> expired and not executed, <R> refused without a valid token, <A> audit rows

counted from the API (S), the API and the meters' own logs (X), the HTTP answers (R) and the
``command_audit`` table (A); the exit code is 0 only when S > 0, X >= 1, R >= 1, A equals the
number of per-meter final outcomes and every check on the meters held.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import yaml

from gxami_meterlab.cli_demo import SERVICES, Demo
from gxami_meterlab.cli_procs import ServiceProcess, gxami_argv, service_env
from gxami_meterlab.devstack import DevStackError, default_root
from gxami_meterlab.devstack_procs import free_port
from gxami_meterlab.simulators.dlms import DlmsFleetSimulator, meter_secrets, meter_system_title
from gxami_runtime.auth import Role, create_token
from gxcore.protocols.dlms import calendar as cal
from gxcore.tariffs import parse_tariff

GROUP = "control-demo"
DRIFT = timedelta(minutes=7)
CLOCK_TOLERANCE_S = 30.0
FINAL = frozenset({"succeeded", "failed", "expired", "cancelled"})
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=15)
# Meter roles by index: two relays switched off and on, one whose reconnection needs the customer's
# button (IDIS control mode 2), one whose clock has drifted. Every one gets the tariff calendar.
RELAYS, BUTTON, DRIFTING = (0, 1), 2, 3
METERS = 4
TARIFF = """\
name: DEMO-TOU
activate_at: 2030-01-01T00:00:00Z
seasons:
  - {name: year, start: "01-01", week: standard}
weeks:
  - {name: standard, monday: workday, tuesday: workday, wednesday: workday, thursday: workday,
     friday: workday, saturday: weekend, sunday: weekend}
days:
  - name: workday
    id: 1
    switches: [{at: "00:00", tariff: 2}, {at: "07:00", tariff: 1}, {at: "22:00", tariff: 2}]
  - name: weekend
    id: 2
    switches: [{at: "00:00", tariff: 2}]
special_days:
  - {index: 1, date: "01-01", day: weekend, name: New Year}
  - {index: 2, date: "12-25", day: weekend, name: Christmas}
"""


@dataclass
class Tally:
    """What the demo found; ``problems`` lists every check on a meter or an answer that did not hold."""

    refused: int = 0
    problems: list[str] = field(default_factory=list)

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            self.problems.append(what)


class ControlDemo(Demo):
    """The stack, the services and the simulated meters of one control demo run."""

    def __init__(self, root: Path, seed: int) -> None:
        super().__init__(root, METERS, seed)
        self.sim = DlmsFleetSimulator(METERS, seed=seed, authentication="high-gmac")
        self.sim.states[DRIFTING].clock_offset = DRIFT
        self.sim.states[BUTTON].control_mode = 2
        self.env: dict[str, str] = {}
        self.operator = ""
        self.viewer = ""

    def meter(self, index: int) -> str:
        return self.sim.meters[index].meter_id

    async def prepare(self) -> None:
        """Fleet and secrets files, schema, fleet import, tokens, then the four services."""
        state = self.root / "state"
        shutil.rmtree(state, ignore_errors=True)
        state.mkdir(parents=True)
        rows = [
            {
                "meter_id": m.meter_id,
                "protocol": "dlms",
                "address": f"tcp://127.0.0.1:{m.port}",
                "profile": "generic-dlms",
                "group": GROUP,
                "schedule": "1d",
                "options": {
                    "authentication": "high-gmac",
                    "client": 1,
                    "server_system_title": meter_system_title(self.seed, m.index).hex(),
                },
            }
            for m in self.sim.meters
        ]
        fleet, secrets = state / "fleet.yaml", state / "secrets.yaml"
        fleet.write_text(yaml.safe_dump({"meters": rows}))
        keys = {m.meter_id: meter_secrets(self.seed, m.index) for m in self.sim.meters}
        secrets.write_text(yaml.safe_dump({"meters": keys}))
        self.env = {
            **self.stack.env(),
            "GXAMI_SECRETS_FILE": str(secrets),
            "GXAMI_INVOCATION_COUNTERS_FILE": str(state / "counters.json"),
            "GXAMI_COMMAND_RECORDS_DIR": str(state / "command-runs"),
            "GXAMI_RESULT_GRACE_S": "1",
            "GXAMI_TICK_SECONDS": "0.5",
            # Short consumer sessions: the collector restarted mid-demo rejoins its groups in seconds.
            "GXAMI_KAFKA_SESSION_TIMEOUT_MS": "3000",
            "GXAMI_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
        }
        for name, argv in (("migrate", ("db", "migrate")), ("fleet-import", ("fleet", "import", str(fleet)))):
            log = self.root / "logs" / f"{name}.log"
            step = ServiceProcess(name, gxami_argv(*argv), service_env(self.env, 0, name), log)
            step.start()
            assert step.proc is not None
            if await asyncio.to_thread(step.proc.wait, 60) != 0:
                raise DevStackError(f"{name} failed; see {step.log_path}")
        conn = await asyncpg.connect(self.stack.database_url, timeout=10)
        try:
            # This demo is about control: no read is due, so every meter session is a command's.
            await conn.execute("UPDATE meter_schedule SET next_due_at = now() + interval '1 day'")
            self.operator = (await create_token(conn, "demo-operator", Role.OPERATOR, "gxami demo")).token
            self.viewer = (await create_token(conn, "demo-viewer", Role.VIEWER, "gxami demo")).token
        finally:
            await conn.close()
        for name in SERVICES:
            self.ports[name] = free_port()
            self._spawn(name, gxami_argv(name), service_env(self.env, self.ports[name], name))
        self.console.print("services: " + ", ".join(f"{p.name} (pid {p.pid})" for p in self.procs))

    def collector(self) -> ServiceProcess:
        return next(p for p in self.procs if p.name == "collector")

    async def stop_collector(self) -> None:
        """SIGTERM the collector and forget it (a stopped collector is not a failure)."""
        old = self.collector()
        self.procs.remove(old)
        await asyncio.to_thread(old.stop)

    def start_collector(self) -> None:
        self._spawn("collector", gxami_argv("collector"), service_env(self.env, self.ports["collector"], "collector"))

    def api(self) -> str:
        return f"http://127.0.0.1:{self.ports['scheduler']}"


async def _until(what: str, check: Callable[[], Awaitable[bool]], timeout: float, demo: ControlDemo) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        dead = [p.name for p in demo.procs if not p.alive()]
        if dead:
            raise DevStackError(f"{', '.join(dead)} stopped unexpectedly; see {demo.root / 'logs'}")
        if time.monotonic() > deadline:
            raise DevStackError(f"timed out waiting for {what}; see {demo.root / 'logs'}")
        await asyncio.sleep(0.3)


def _collector_expired(metrics_url: str) -> float:
    """Commands the collector found expired right before touching the meter (its /metrics)."""
    try:
        with urllib.request.urlopen(metrics_url, timeout=2) as resp:  # noqa: S310 - our own local service
            text = resp.read().decode()
    except OSError:
        return 0.0
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("gxami_collector_commands_total{") and 'outcome="expired"' in line
    )


class Operator:
    """The demo's HTTP side: the real scheduler API with the operator's token."""

    def __init__(self, demo: ControlDemo, http: aiohttp.ClientSession, tally: Tally) -> None:
        self.demo, self.http, self.tally = demo, http, tally
        self.base = demo.api()
        self.auth = {"Authorization": f"Bearer {demo.operator}"}

    async def post(self, body: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        sent = self.auth if headers is None else headers
        async with self.http.post(f"{self.base}/commands", json=body, headers=sent) as resp:
            return resp.status, await resp.json(content_type=None)

    async def show(self, command_id: str) -> dict[str, Any]:
        async with self.http.get(f"{self.base}/commands/{command_id}", headers=self.auth) as resp:
            body: dict[str, Any] = await resp.json(content_type=None)
            return body if resp.status == 200 else {"state": f"http {resp.status}", "meters": []}

    async def finished(self, command_id: str, timeout: float = 90) -> dict[str, Any]:
        async def done() -> bool:
            return (await self.show(command_id))["state"] in FINAL

        await _until(f"command {command_id}", done, timeout, self.demo)
        return await self.show(command_id)

    async def run(self, command_id: str, kind: str, meters: list[str], **extra: Any) -> dict[str, Any]:
        status, body = await self.post({"command_id": command_id, "kind": kind, "meters": meters, **extra})
        self.tally.check(status == 201, f"{command_id}: POST answered {status} {body}")
        command = await self.finished(command_id)
        states = {m["meter_id"]: (m["state"], m.get("result_state")) for m in command["meters"]}
        self.demo.console.print(f"  {command_id}: {kind} {', '.join(meters)} -> {command['state']} {states}")
        return command


async def _scenarios(demo: ControlDemo, op: Operator, tally: Tally) -> None:
    sim, c = demo.sim, demo.console
    relays = [demo.meter(i) for i in RELAYS]

    c.print("[bold]disconnect and reconnect[/bold] (read back from the meters)")
    off = await op.run("demo-off", "disconnect", relays)
    tally.check(all(m["result_state"] == "disconnected" for m in off["meters"]), f"demo-off read-back {off['meters']}")
    tally.check(not any(sim.states[i].connected for i in RELAYS), "a relay did not open")
    on = await op.run("demo-on", "reconnect", relays)
    tally.check(all(m["result_state"] == "connected" for m in on["meters"]), f"demo-on read-back {on['meters']}")
    tally.check(all(sim.states[i].connected for i in RELAYS), "a relay did not close")

    c.print("[bold]arm-reconnect[/bold]: the customer's button closes the relay")
    button = demo.meter(BUTTON)
    await op.run("demo-arm-off", "disconnect", [button])
    armed = await op.run("demo-arm", "arm-reconnect", [button])
    tally.check(armed["meters"][0]["result_state"] == "ready-for-reconnection", f"demo-arm {armed['meters']}")
    tally.check(sim.states[BUTTON].armed and not sim.states[BUTTON].connected, "the meter was not armed")
    sim.states[BUTTON].press_button()
    state = await op.run("demo-relay-state", "relay-state", [button])
    tally.check(state["meters"][0]["result_state"] == "connected", f"after the button {state['meters']}")

    c.print(f"[bold]clock-sync[/bold] of a meter {DRIFT} fast")
    await op.run("demo-clock", "clock-sync", [demo.meter(DRIFTING)])
    left = abs(sim.states[DRIFTING].clock_offset.total_seconds())
    tally.check(left < CLOCK_TOLERANCE_S, f"the drifted clock is still {left:.0f} s off")

    c.print("[bold]tariff calendar[/bold] on the group, with gxami tariff apply")
    tariff = demo.root / "state" / "tariff.yaml"
    tariff.write_text(TARIFF)
    code, out = await _tariff_apply(demo, tariff, "demo-tariff", demo.operator)
    tally.check(code == 0, f"gxami tariff apply exited {code}: {out[-500:]}")
    written = await op.finished("demo-tariff")
    c.print(f"  demo-tariff: tariff-calendar group {GROUP} -> {written['state']}")
    calendar = parse_tariff(TARIFF, "demo tariff")
    passive, special = cal.passive_attributes(calendar), cal.special_days(calendar)
    for i in range(METERS):
        held = sim.states[i].calendar
        tally.check(
            all(held.attributes.get(a) == v for a, v in passive.items()), f"meter {i}: passive calendar differs"
        )
        tally.check(held.special == special, f"meter {i}: special days differ")
        # And without our encoder: the passive calendar_name octet-string is the file's name.
        name = held.attributes.get(6)
        tally.check(name == b"\x09\x08DEMO-TOU", f"meter {i}: passive calendar_name {name!r}")
    audited = await _audit(demo, "demo-tariff")
    results = sorted({f"{who}/{result}" for who, _, result in audited})
    c.print(f"  demo-tariff: every meter holds the file's calendar; {len(audited)} audit rows, {', '.join(results)}")
    tally.check(audited == [("demo-operator", "tariff-calendar", "succeeded")] * METERS, f"tariff audit {audited}")

    # A calendar naming a day it does not define: refused, naming the field, nothing stored.
    broken = yaml.safe_load(TARIFF)
    broken["activate_at"] = broken["activate_at"].isoformat()
    broken["weeks"][0]["friday"] = "holiday"
    status, answer = await op.post(
        {"command_id": "demo-bad-tariff", "kind": "tariff-calendar", "group": GROUP, "body": broken}
    )
    c.print(f"  a calendar with an undefined day: {status} {answer.get('error', '')}")
    tally.check(status == 422 and "holiday" in str(answer.get("error")), f"bad calendar answered {status} {answer}")
    # gxami tariff apply with a viewer's token: the API refuses it (403), the CLI exits 1.
    code, out = await _tariff_apply(demo, tariff, "demo-tariff-viewer", demo.viewer)
    c.print(f"  gxami tariff apply with a viewer token: exit {code}")
    tally.check(code == 1 and "403" in out, f"tariff apply as a viewer exited {code}: {out[-300:]}")
    tally.refused += code == 1 and "403" in out


async def _tariff_apply(demo: ControlDemo, file: Path, command_id: str, token: str) -> tuple[int | None, str]:
    """Run ``gxami tariff apply FILE --group`` as an operator would; its exit code and output."""
    apply = await asyncio.create_subprocess_exec(
        *gxami_argv("tariff", "apply", str(file), "--group", GROUP, "--id", command_id, "--api", demo.api()),
        env={**service_env(demo.env, 0, "tariff-apply"), "GXAMI_TOKEN": token},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(apply.communicate(), 60)
    return apply.returncode, out.decode(errors="replace")


async def _audit(demo: ControlDemo, command_id: str) -> list[tuple[str, str, str]]:
    """Who asked, what and the result, per meter, from ``command_audit``."""
    conn = await asyncpg.connect(demo.stack.database_url, timeout=10)
    try:
        rows = await conn.fetch(
            "SELECT actor, kind, result FROM command_audit WHERE command_id = $1 ORDER BY meter_id", command_id
        )
    finally:
        await conn.close()
    return [(r["actor"], r["kind"], r["result"]) for r in rows]


async def _expiry(demo: ControlDemo, op: Operator, tally: Tally) -> None:
    """A command that expires before any collector runs it: never executed (the meter's own log)."""
    c, target = demo.console, demo.meter(RELAYS[1])
    c.print("[bold]expiry[/bold]: the collector is stopped, a disconnect expires in 3 s")
    await demo.stop_collector()
    before = len(demo.sim.states[RELAYS[1]].executed)
    body = {
        "command_id": "demo-expiring",
        "kind": "disconnect",
        "meter": target,
        "expires_at": (datetime.now(UTC) + timedelta(seconds=3)).isoformat(),
    }
    status, answer = await op.post(body)
    tally.check(status == 201, f"demo-expiring: POST answered {status} {answer}")
    expired = await op.finished("demo-expiring", timeout=60)
    c.print(f"  demo-expiring: {expired['state']}; restarting the collector, which finds it expired")
    demo.start_collector()
    metrics = f"http://127.0.0.1:{demo.ports['collector']}/metrics"

    async def seen() -> bool:
        return await asyncio.to_thread(_collector_expired, metrics) >= 1

    await _until("the collector to refuse the expired command", seen, 90, demo)
    tally.check(len(demo.sim.states[RELAYS[1]].executed) == before, "the expired command reached the meter")
    tally.check(demo.sim.states[RELAYS[1]].connected, "the expired disconnect opened the relay")


async def _replay_and_refusals(demo: ControlDemo, op: Operator, tally: Tally) -> None:
    c, index = demo.console, RELAYS[0]
    c.print("[bold]idempotency[/bold]: one command id posted 5 times")
    before = [e.action for e in demo.sim.states[index].executed]
    body = {"command_id": "demo-replay", "kind": "disconnect", "meter": demo.meter(index)}
    statuses = [(await op.post(body))[0] for _ in range(5)]
    tally.check(statuses == [201, 200, 200, 200, 200], f"demo-replay answers {statuses}")
    await op.finished("demo-replay")
    after = [e.action for e in demo.sim.states[index].executed][len(before) :]
    c.print(f"  demo-replay: answers {statuses}; the meter did {after}")
    tally.check(after == ["remote-disconnect"], f"demo-replay ran {after} on the meter")

    c.print("[bold]refusals[/bold]: no token, a wrong token, a viewer's token")
    probe = {"command_id": "demo-unauthorised", "kind": "reconnect", "meter": demo.meter(index)}
    # The operator's token id with another secret of the same form: well-formed, and wrong.
    wrong = demo.operator[:-1] + ("A" if demo.operator[-1] != "A" else "B")
    for who, headers, want in (
        ("no token", {}, 401),
        ("a wrong token", {"Authorization": f"Bearer {wrong}"}, 401),
        ("a viewer", {"Authorization": f"Bearer {demo.viewer}"}, 403),
    ):
        status, answer = await op.post(probe, headers=headers)
        c.print(f"  {who}: {status} {answer.get('error', '')}")
        tally.check(status == want, f"{who}: answered {status}, not {want}")
        tally.refused += status in (401, 403)
    tally.check((await op.show("demo-unauthorised"))["state"] == "http 404", "a refused command was stored")


async def _count(demo: ControlDemo, op: Operator) -> tuple[int, int, int, int]:
    """S, X, A and the per-meter final outcomes, from the API, the meters' logs and the database."""
    async with op.http.get(f"{op.base}/commands?limit=1000", headers=op.auth) as resp:
        listed = (await resp.json())["commands"]
    succeeded = sum(1 for cmd in listed if cmd["state"] == "succeeded")
    expired_not_run, finals = 0, 0
    index = {m.meter_id: m.index for m in demo.sim.meters}
    for cmd in listed:
        full = await op.show(cmd["command_id"])
        finals += sum(1 for m in full["meters"] if m["state"] in FINAL)
        if full["state"] != "expired":
            continue
        start, end = datetime.fromisoformat(full["requested_at"]), datetime.fromisoformat(full["expires_at"])
        touched = [
            e
            for m in full["meters"]
            for e in demo.sim.states[index[m["meter_id"]]].executed
            if start <= e.at <= end + timedelta(seconds=CLOCK_TOLERANCE_S)
        ]
        expired_not_run += not touched
    conn = await asyncpg.connect(demo.stack.database_url, timeout=10)
    try:
        audit = int(await conn.fetchval("SELECT count(*) FROM command_audit"))
    finally:
        await conn.close()
    return succeeded, expired_not_run, audit, finals


async def _main(demo: ControlDemo) -> tuple[str, bool]:
    tally = Tally()
    async with demo.sim:
        await demo.prepare()
        async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
            op = Operator(demo, http, tally)

            async def ready() -> bool:
                try:
                    async with http.get(f"{op.base}/ready") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            await _until("the scheduler", ready, 90, demo)
            await _scenarios(demo, op, tally)
            await _expiry(demo, op, tally)
            await _replay_and_refusals(demo, op, tally)
            s, x, a, finals = await _count(demo, op)
    for problem in tally.problems:
        demo.console.print(f"[red]check failed: {problem}[/red]")
    if a != finals:
        demo.console.print(f"[red]{a} audit rows for {finals} per-meter final outcomes[/red]")
    line = (
        f"control: {s} commands succeeded, {x} expired and not executed,"
        f" {tally.refused} refused without a valid token, {a} audit rows"
    )
    ok = s > 0 and x >= 1 and tally.refused >= 1 and a == finals and not tally.problems
    return line, ok


def run_control_demo(*, seed: int, timeout: float) -> int:
    """The control scenario; the process exit code (0 only when every count and check holds)."""
    demo = ControlDemo(default_root().parent / "demo-control", seed)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        demo.console.print("[bold]gxami demo --scenario control[/bold]: starting the broker and PostgreSQL ...")
        demo.stack.start()
        line, ok = asyncio.run(asyncio.wait_for(_main(demo), timeout))
    except (DevStackError, TimeoutError) as exc:
        demo.console.print(f"[red]gxami demo: {exc or 'timed out'}[/red]")
        return 2
    except KeyboardInterrupt:
        demo.console.print("interrupted; stopping")
        return 130
    finally:
        demo.shutdown()
    print(line)  # noqa: T201 - the demo's result on stdout, after the live console is gone
    return 0 if ok else 1


__all__ = ["run_control_demo"]
