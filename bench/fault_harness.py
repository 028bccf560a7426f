"""Kill every service, restart the broker, stop the database; then prove nothing was lost or doubled.

One run (``run(plan, root)``):

1. Starts its own stack: PostgreSQL, a local S3 store and a Tansu broker keeping its data in it
   (``DevStack(persistent_broker=True)``: the wheel's Tansu has no PostgreSQL engine, see
   gxami_meterlab.devstack_s3), so a broker restart keeps topics, records and committed offsets.
2. Starts the meters (``python -m bench.fault_sim``: DLMS/COSEM meters, one port each, and Modbus
   TCP meters behind one gateway), imports their fleet (read every minute), and runs the scheduler,
   the collector and ingest as separate processes.
3. For ``plan.seconds``, at moments drawn from ``random.Random(plan.seed)``: SIGKILLs the collector,
   the scheduler or ingest (each at least once) and restarts it; SIGKILLs and restarts the broker
   ``plan.broker_restarts`` times; stops the database for ``plan.db_outage_s`` once.
4. Waits until every meter has been read successfully after the last fault and none is in flight,
   stops the scheduler, lets ingest drain, and compares.

What "served" means: every value a simulated meter put into a reply, as logged by the simulator
from its own model (not from anything gxami decoded). A value counts as required in the database:

- DLMS load-profile values: always (15-minute rows keep their timestamp; a re-read after any crash
  serves them again, and back-fill asks from the last stored point);
- DLMS register values and Modbus values: when they were served inside the window
  [started_at, finished_at] of a job whose result is ``ok`` (the collector publishes readings before
  the result). A snapshot served to a collector that was then killed before publishing is not
  required: the job runs again and reads a new snapshot (counted as ``abandoned``).

``lost``: a required value missing from ``readings``, or stored with another value, plus any stored
row whose value the model does not give for its (meter, quantity, ts) (DLMS) or that matches no
served value within 2 s (Modbus); VEE estimates (``vee_flags`` bit 1, interpolated by ingest over
gaps of a cumulative register) are not served values and are only counted (``estimates``).
``doubled``: rows beyond one per natural key in ``readings``,
``reading_revisions`` or ``events``. ``revised``: rows in ``reading_revisions``. Jobs: every failed
attempt must be followed by another job for that meter (``unretried``), and after the faults every
meter must be read and none left in flight (``stuck``). ``unexpected_exits``: a service that died
without being killed.

``python -m bench.fault_harness --seconds 600`` (``make soak``) prints the result as one JSON line
on stdout (progress on stderr) and exits 1 unless lost, doubled, revised, unretried, stuck and
unexpected_exits are all 0.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import math
import os
import random
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.fault_sim import DLMS_QUANTITIES, modbus_meter_id
from gxami_meterlab.cli_procs import ServiceProcess, gxami_argv, service_env
from gxami_meterlab.devstack import DevStack
from gxami_meterlab.devstack_procs import free_port
from gxami_meterlab.simulators.dlms import expected_register

SERVICES = ("collector", "scheduler", "ingest")
TOPICS = (
    "ami.read-jobs",
    "ami.readings",
    "ami.job-results",
    "ami.events",
    "ami.commands",
    "ami.command-results",
    "ami.dead-letter",
)
MODBUS_SLACK = timedelta(seconds=2)  # served instant vs the collector's timestamp of one reply


@dataclass(frozen=True)
class FaultPlan:
    """What one run does; the same plan and seed give the same sequence of faults."""

    seed: int = 14
    seconds: float = 100.0  # how long faults are injected
    dlms_meters: int = 12
    modbus_meters: int = 3
    kill_every: tuple[float, float] = (4.0, 10.0)  # seconds between two SIGKILLs, drawn uniformly
    broker_restarts: int = 1
    db_outage_s: float = 60.0  # 0: no outage
    settle_timeout_s: float = 150.0  # after the faults: every meter read again, none in flight
    history_days: float = 1.0
    check_the_checker: bool = False  # afterwards, spoil three rows and compare again (tests of the harness)


@dataclass
class FaultReport:
    """What a run did and what the comparison found; ``ok`` when nothing was lost, doubled or stuck."""

    kills: int = 0
    kills_by_service: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SERVICES, 0))
    broker_restarts: int = 0
    db_outages: int = 0
    readings: int = 0
    served: int = 0
    required: int = 0  # values the database must hold: one per natural key (DLMS), per served reply (Modbus)
    abandoned: int = 0
    lost: int = 0
    doubled: int = 0
    revised: int = 0
    jobs_ok: int = 0
    jobs_failed: int = 0
    unretried: int = 0
    stuck: int = 0
    unexpected_exits: int = 0
    startup_retries: int = 0
    dead_letters: int = 0
    estimates: int = 0
    protocols: dict[str, int] = field(default_factory=dict)
    first_lost: tuple[str, datetime] | None = None
    spoiled: dict[str, int] = field(default_factory=dict)  # what the comparison found in spoiled data
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.doubled
            or self.revised
            or self.unretried
            or self.stuck
            or self.unexpected_exits
            or self.dead_letters
        )

    def line(self) -> dict[str, Any]:
        """The JSON line ``make soak`` prints."""
        out: dict[str, Any] = {"soak": "kill-every-service"}
        out.update({k: v for k, v in asdict(self).items() if k not in ("problems", "first_lost")})
        out["seconds"] = round(self.seconds, 1)
        out["problems"] = self.problems[:10]
        return out

    def problem(self, text: str) -> None:
        if len(self.problems) < 50:
            self.problems.append(text)


def _say(text: str) -> None:
    print(f"[faults {datetime.now(UTC).strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# --- the run ----------------------------------------------------------------------------------------


class _Fleet:
    """The service processes of one run, restarted when killed; exits nobody asked for are counted."""

    def __init__(self, base: dict[str, str], logs: Path, prefix: str, report: FaultReport) -> None:
        self.base, self.logs, self.prefix, self.report = base, logs, prefix, report
        self.procs: dict[str, ServiceProcess] = {}
        self.started_at: dict[str, float] = {}
        self.extra: dict[str, dict[str, str]] = {
            "scheduler": {"GXAMI_RESULTS_GROUP": f"{prefix}scheduler"},
            "collector": {"GXAMI_CONSUMER_GROUP": f"{prefix}collector"},
            "ingest": {
                "GXAMI_CONSUMER_GROUP": f"{prefix}ingest",
                "GXAMI_BATCH_MAX_READINGS": "400",
                "GXAMI_BATCH_MAX_AGE_MS": "50",
            },
        }

    def start(self, name: str) -> None:
        p = ServiceProcess(
            name,
            gxami_argv(name),
            service_env(self.base, free_port(), name, **self.extra[name]),
            self.logs / f"{name}.log",
        )
        p.start()
        self.procs[name] = p
        self.started_at[name] = time.monotonic()

    def kill(self, name: str) -> None:
        self.procs[name].kill()
        self.report.kills += 1
        self.report.kills_by_service[name] += 1
        self.start(name)

    def watch(self) -> None:
        """Restart any service that exited on its own, as Kubernetes would (at most once a second).

        Exit code 2 with the one-line "cannot reach the ..." is a service that started while the
        broker or the database was down and refused to run without it: it is restarted and counted
        as a startup retry. Any other exit is counted as unexpected.
        """
        for name, p in list(self.procs.items()):
            if p.alive() or time.monotonic() - self.started_at.get(name, 0.0) < 1.0:
                continue
            tail = p.log_path.read_text(errors="replace")[-1500:]
            rc = p.proc.returncode if p.proc else None
            if rc == 2 and f"gxami {name}: cannot reach the " in tail.strip().splitlines()[-1]:
                self.report.startup_retries += 1
                _say(f"{name} refused to start without its broker or database; restarting")
            else:
                self.report.unexpected_exits += 1
                self.report.problem(f"{name} exited by itself (rc {rc}): {tail}")
                _say(f"{name} exited by itself (rc {rc}); restarting")
            self.start(name)

    def stop(self, name: str) -> None:
        if name in self.procs:
            self.procs.pop(name).stop()

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


async def _query(dsn: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


def _fetch(dsn: str, sql: str) -> list[asyncpg.Record] | None:
    """Rows, or None while the database is unreachable."""
    try:
        return asyncio.run(_query(dsn, sql))
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return None


def _schedule(plan: FaultPlan, rng: random.Random) -> list[tuple[float, str]]:
    """(seconds after the start of the faults, what) for the whole run, in time order."""
    events: list[tuple[float, str]] = []
    victims: list[str] = []
    t = rng.uniform(*plan.kill_every)
    while t < plan.seconds:
        if not victims:
            victims = list(SERVICES)
            rng.shuffle(victims)
        events.append((t, f"kill:{victims.pop()}"))
        t += rng.uniform(*plan.kill_every)
    for i in range(plan.broker_restarts):
        share = (i + rng.uniform(0.2, 0.8)) / plan.broker_restarts
        events.append((share * plan.seconds, "broker"))
    if plan.db_outage_s > 0:
        events.append((rng.uniform(0.1, 0.3) * plan.seconds, "db"))
    return sorted(events)


def _wait_for(what: str, until: Callable[[], bool], timeout: float, fleet: _Fleet, *, poll: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fleet.watch()
        if until():
            return True
        time.sleep(poll)
    _say(f"timed out after {timeout:.0f} s waiting for {what}")
    return False


def run(plan: FaultPlan, root: Path) -> FaultReport:
    """One full run in `root` (its stack, logs and the served-values log live there)."""
    report = FaultReport()
    began = time.monotonic()
    rng = random.Random(plan.seed)
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    fleet_file, served_file = root / "fleet.yaml", root / "served.jsonl"
    for leftover in (fleet_file, served_file, *logs.glob("*.log")):  # a run compares only what it served
        leftover.unlink(missing_ok=True)
    prefix = f"f{plan.seed}."
    with DevStack(root / "stack", fresh=True, keep_data=False, persistent_broker=True) as stack:
        dsn = stack.database_url
        base = {
            **stack.env(),
            "GXAMI_TOPIC_OVERRIDES": json.dumps({t: f"{prefix}{t}" for t in TOPICS}),
            "GXAMI_KAFKA_SESSION_TIMEOUT_MS": "2000",
            "GXAMI_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
            "GXAMI_HISTORY_DAYS": str(plan.history_days),
            "GXAMI_JOB_TIMEOUT_S": "15",
            "GXAMI_RESULT_GRACE_S": "5",
            "GXAMI_BACKOFF_BASE_S": "2",
            "GXAMI_BACKOFF_CAP_S": "10",
            "GXAMI_DB_RETRY_MAX_S": "2",
            "GXAMI_EXCHANGE_TIMEOUT_S": "5",
            "GXAMI_SESSION_TIMEOUT_S": "30",
            "GXAMI_LOG_LEVEL": "INFO",
        }
        sim = ServiceProcess(
            "meters",
            [
                sys.executable,
                "-m",
                "bench.fault_sim",
                "--seed",
                str(plan.seed),
                "--dlms",
                str(plan.dlms_meters),
                "--modbus",
                str(plan.modbus_meters),
                "--fleet-out",
                str(fleet_file),
                "--served-out",
                str(served_file),
            ],
            {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
            logs / "meters.log",
        )
        sim.start()
        fleet = _Fleet(base, logs, prefix, report)
        try:
            deadline = time.monotonic() + 60
            while not fleet_file.exists():
                if not sim.alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"the simulated meters did not start: {sim.log_path.read_text()[-2000:]}")
                time.sleep(0.05)
            meters = [m["meter_id"] for m in yaml.safe_load(fleet_file.read_text())["meters"]]
            for step in (("db", "migrate"), ("fleet", "import", str(fleet_file))):
                p = ServiceProcess(step[0], gxami_argv(*step), service_env(base, 0, step[0]), logs / f"{step[0]}.log")
                p.start()
                assert p.proc is not None
                if p.proc.wait(120) != 0:
                    raise RuntimeError(f"gxami {' '.join(step)} failed: {p.log_path.read_text()[-2000:]}")
            for name in ("ingest", "scheduler", "collector"):
                fleet.start(name)
            # Faults start once the first readings are stored: the stack is then mid-work.
            _wait_for("the first readings", lambda: bool(_fetch(dsn, "SELECT 1 FROM readings LIMIT 1")), 120, fleet)
            _say(f"{len(meters)} meters read; injecting faults for {plan.seconds:.0f} s")
            _inject(plan, rng, stack, fleet, report)
            quiet = datetime.now(UTC)
            _say("faults over; waiting for every meter to be read again")
            settled = _wait_for(
                "every meter read after the faults, none in flight",
                lambda: _settled(dsn, quiet, len(meters)),
                plan.settle_timeout_s,
                fleet,
            )
            fleet.stop("scheduler")  # no new jobs; what is on its way drains
            _drain(dsn, fleet)
            fleet.stop_all()
        finally:
            fleet.stop_all()
            sim.stop()
        _say("comparing what the meters served with the database")
        _compare(plan, dsn, served_file, meters, quiet, settled, report)
        if plan.check_the_checker:
            report.spoiled = _spoil_and_compare(plan, dsn, served_file, meters, quiet, settled)
        if report.first_lost is not None:
            report.problem(
                "first lost value: " + asyncio.run(where_is(stack.kafka_bootstrap, prefix, *report.first_lost))
            )
        for letter in asyncio.run(_dead_letters(stack.kafka_bootstrap, f"{prefix}ami.dead-letter")):
            report.dead_letters += 1
            report.problem(f"dead letter: {letter[:500]}")
    report.seconds = time.monotonic() - began
    return report


def _inject(plan: FaultPlan, rng: random.Random, stack: DevStack, fleet: _Fleet, report: FaultReport) -> None:
    start = time.monotonic()
    db_back_at: float | None = None
    for at, what in _schedule(plan, rng):
        while True:
            now = time.monotonic() - start
            if db_back_at is not None and now >= db_back_at:
                stack.start_database()
                _say("database started again")
                db_back_at = None
            if now >= at:
                break
            fleet.watch()
            time.sleep(min(0.2, at - now))
        if what.startswith("kill:"):
            name = what.removeprefix("kill:")
            time.sleep(rng.uniform(0, 0.3))
            fleet.kill(name)
            _say(f"SIGKILL {name} (and restarted it)")
        elif what == "broker":
            stack.restart_broker(kill=True)
            report.broker_restarts += 1
            _say("SIGKILL broker (and restarted it on its data)")
        elif what == "db":
            stack.stop_database()
            report.db_outages += 1
            db_back_at = time.monotonic() - start + plan.db_outage_s
            _say(f"database stopped for {plan.db_outage_s:.0f} s")
    while db_back_at is not None:
        if time.monotonic() - start >= db_back_at:
            stack.start_database()
            _say("database started again")
            db_back_at = None
        else:
            fleet.watch()
            time.sleep(0.2)


async def _records(bootstrap: str, topic: str) -> list[tuple[int, int, str]]:
    """Every record of `topic` as (partition, offset, text); none when the topic does not exist."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        if topic not in await consumer.topics():  # also loads the metadata partitions_for_topic reads
            return []
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[tuple[int, int, str]] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            behind = [tp for tp in tps if await consumer.position(tp) < ends[tp]]
            if not behind:
                break
            for tp, recs in (await consumer.getmany(timeout_ms=500)).items():
                out.extend((tp.partition, r.offset, (r.value or b"").decode("utf-8", errors="replace")) for r in recs)
        return out
    finally:
        await consumer.stop()


