"""The command line: fleet import/list, exit codes, one-line startup errors, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest
import typer
from typer.testing import CliRunner

from gxami_meterlab.devstack import StackEndpoints
from gxami_meterlab.devstack_procs import free_port
from gxami_scheduler.cli import fleet_app, format_table, service_app
from gxami_store import migrate

FLEET = """\
meters:
  - meter_id: c1
    protocol: dlms
    address: tcp://10.0.0.1:4059
    profile: em-dlms
    schedule: 15m
  - meter_id: c2
    protocol: modbus
    address: serial:///dev/ttyUSB1?baud=19200
    profile: em-modbus
    group: pumps
    schedule: 1h
"""

# The lead mounts the apps like this into the `gxami` CLI.
gxami = typer.Typer()
gxami.add_typer(service_app, name="scheduler")
gxami.add_typer(fleet_app, name="fleet")


def _env(database_url: str, profile_dir: Path, **extra: str) -> dict[str, str]:
    return {"GXAMI_DATABASE_URL": database_url, "GXAMI_PROFILE_DIRS": json.dumps([str(profile_dir)]), **extra}


def _count_meters(database_url: str) -> int:
    async def count() -> int:
        conn = await asyncpg.connect(database_url, timeout=10)
        try:
            await migrate(conn)
            return int(await conn.fetchval("SELECT count(*) FROM meters"))
        finally:
            await conn.close()

    return asyncio.run(count())


def test_fleet_import_and_list(tmp_path: Path, database_url: str, profile_dir: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(FLEET)
    runner = CliRunner(env=_env(database_url, profile_dir))
    first = runner.invoke(gxami, ["fleet", "import", str(path)])
    assert first.exit_code == 0, first.output
    assert first.stdout.strip() == "imported 2 meters (2 new, 0 updated)"
    again = runner.invoke(gxami, ["fleet", "import", str(path)])
    assert again.stdout.strip() == "imported 2 meters (0 new, 2 updated)"

    listed = runner.invoke(gxami, ["fleet", "list", "--json"])
    assert listed.exit_code == 0
    meters = json.loads(listed.stdout)
    assert [m["meter_id"] for m in meters] == ["c1", "c2"]
    assert meters[1]["link_id"] == "serial:///dev/ttyUSB1"
    table = runner.invoke(gxami, ["fleet", "list", "--group", "pumps"])
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["METER", "PROTOCOL", "GROUP"]
    assert [line.split()[0] for line in lines[1:]] == ["c2"]


def test_fleet_import_refuses_a_bad_file_whole(tmp_path: Path, database_url: str, profile_dir: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(FLEET.replace("schedule: 1h", "schedule: 10s") + "  - meter_id: c3\n")
    result = CliRunner(env=_env(database_url, profile_dir)).invoke(gxami, ["fleet", "import", str(path)])
    assert result.exit_code == 1
    assert f"{path}:12: schedule: read interval 10 s is shorter than the minimum of 60 s" in result.stderr
    assert f"{path}:13: address: Field required" in result.stderr
    assert result.stdout == ""
    assert _count_meters(database_url) == 0  # nothing half-imported (the CLI had not even connected)


def test_fleet_import_unreachable_database(tmp_path: Path, profile_dir: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(FLEET)
    dead = f"postgresql://gxami:pw@127.0.0.1:{free_port()}/gxami"
    result = CliRunner(env=_env(dead, profile_dir)).invoke(gxami, ["fleet", "import", str(path)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "cannot reach the database at postgresql://gxami:***@127.0.0.1:" in lines[0]
    assert "pw@" not in result.stderr


def test_bad_settings_exit_2_in_one_line(profile_dir: Path) -> None:
    env = _env("postgresql://x@127.0.0.1:1/x", profile_dir, GXAMI_SHARD_INDEX="3", GXAMI_SHARD_COUNT="2")
    result = CliRunner(env=env).invoke(gxami, ["fleet", "list"])
    assert result.exit_code == 2
    assert "shard_index 3 must be below shard_count 2" in result.stderr


def test_service_app_mounts_as_one_command() -> None:
    result = CliRunner().invoke(gxami, ["scheduler", "--help"])
    assert result.exit_code == 0
    assert "Run the scheduler service" in result.stdout


def test_service_app_runs_without_a_subcommand() -> None:
    # Mounted as `gxami scheduler`, the bare group runs the service (here: fails fast, no database).
    code = (
        "import typer; from gxami_scheduler.cli import service_app as s; g = typer.Typer();"
        " g.add_typer(s, name='scheduler'); g(['scheduler'])"
    )
    env = {**os.environ, "GXAMI_DATABASE_URL": f"postgresql://x@127.0.0.1:{free_port()}/x"}
    proc = subprocess.run(
        [sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("gxami scheduler: cannot reach the database at")


def test_format_table_aligns() -> None:
    text = format_table([{"meter_id": "a-long-id", "protocol": "dlms", "enabled": True}])
    header, row = text.splitlines()
    assert header.index("PROTOCOL") == row.index("dlms")


def _service(env: dict[str, str]) -> subprocess.Popen[str]:
    full = {**os.environ, **env, "GXAMI_TICK_SECONDS": "0.2"}
    return subprocess.Popen(
        [sys.executable, "-m", "gxami_scheduler"], env=full, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _single_line_failure(proc: subprocess.Popen[str]) -> str:
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if not line.startswith("{")]  # JSON log lines aside
    assert len(lines) == 1, err
    return lines[0]


def test_service_database_unreachable_exits_2() -> None:
    port = free_port()
    line = _single_line_failure(_service({"GXAMI_DATABASE_URL": f"postgresql://gxami:pw@127.0.0.1:{port}/gxami"}))
    assert line.startswith(f"gxami scheduler: cannot reach the database at postgresql://gxami:***@127.0.0.1:{port}/")


def test_service_broker_unreachable_exits_2(database_url: str) -> None:
    port = free_port()
    proc = _service(
        {
            "GXAMI_DATABASE_URL": database_url,
            "GXAMI_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}",
            "GXAMI_KAFKA_REQUEST_TIMEOUT_MS": "3000",
        }
    )
    line = _single_line_failure(proc)
    assert line == f"gxami scheduler: cannot reach the Kafka broker at 127.0.0.1:{port}: connection refused"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_service_stops_cleanly_on_sigterm(stack: StackEndpoints, database_url: str, topic_prefix: str) -> None:
    env = {
        **stack.env(),
        "GXAMI_DATABASE_URL": database_url,
        "GXAMI_RESULTS_GROUP": topic_prefix + "scheduler",
        "GXAMI_TOPIC_OVERRIDES": json.dumps(
            {t: topic_prefix + t for t in ("ami.read-jobs", "ami.job-results", "ami.dead-letter")}
        ),
    }
    proc = _service(env)
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 30
        started = False
        while time.monotonic() < deadline and not started:
            line = proc.stderr.readline()
            if not line:
                break
            started = '"msg": "scheduler started"' in line
        assert started, "service did not start"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert '"msg": "scheduler stopped"' in err
    assert "Traceback" not in err
