"""Meters without static addresses push to two collector replicas (issue 8, item 2).

Real processes over the real broker and database: the scheduler publishes the imported fleet
on ``ami.fleet``, two collectors with push listeners follow it, ``gxami simulate dlms --push-to``
sends ciphered DataNotifications to both in turn, ingest stores them. Every pushed value is in
the database exactly once and equals what the simulator sent; a replayed push is refused (also
after the replica restarts: its counters are on disk); an unknown meter's push is dead-lettered.
Beside the simulator's wrapper pushes: one HDLC-framed push, one general-ded-ciphered push (the
meter's dedicated key from the secrets file) and one plain push named by its serial, each
stored exactly once.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import time
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
import yaml

from gxami_meterlab.cli_procs import ServiceProcess, gxami_argv, service_env
from gxami_meterlab.devstack import StackEndpoints
from gxami_meterlab.devstack_procs import free_port
from gxami_meterlab.simulators.dlms import dedicated_key, expected_register, meter_id, push_message
from gxami_meterlab.testkit import scrape_metric, wait_until
from gxcore.protocols.dlms.ciphering import SecurityPolicy

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(600)]

METERS = 200
PUSHES = 2
SEED = 11
POLICY: SecurityPolicy = "authenticated-encrypted"
PLAIN = METERS  # index of one more meter, registered without ciphering: its pushes are named by serial
STRANGER = METERS + 1  # a plain meter nobody registered: replica 0 auto-registers it
# quantity -> (OBIS, factor from the meter's unit to the profile's: Wh -> kWh, W -> kW)
QUANTITIES = {
    "1-0:1.8.0": ("1.0.1.8.0.255", 0.001),
    "1-0:2.8.0": ("1.0.2.8.0.255", 0.001),
    "1-0:1.7.0": ("1.0.1.7.0.255", 0.001),
    "1-0:32.7.0": ("1.0.32.7.0.255", 1.0),
    "1-0:31.7.0": ("1.0.31.7.0.255", 1.0),
}
TOPICS = (
    "ami.read-jobs",
    "ami.readings",
    "ami.job-results",
    "ami.events",
    "ami.commands",
    "ami.command-results",
    "ami.dead-letter",
    "ami.fleet",
    "ami.registrations",
)


def _send(port: int, frame: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(frame)


async def _rows(dsn: str) -> list[tuple[str, str, datetime, float]]:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        recs = await conn.fetch("SELECT meter_id, quantity, ts, value FROM readings ORDER BY 1, 2, 3")
        return [(r["meter_id"], r["quantity"], r["ts"], r["value"]) for r in recs]
    finally:
        await conn.close()


async def _sources(dsn: str) -> str:
    """Which jobs (or pushes) stored the readings: named when the count is off."""
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        return str(await conn.fetchval("SELECT string_agg(DISTINCT coalesce(job_id, '-'), ',') FROM readings"))
    finally:
        await conn.close()


async def _scalar(dsn: str, sql: str) -> int:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


def test_pushes_to_two_replicas_are_stored_once_and_replays_are_refused(
    stack: StackEndpoints, database_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    fleet, secrets, sent_log = tmp_path / "fleet.yaml", tmp_path / "secrets.yaml", tmp_path / "sent.jsonl"
    listen = [free_port(), free_port()]
    base = {
        **stack.env(),
        "GXAMI_DATABASE_URL": database_url,
        "GXAMI_TOPIC_OVERRIDES": json.dumps({t: f"{topic_prefix}{t}" for t in TOPICS}),
        "GXAMI_KAFKA_SESSION_TIMEOUT_MS": "2000",
        "GXAMI_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
        "GXAMI_SECRETS_FILE": str(secrets),
        "GXAMI_LOG_LEVEL": "INFO",
    }
    procs: list[ServiceProcess] = []

    def spawn(name: str, argv: list[str], **extra: str) -> ServiceProcess:
        p = ServiceProcess(name, argv, service_env(base, free_port(), name, **extra), logs / f"{name}.log")
        p.start()
        procs.append(p)
        return p

    def run(name: str, *args: str) -> None:
        p = ServiceProcess(name, gxami_argv(*args), service_env(base, 0, name), logs / f"{name}.log")
        p.start()
        assert p.proc is not None
        assert p.proc.wait(120) == 0, p.log_path.read_text()[-3000:]

    push_args = [a for port in listen for a in ("--push-to", f"127.0.0.1:{port}")]
    common = ["simulate", "dlms", "--meters", str(METERS), "--seed", str(SEED), *push_args, "--ciphered"]

    def collector(i: int) -> ServiceProcess:
        return spawn(
            f"collector{i}",
            gxami_argv("collector"),
            GXAMI_CONSUMER_GROUP=f"{topic_prefix}collector",
            GXAMI_LISTENERS=f"dlms-push@tcp://127.0.0.1:{listen[i]}",
            GXAMI_PUSH_COUNTERS_FILE=str(tmp_path / f"push-counters-{i}.json"),
            GXAMI_PUSH_IDLE_TIMEOUT_S="5",
            **({"GXAMI_PUSH_AUTO_REGISTER": "generic-dlms"} if i == 0 else {}),
        )

    def port_of(p: ServiceProcess) -> str:
        return p.env["GXAMI_HTTP_PORT"]

    try:
        run("files", *common, "--fleet-out", str(fleet), "--secrets-out", str(secrets), "--write-only")
        doc = yaml.safe_load(fleet.read_text())
        plain = {**doc["meters"][0], "meter_id": meter_id(SEED, PLAIN), "serial": meter_id(SEED, PLAIN)}
        plain.pop("system_title")
        plain["options"] = {"authentication": "none"}
        doc["meters"].append(plain)
        fleet.write_text(yaml.safe_dump(doc))
        run("db", "db", "migrate")
        run("fleet", "fleet", "import", str(fleet))
        assert asyncio.run(_scalar(database_url, "SELECT count(*) FROM meter_schedule")) == 0, (
            "push meters are not polled"
        )
        spawn("scheduler", gxami_argv("scheduler"), GXAMI_RESULTS_GROUP=f"{topic_prefix}scheduler")
        spawn(
            "ingest",
            gxami_argv("ingest"),
            GXAMI_CONSUMER_GROUP=f"{topic_prefix}ingest",
            GXAMI_BATCH_MAX_READINGS="400",
            GXAMI_BATCH_MAX_AGE_MS="50",
        )
        replicas = [collector(0), collector(1)]
        for c in replicas:
            wait_until(
                f"{c.name} to know the fleet",
                lambda c=c: scrape_metric(port_of(c), "gxami_collector_fleet_meters") == METERS + 1,
                120,
                procs,
            )

        started = time.monotonic()
        sim = spawn(
            "pusher", gxami_argv(*common, "--every", "2s", "--pushes", str(PUSHES), "--sent-log", str(sent_log))
        )
        assert sim.proc is not None
        assert sim.proc.wait(120) == 0, sim.log_path.read_text()[-3000:]
        procs.remove(sim)
        sent = [json.loads(line) for line in sent_log.read_text().splitlines()]
        assert len(sent) == METERS * PUSHES, "every push reached a listener"
        assert {s["target"] for s in sent} == {f"127.0.0.1:{p}" for p in listen}, "both replicas got pushes"

        # A replayed push: the very frame meter 7 sent first, to the replica that took it.
        first = next(s for s in sent if s["index"] == 7)
        replay = push_message(
            SEED, 7, datetime.fromisoformat(first["at"]), policy=POLICY, invocation_counter=first["counter"]
        )
        replica = listen.index(int(first["target"].rsplit(":", 1)[1]))
        _send(listen[replica], replay)
        # A meter nobody registered (its own title and keys), to the replica without auto-registration:
        # dead-lettered with the reason.
        _send(listen[1], push_message(SEED, METERS + 5, datetime.fromisoformat(first["at"]), policy=POLICY))

        # HDLC-framed (meter 3), general-ded-ciphered (meter 4), plain named by its serial: an
        # hour before the simulator's pushes, with counters above the ones the meters used.
        extra_at = datetime.fromisoformat(first["at"]).replace(microsecond=0) - timedelta(hours=1)
        counter = max(s["counter"] for s in sent) + 10
        extras = [
            (3, push_message(SEED, 3, extra_at, policy=POLICY, invocation_counter=counter, interface="hdlc")),
            (
                4,
                push_message(
                    SEED, 4, extra_at, policy=POLICY, invocation_counter=counter, dedicated_key=dedicated_key(SEED, 4)
                ),
            ),
            (PLAIN, push_message(SEED, PLAIN, extra_at)),
            (STRANGER, push_message(SEED, STRANGER, extra_at)),  # to replica 0: auto-registered
        ]
        assert extras[0][1][0] == 0x7E and extras[1][1][8] == 0xDC
        for n, (i, frame) in enumerate(extras):
            _send(listen[0] if i == STRANGER else listen[n % 2], frame)
        sent.extend(
            {"meter_id": meter_id(SEED, i), "index": i, "at": extra_at.isoformat(), "counter": counter}
            for i, _ in extras
        )

        want = (METERS * PUSHES + len(extras)) * len(QUANTITIES)
        wait_until(
            "every pushed value in the database",
            lambda: asyncio.run(_scalar(database_url, "SELECT count(*) FROM readings")) >= want,
            180,
            procs,
        )
        elapsed = time.monotonic() - started
        wait_until(
            "the replay refused",
            lambda: scrape_metric(port_of(replicas[replica]), "gxami_collector_pushes_total", outcome="replayed") == 1,
            30,
            procs,
        )
        wait_until(
            "the unknown meter dead-lettered",
            lambda: (
                scrape_metric(port_of(replicas[1]), "gxami_dead_letters_total", consumer="collector", outcome="sent")
                >= 1
            ),
            30,
            procs,
        )
        assert scrape_metric(port_of(replicas[1]), "gxami_collector_pushes_total", outcome="unknown-meter") == 1
        # The stranger: registered by the scheduler (the row exists) and so known to the other replica too.
        wait_until(
            "the auto-registered meter known to both replicas",
            lambda: all(scrape_metric(port_of(c), "gxami_collector_fleet_meters") == METERS + 2 for c in replicas),
            60,
            procs,
        )
        assert scrape_metric(port_of(replicas[0]), "gxami_collector_push_auto_registered_total") == 1
        registered = asyncio.run(
            _scalar(
                database_url,
                f"SELECT count(*) FROM meters WHERE meter_id = '{meter_id(SEED, STRANGER)}'"
                " AND profile = 'generic-dlms' AND options->'_contact'->>'connection' = 'push'",
            )
        )
        assert registered == 1

        # The replica restarts: its last counters were kept, the replay is refused again.
        old = replicas[replica]
        old.stop()
        procs.remove(old)
        replicas[replica] = collector(replica)
        wait_until(
            "the restarted replica to know the fleet",
            lambda: scrape_metric(port_of(replicas[replica]), "gxami_collector_fleet_meters") == METERS + 2,
            120,
            procs,
        )
        _send(listen[replica], replay)
        wait_until(
            "the replay refused after the restart",
            lambda: scrape_metric(port_of(replicas[replica]), "gxami_collector_pushes_total", outcome="replayed") == 1,
            30,
            procs,
        )
        time.sleep(1.0)  # anything wrongly accepted would reach the database by now
        rows = asyncio.run(_rows(database_url))
        sources = asyncio.run(_sources(database_url))
        revisions = asyncio.run(_scalar(database_url, "SELECT count(*) FROM reading_revisions"))
    finally:
        for p in reversed(procs):
            p.stop()

    assert revisions == 0, "no value arrived twice with a different value"
    expected_ts = {datetime.fromisoformat(s["at"]).replace(microsecond=0) for s in sent}
    unexpected = [r for r in rows if r[2] not in expected_ts]
    assert len(rows) == want, (
        f"each pushed value stored exactly once, nothing else; not pushed: {unexpected[:12]}; jobs: {sources}"
    )
    by_key = {(m, q, ts): v for m, q, ts, v in rows}
    assert len(by_key) == len(rows)
    for s in sent:
        at = datetime.fromisoformat(s["at"])
        for quantity, (obis, factor) in QUANTITIES.items():
            value = by_key[(s["meter_id"], quantity, at)]
            expected = float(expected_register(SEED, s["index"], obis, at)) * factor
            assert math.isclose(value, expected, rel_tol=0, abs_tol=1e-9), (s, quantity, value, expected)
    print(f"{METERS * PUSHES} pushes to 2 replicas stored in {elapsed:.1f} s")  # noqa: T201 - the run's size, for the report