async def _dead_letters(bootstrap: str, topic: str) -> list[str]:
    """Every record of the dead-letter topic, as text (a run that dead-letters nothing has none)."""
    return [text for _, _, text in await _records(bootstrap, topic)]


async def _committed(bootstrap: str, group: str, topic: str) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()
        parts = sorted(consumer.partitions_for_topic(topic) or ())
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in parts}
    finally:
        await consumer.stop()


async def where_is(bootstrap: str, prefix: str, meter: str, ts: datetime) -> str:
    """For a lost reading: the readings records that carry it, and the ingest group's committed offsets."""
    stamp = ts.isoformat().replace("+00:00", "")
    topic = f"{prefix}ami.readings"
    hits = [(p, o) for p, o, text in await _records(bootstrap, topic) if meter in text and stamp in text]
    committed = await _committed(bootstrap, f"{prefix}ingest", topic)
    return f"on the broker at (partition, offset) {hits[:5]}; ingest committed {committed}"


def _settled(dsn: str, quiet: datetime, meters: int) -> bool:
    rows = _fetch(
        dsn,
        f"SELECT count(*) FILTER (WHERE last_success_at > '{quiet.isoformat()}') AS fresh,"
        " count(*) FILTER (WHERE in_flight_job IS NOT NULL) AS busy FROM meter_schedule",
    )
    return rows is not None and rows[0]["fresh"] == meters and rows[0]["busy"] == 0


