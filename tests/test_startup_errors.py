"""A missing broker or database at start: one line naming what and where, exit code 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CASES = [
    ("collector", {"GXAMI_KAFKA_BOOTSTRAP": "127.0.0.1:1"}, "cannot reach the Kafka broker at 127.0.0.1:1"),
    (
        "ingest",
        {"GXAMI_DATABASE_URL": "postgresql://gx:hunter2@127.0.0.1:1/none"},
        "cannot reach the database at postgresql://gx:***@127.0.0.1:1/none",
    ),
    (
        "scheduler",
        {"GXAMI_DATABASE_URL": "postgresql://gx:hunter2@127.0.0.1:1/none"},
        "cannot reach the database at postgresql://gx:***@127.0.0.1:1/none",
    ),
    (
        "reports",
        {"GXAMI_DATABASE_URL": "postgresql://gx:hunter2@127.0.0.1:1/none"},
        "cannot reach the database at postgresql://gx:***@127.0.0.1:1/none",
    ),
]


@pytest.mark.parametrize(("service", "env", "message"), CASES, ids=[c[0] for c in CASES])
def test_unreachable_dependency_is_one_line_and_exit_2(service: str, env: dict[str, str], message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gxami_cli", service],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"gxami {service}: {message}")
    assert "Traceback" not in proc.stderr
    assert "hunter2" not in proc.stderr + proc.stdout


# A setting that does not parse, for every service: the variable named, its value never echoed.
BAD_SETTINGS = [
    ("collector", {"GXAMI_HTTP_PORT": "hunter2"}),
    ("ingest", {"GXAMI_BATCH_MAX_READINGS": "hunter2"}),
    ("scheduler", {"GXAMI_TICK_SECONDS": "hunter2"}),
    ("reports", {"GXAMI_HTTP_PORT": "hunter2"}),
]


# Kafka security settings that cannot work (issue 8), for every service: the variables named, no value echoed.
KAFKA_BAD_SETTINGS = [
    ({"GXAMI_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "GXAMI_KAFKA_SASL_MECHANISM"),
    ({"GXAMI_KAFKA_SECURITY_PROTOCOL": "SSL", "GXAMI_KAFKA_SSL_CA_FILE": "/nonexistent/ca.pem"}, "CA_FILE"),
    (
        {
            "GXAMI_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "GXAMI_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "GXAMI_KAFKA_SASL_USERNAME": "collector",
        },
        "GXAMI_KAFKA_SASL_PASSWORD_FILE",
    ),
    ({"GXAMI_KAFKA_SASL_PASSWORD": "hunter2"}, "GXAMI_KAFKA_SASL_PASSWORD_ENV"),
]
BAD_SETTINGS += [
    (service, env) for service in ("collector", "ingest", "scheduler", "reports") for env, _ in KAFKA_BAD_SETTINGS[:1]
]


@pytest.mark.parametrize(("env", "named"), KAFKA_BAD_SETTINGS, ids=[c[1] for c in KAFKA_BAD_SETTINGS])
def test_bad_kafka_security_is_one_line_naming_the_variables(env: dict[str, str], named: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gxami_cli", "collector"],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("GXAMI_KAFKA_")}, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("gxami collector: bad setting "), lines[0]
    assert named in lines[0], lines[0]
    assert "hunter2" not in proc.stderr + proc.stdout


@pytest.mark.parametrize(("service", "env"), BAD_SETTINGS, ids=[c[0] for c in BAD_SETTINGS])
def test_bad_setting_is_one_line_and_exit_2(service: str, env: dict[str, str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gxami_cli", service],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    (name,) = env
    assert lines[0].startswith(f"gxami {service}: bad setting"), lines[0]
    assert name in lines[0], lines[0]
    assert "Traceback" not in proc.stderr
    assert "hunter2" not in proc.stderr + proc.stdout


@pytest.mark.parametrize("service", ["scheduler", "ingest", "reports"])
def test_a_service_that_may_not_migrate_names_the_missing_migration_and_exits_2(
    service: str, database_url: str
) -> None:
    # Kubernetes runs `gxami db migrate` as a Job and sets GXAMI_MIGRATE_ON_START=false.
    proc = subprocess.run(
        [sys.executable, "-m", "gxami_cli", service],
        env={**os.environ, "GXAMI_DATABASE_URL": database_url, "GXAMI_MIGRATE_ON_START": "false"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"gxami {service}: the database lacks ")
    assert "run `gxami db migrate` (the migration Job) first" in lines[0]
