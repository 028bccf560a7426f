"""Continuous wM-Bus receivers through the running services (issue 8, item 4).

Real processes over the real broker and database: the scheduler publishes the imported fleet on
``ami.fleet``, a collector with ``GXAMI_WMBUS_RECEIVERS`` listens to two receivers (a hex feed and
an iM871A dongle's framing, both ``gxami simulate wmbus --feed tcp`` with 33 meters sending at
their own intervals, junk between the telegrams), ingest stores. Both receivers hear the same
meters, so every telegram arrives twice. 30 meters are registered, one of them with a wrong key.
Every other registered meter's readings are in the database with the values the simulator sent,
exactly once per telegram; the 3 unregistered IDs are in the heard list with their counts; the
wrong key is counted and stops nobody. The collector starts before the receivers answer, so it
connects again (backoff) until they do.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import subprocess
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
import yaml

from gxami_meterlab.cli_procs import ServiceProcess, gxami_argv, service_env
from gxami_meterlab.devstack import StackEndpoints
from gxami_meterlab.devstack_procs import free_port
from gxami_meterlab.simulators.wmbus import MANUFACTURER, WMBusFeedServer, WMBusTelegramGenerator, volume_litres

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(600)]

SEED = 21
HEARD = 33  # meters in range of the receivers
REGISTERED = 30  # of them in the fleet: indexes 0..29; 30, 31 and 32 are unknown to it
WRONG_KEY = 4  # an encrypted meter (even index) whose key in the secrets file is wrong
PER_METER = 4  # telegrams each meter sends (per receiver)
INTERVAL = 1.0  # mean real seconds between two telegrams of one meter
TIME_SCALE = 900.0  # meter-clock seconds per real second: every telegram has a minute of its own
# The meters' clocks: yesterday, so that ingest takes every reading (nothing in the future).
START = (datetime.now(UTC) - timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
FRAMINGS = ("hex", "im871a")
QUANTITIES = ("8-0:1.0.0", "8-0:97.97.0")  # volume (billing) and error flags (diagnostics)
TOPICS = (
    "ami.read-jobs",
    "ami.readings",
    "ami.job-results",
    "ami.events",
    "ami.commands",
    "ami.command-results",
    "ami.dead-letter",
    "ami.fleet",
)


def _metric(port: str, name: str, **labels: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{name}(?:\{{(.*)\}})? (\S+)$", line)
        if not m:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


def _until(what: str, pred: object, timeout: float, procs: list[ServiceProcess]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            assert p.alive(), f"{p.name} died; log: {p.log_path.read_text()[-3000:]}"
        try:
            if callable(pred) and pred():
                return
        except OSError:
            pass  # the ops server is not up yet
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


async def _rows(dsn: str) -> list[tuple[str, str, datetime, float]]:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        recs = await conn.fetch("SELECT meter_id, quantity, ts, value FROM readings ORDER BY 1, 2, 3")
        return [(r["meter_id"], r["quantity"], r["ts"], r["value"]) for r in recs]
    finally:
        await conn.close()


async def _scalar(dsn: str, sql: str) -> int:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


def _meter_id(index: int) -> str:
    return f"WM{index:03d}"


def _files(gen: WMBusTelegramGenerator, fleet: Path, secrets: Path, receiver: str) -> None:
    """The fleet (the three forms of wmbus_id, in turn) and the collector's secrets (one key wrong)."""
    meters = []
    for m in gen.meters[:REGISTERED]:
        forms = (m.id, f"{MANUFACTURER}{m.id}", f"{MANUFACTURER.lower()}{m.id}{m.version:02x}{m.device_type:02x}")
        meters.append(
            {
                "meter_id": _meter_id(m.index),
                "protocol": "wmbus",
                "address": receiver,
                "profile": "generic-wmbus-water",
                "schedule": "15m",
                "connection": "push",
                "wmbus_id": forms[m.index % 3],
                "purposes": ["billing", "diagnostics"],
            }
        )
    fleet.write_text(yaml.safe_dump({"meters": meters}), encoding="utf-8")
    keys = {
        _meter_id(m.index): {"key": (bytes(range(16)) if m.index == WRONG_KEY else m.key).hex()}
        for m in gen.meters[:REGISTERED]
        if m.key is not None
    }
    assert _meter_id(WRONG_KEY) in keys, "the wrong-key meter encrypts"
    secrets.write_text(yaml.safe_dump({"meters": keys}), encoding="utf-8")