def _drain(dsn: str, fleet: _Fleet, quiet_s: float = 4.0, timeout: float = 60.0) -> None:
    """Wait until the readings table stops growing for ``quiet_s`` (ingest has caught up)."""
    last, since, deadline = -1, time.monotonic(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = _fetch(dsn, "SELECT count(*) AS n FROM readings")
        n = rows[0]["n"] if rows else -1
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        fleet.watch()
        time.sleep(0.3)


# --- the comparison ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Served:
    meter: str
    quantity: str
    ts: datetime
    value: float
    at: datetime
    kind: str


def read_served(path: Path) -> Iterator[Served]:
    """The simulator's log of served values."""
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            d = json.loads(line)
            yield Served(
                d["m"],
                d["q"],
                datetime.fromisoformat(d["ts"]),
                float(d["v"]),
                datetime.fromisoformat(d["at"]),
                d["kind"],
            )


def _in_ok_job(windows: dict[str, list[tuple[datetime, datetime]]], meter: str, at: datetime) -> bool:
    return any(start <= at <= end for start, end in windows.get(meter, ()))


def _dlms_model(seed: int, meter: str, quantity: str, ts: datetime) -> float | None:
    """What DLMS meter `meter` gives for `quantity` at `ts`, from the simulator's model."""
    index = int(meter[-5:])
    for obis, (q, factor) in DLMS_QUANTITIES.items():
        if q == quantity:
            return expected_register(seed, index, obis, ts) * factor
    return None


def _compare(
    plan: FaultPlan, dsn: str, served_file: Path, meters: list[str], quiet: datetime, settled: bool, report: FaultReport
) -> None:
    rows = _fetch(dsn, "SELECT meter_id, quantity, ts, value, (vee_flags & 1) <> 0 AS estimated FROM readings") or []
    counts = _fetch(
        dsn,
        "SELECT (SELECT count(*) - count(DISTINCT (meter_id, quantity, ts)) FROM readings)"
        " + (SELECT count(*) - count(DISTINCT (meter_id, quantity, ts, value)) FROM reading_revisions)"
        " + (SELECT count(*) - count(DISTINCT event_id) FROM events) AS doubled,"
        " (SELECT count(*) FROM reading_revisions) AS revised",
    )
    results = _fetch(dsn, "SELECT job_id, attempt, meter_id, status, started_at, finished_at FROM job_results") or []
    schedule = _fetch(dsn, "SELECT meter_id, in_flight_job, last_success_at FROM meter_schedule") or []
    report.readings = len(rows)
    # an unreadable database counts as failure (-1), never as zero
    report.doubled = int(counts[0]["doubled"]) if counts else -1
    report.revised = int(counts[0]["revised"]) if counts else -1
    if report.revised:
        report.problem(f"{report.revised} rows in reading_revisions")

    # jobs: done or retried
    windows: dict[str, list[tuple[datetime, datetime]]] = defaultdict(list)
    starts: dict[str, list[datetime]] = defaultdict(list)
    for r in results:
        starts[r["meter_id"]].append(r["started_at"])
        if r["status"] == "ok":
            report.jobs_ok += 1
            windows[r["meter_id"]].append((r["started_at"], r["finished_at"]))
        else:
            report.jobs_failed += 1
    for r in results:
        if r["status"] != "ok" and not any(s > r["finished_at"] for s in starts[r["meter_id"]]):
            report.unretried += 1
            report.problem(f"job {r['job_id']} attempt {r['attempt']} failed ({r['status']}) and was never retried")
    by_meter = {s["meter_id"]: s for s in schedule}
    for m in meters:
        row = by_meter.get(m)
        if row is None or row["last_success_at"] is None or row["last_success_at"] <= quiet or row["in_flight_job"]:
            report.stuck += 1
            report.problem(f"meter {m} not read after the faults or left in flight: {dict(row) if row else None}")
    if not settled and not report.stuck:
        report.stuck += 1
        report.problem("the fleet did not settle after the faults")

    # values
    stored: dict[tuple[str, str, datetime], float] = {(r["meter_id"], r["quantity"], r["ts"]): r["value"] for r in rows}
    # VEE estimates (ingest interpolates cumulative registers over gaps, flag 1) are made, not served;
    # they count as lost only where a served value is required under their key.
    estimated = {(r["meter_id"], r["quantity"], r["ts"]) for r in rows if r["estimated"]}
    report.estimates = len(estimated)
    modbus_rows: dict[tuple[str, str], list[tuple[datetime, float]]] = defaultdict(list)
    for (m, q, ts), v in stored.items():
        if m.startswith("MB"):
            modbus_rows[(m, q)].append((ts, v))
    for series in modbus_rows.values():
        series.sort()
    modbus_served: dict[tuple[str, str], list[tuple[datetime, float]]] = defaultdict(list)
    protocols: dict[str, int] = defaultdict(int)
    seen: set[tuple[str, str, datetime]] = set()
    for s in read_served(served_file):
        report.served += 1
        protocols["modbus" if s.kind == "modbus" else "dlms"] += 1
        if s.kind == "modbus":
            modbus_served[(s.meter, s.quantity)].append((s.at, s.value))
        required = s.kind == "profile" or _in_ok_job(windows, s.meter, s.at)
        if not required:
            report.abandoned += 1
            continue
        if s.kind == "modbus":
            report.required += 1
            if not _modbus_match(modbus_rows.get((s.meter, s.quantity), []), s.at, s.value):
                report.lost += 1
                report.problem(f"modbus {s.meter} {s.quantity} served {s.value} at {s.at}: not stored")
            continue
        key = (s.meter, s.quantity, s.ts)
        if key in seen:
            continue
        seen.add(key)
        report.required += 1  # once per natural key: a re-read serves the same profile rows again
        got = stored.get(key)
        if got is None or not math.isclose(got, s.value, rel_tol=0, abs_tol=1e-9):
            report.lost += 1
            report.first_lost = report.first_lost or (s.meter, s.ts)
            jobs = [w for w in windows.get(s.meter, ()) if w[0] <= s.at <= w[1]]
            report.problem(f"{s.kind} {key} served {s.value} at {s.at} (ok jobs {jobs}): stored {got}")
    report.protocols = dict(protocols)
    for series in modbus_served.values():
        series.sort()
    # every stored value is one that was served (Modbus) or that the model gives (DLMS)
    for (m, q, ts), v in stored.items():
        if (m, q, ts) in estimated:
            continue
        if m.startswith("MB"):
            ok = _modbus_match(modbus_served.get((m, q), []), ts, v)
        else:
            want = _dlms_model(plan.seed, m, q, ts)
            ok = want is not None and math.isclose(v, want, rel_tol=0, abs_tol=1e-9)
        if not ok:
            report.lost += 1
            report.problem(f"stored {(m, q, ts)} = {v}: no meter served that value")
    _ = modbus_meter_id  # the id scheme the MB prefix above stands for


def _spoil_and_compare(
    plan: FaultPlan, dsn: str, served_file: Path, meters: list[str], quiet: datetime, settled: bool
) -> dict[str, int]:
    """Delete one DLMS reading, change one Modbus value, add one revision; compare again: what it finds."""

    async def spoil() -> None:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            await conn.execute(
                "DELETE FROM readings WHERE ctid = (SELECT ctid FROM readings WHERE meter_id LIKE 'SIM%' LIMIT 1)"
            )
            await conn.execute(
                "UPDATE readings SET value = value + 1"
                " WHERE ctid = (SELECT ctid FROM readings WHERE meter_id LIKE 'MB%' LIMIT 1)"
            )
            await conn.execute(
                "INSERT INTO reading_revisions (meter_id, quantity, ts, value, unit)"
                " SELECT meter_id, quantity, ts, value + 1, unit FROM readings LIMIT 1"
            )
        finally:
            await conn.close()

    asyncio.run(spoil())
    again = FaultReport()
    _compare(plan, dsn, served_file, meters, quiet, settled, again)
    return {"lost": again.lost, "doubled": again.doubled, "revised": again.revised}


def _modbus_match(series: list[tuple[datetime, float]], at: datetime, value: float) -> bool:
    """True when `series` (sorted by time) holds `value` within MODBUS_SLACK of `at`."""
    i = bisect.bisect_left(series, (at - MODBUS_SLACK, -math.inf))
    while i < len(series) and series[i][0] <= at + MODBUS_SLACK:
        if math.isclose(series[i][1], value, rel_tol=1e-12, abs_tol=0):
            return True
        i += 1
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fault_harness", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", "600")))
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--dlms", type=int, default=20)
    parser.add_argument("--modbus", type=int, default=4)
    parser.add_argument("--root", type=Path, default=None, help="work folder (default: .gxami/soak)")
    args = parser.parse_args(argv)
    restarts = max(1, int(args.seconds // 150))
    plan = FaultPlan(
        seed=args.seed,
        seconds=args.seconds,
        dlms_meters=args.dlms,
        modbus_meters=args.modbus,
        kill_every=(3.0, 12.0),
        broker_restarts=restarts,
        db_outage_s=60.0,
    )
    root = args.root or Path.cwd() / ".gxami" / "soak"
    report = run(plan, root.resolve())
    print(json.dumps(report.line()), flush=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