def test_receivers_store_every_registered_telegram_once_and_list_unknown_ids(
    stack: StackEndpoints, database_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    gen = WMBusTelegramGenerator(SEED, HEARD)
    logs = tmp_path / "logs"
    fleet, secrets, heard_file = tmp_path / "fleet.yaml", tmp_path / "secrets.yaml", tmp_path / "heard.json"
    ports = {framing: free_port() for framing in FRAMINGS}
    urls = {f: f"tcp://127.0.0.1:{p}?framing={f}" for f, p in ports.items()}
    names = {f: f"tcp://127.0.0.1:{p}" for f, p in ports.items()}  # metric labels: the URL without its query
    _files(gen, fleet, secrets, names["hex"])
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

    def run(name: str, *args: str) -> str:
        out = subprocess.run(
            gxami_argv(*args), env=service_env(base, 0, name), capture_output=True, text=True, timeout=120, check=False
        )
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout

    try:
        run("db", "db", "migrate")
        run("fleet", "fleet", "import", str(fleet))
        assert asyncio.run(_scalar(database_url, "SELECT count(*) FROM meter_schedule")) == 0, "push meters: no jobs"
        spawn("scheduler", gxami_argv("scheduler"), GXAMI_RESULTS_GROUP=f"{topic_prefix}scheduler")
        spawn(
            "ingest",
            gxami_argv("ingest"),
            GXAMI_CONSUMER_GROUP=f"{topic_prefix}ingest",
            GXAMI_BATCH_MAX_READINGS="100",
            GXAMI_BATCH_MAX_AGE_MS="50",
        )
        collector = spawn(
            "collector",
            gxami_argv("collector"),
            GXAMI_CONSUMER_GROUP=f"{topic_prefix}collector",
            GXAMI_WMBUS_RECEIVERS=",".join(urls.values()),
            GXAMI_WMBUS_HEARD_FILE=str(heard_file),
            GXAMI_WMBUS_RECONNECT_MAX_S="1",
        )
        port = collector.env["GXAMI_HTTP_PORT"]
        _until(
            "the collector to know the fleet",
            lambda: _metric(port, "gxami_collector_fleet_meters") == REGISTERED,
            120,
            procs,
        )
        _until(
            "both receivers tried and refused (nothing listens yet)",
            lambda: all(
                _metric(port, "gxami_collector_wmbus_receiver_connects_total", receiver=n, outcome="failed") >= 1
                for n in names.values()
            ),
            60,
            procs,
        )
        assert _metric(port, "gxami_collector_wmbus_receiver_connected") == 0

        # The receivers come up: 33 meters each at its own interval, 4 telegrams each, junk between them.
        for framing, p in ports.items():
            spawn(
                f"receiver-{framing}",
                gxami_argv(
                    "simulate", "wmbus", "--feed", "tcp", "--port", str(p), "--framing", framing,
                    "--meters", str(HEARD), "--seed", str(SEED), "--interval", str(INTERVAL), "--schedule", "own",
                    "--telegrams", str(PER_METER), "--junk", "--start", START.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "--time-scale", str(TIME_SCALE),
                ),
            )  # fmt: skip
        _until(
            "both receivers connected",
            lambda: _metric(port, "gxami_collector_wmbus_receiver_connected") == len(FRAMINGS),
            60,
            procs,
        )

        served = REGISTERED - 1  # all but the wrong key
        want = served * PER_METER * len(QUANTITIES)
        _until(
            "every telegram's readings in the database",
            lambda: asyncio.run(_scalar(database_url, "SELECT count(*) FROM readings")) >= want,
            180,
            procs,
        )
        unknown_each = (HEARD - REGISTERED) * PER_METER
        _until(
            "every telegram heard on both receivers",
            lambda: all(
                _metric(port, "gxami_collector_wmbus_telegrams_total", receiver=n, outcome="unknown-meter")
                == unknown_each
                and _metric(port, "gxami_collector_wmbus_telegrams_total", receiver=n, outcome="undecryptable")
                == PER_METER
                for n in names.values()
            ),
            60,
            procs,
        )
        telegrams = {
            outcome: _metric(port, "gxami_collector_wmbus_telegrams_total", outcome=outcome)
            for outcome in ("published", "duplicate", "damaged", "not-served", "no-readings", "publish-failed")
        }
        time.sleep(1.0)  # anything published twice would reach the database by now

        def heard_all() -> bool:  # the collector rewrites the file every few seconds
            if not heard_file.exists():
                return False
            written = json.loads(heard_file.read_text())
            return all(r["telegrams"] == HEARD * PER_METER for r in written["receivers"])

        _until("the heard file to have every telegram", heard_all, 30, procs)
        listed = json.loads(run("heard-cli", "wmbus", "heard", "--from-file", str(heard_file)))
        assert _metric(port, "gxami_collector_wmbus_receiver_last_telegram_seconds") > 0
        assert _metric(port, "gxami_collector_wmbus_skipped_total") > 0, "the junk was skipped, not fatal"
        rows = asyncio.run(_rows(database_url))
        revisions = asyncio.run(_scalar(database_url, "SELECT count(*) FROM reading_revisions"))
        schedules = asyncio.run(_scalar(database_url, "SELECT count(*) FROM meter_schedule"))
        jobs = asyncio.run(_scalar(database_url, "SELECT count(*) FROM job_results"))
    finally:
        for p in reversed(procs):
            p.stop()

    # Each telegram heard twice (two receivers), published once, the other copy dropped as a duplicate.
    assert telegrams["published"] == served * PER_METER, telegrams
    assert telegrams["duplicate"] == served * PER_METER, telegrams
    assert telegrams["damaged"] == telegrams["not-served"] == telegrams["no-readings"] == 0, telegrams
    assert telegrams["publish-failed"] == 0, telegrams
    assert (schedules, jobs) == (0, 0), "the scheduler read none of them with jobs"

    assert revisions == 0, "no value arrived twice with a different value"
    assert len(rows) == want, "each telegram's readings stored exactly once, nothing else"
    by_key = {(m, q, ts): v for m, q, ts, v in rows}
    assert len(by_key) == len(rows)
    feed = WMBusFeedServer(gen, interval=INTERVAL, start=START, time_scale=TIME_SCALE)  # for its clock only
    for m in gen.meters[:REGISTERED]:
        if m.index == WRONG_KEY:
            assert not any(k[0] == _meter_id(m.index) for k in by_key), "nothing of the wrong-key meter"
            continue
        for n in range(PER_METER):
            instant = feed.instant_of(m.index, n)
            ts = instant.replace(second=0, microsecond=0)  # the clock record has minutes
            volume = by_key[(_meter_id(m.index), "8-0:1.0.0", ts)]
            assert math.isclose(volume, volume_litres(SEED, m.index, instant) / 1000, rel_tol=0, abs_tol=1e-9)
            assert by_key[(_meter_id(m.index), "8-0:97.97.0", ts)] == 0

    # The heard list: per receiver, the three IDs the fleet does not know, each with its count.
    unknown_ids = {m.id for m in gen.meters[REGISTERED:]}
    receivers = {r["receiver"]: r for r in listed["receivers"]}
    assert set(receivers) == set(names.values())
    for framing, name in names.items():
        r = receivers[name]
        assert r["framing"] == framing and r["connected"] is True
        assert {u["id"]: u["count"] for u in r["unknown"]} == dict.fromkeys(unknown_ids, PER_METER)
        assert all(u["manufacturer"] == MANUFACTURER and u["last_heard_at"] for u in r["unknown"])
        assert r["telegrams"] == HEARD * PER_METER
    # No key material anywhere in what the collector said.
    said = (logs / "collector.log").read_text()
    assert "wrong key?" in said or "2F 2F" in said, "the wrong key was logged (its reason)"
    for m in gen.meters:
        if m.key is not None:
            assert m.key.hex() not in said.lower()
    assert bytes(range(16)).hex() not in said.lower()


def test_a_bad_receiver_setting_is_one_line_and_exit_2() -> None:
    out = subprocess.run(
        gxami_argv("collector"),
        env=service_env({"GXAMI_WMBUS_RECEIVERS": "tcp://127.0.0.1:2000?framing=morse"}, 0, "bad"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "GXAMI_WMBUS_RECEIVERS" in lines[0] and "framing must be one of" in lines[0], lines
