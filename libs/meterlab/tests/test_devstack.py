"""The local dev stack: real Tansu broker and PostgreSQL started in a tmp folder, and nothing left behind."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psutil
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from gxami_meterlab import devstack
from gxami_meterlab.devstack import ENV_FILE, STATE_FILE, DevStack, DevStackError, default_root, down, status, up
from gxami_meterlab.devstack_kafka import probe_api_versions
from gxami_meterlab.devstack_procs import ProcessRef, port_is_free
from gxami_meterlab.devstack_session import docker_reachable, session_stack, stack_backend

pytestmark = pytest.mark.integration


def _port(hostport: str) -> int:
    return int(hostport.rsplit(":", 1)[1].split("/", 1)[0])


def _pg_port(url: str) -> int:
    return _port(url.split("@", 1)[1])


def _stack_pids(stack_pids: list[int]) -> list[psutil.Process]:
    """The given processes plus all their descendants (postgres backends and auxiliaries)."""
    procs: list[psutil.Process] = []
    for pid in stack_pids:
        proc = psutil.Process(pid)
        procs.append(proc)
        procs.extend(proc.children(recursive=True))
    return procs


def _assert_all_gone(procs: list[psutil.Process]) -> None:
    gone, alive = psutil.wait_procs(procs, timeout=5)
    assert not alive, f"processes survived: {alive}"
    assert len(gone) == len(procs)


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    with DevStack(tmp_path_factory.mktemp("stack"), start_timeout=30, keep_data=False) as running:
        yield running


# --- the components work -----------------------------------------------------------------------------


async def test_kafka_produce_consume_with_group_and_manual_commit(local_stack: DevStack) -> None:
    topic = f"devstack-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=local_stack.kafka_bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()

    producer = AIOKafkaProducer(
        bootstrap_servers=local_stack.kafka_bootstrap, acks="all", enable_idempotence=False, request_timeout_ms=5000
    )
    await producer.start()
    try:
        first = await producer.send_and_wait(topic, b"reading-1", key=b"meter-1")
        await producer.send_and_wait(topic, b"reading-2", key=b"meter-1")
    finally:
        await producer.stop()
    tp = TopicPartition(topic, first.partition)

    def consumer() -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            topic,
            bootstrap_servers=local_stack.kafka_bootstrap,
            group_id=f"{topic}-group",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # Tansu holds a JoinGroup for about the session timeout: aiokafka's 10 s default would
            # make each join take 5-18 s, so tests use a short one.
            session_timeout_ms=1000,
            heartbeat_interval_ms=200,
            rebalance_timeout_ms=1000,
        )

    c1 = consumer()
    await c1.start()
    try:
        msg = await asyncio.wait_for(c1.getone(), timeout=15)
        assert (msg.key, msg.value, msg.offset) == (b"meter-1", b"reading-1", first.offset)
        await c1.commit({tp: msg.offset + 1})
        assert await c1.committed(tp) == msg.offset + 1
    finally:
        await c1.stop()

    # A new member of the same group resumes after the committed offset, not from the start.
    c2 = consumer()
    await c2.start()
    try:
        msg = await asyncio.wait_for(c2.getone(), timeout=15)
        assert msg.value == b"reading-2"
    finally:
        await c2.stop()


async def test_database_query_and_outage(local_stack: DevStack) -> None:
    conn = await asyncpg.connect(local_stack.database_url, timeout=5)
    try:
        assert await conn.fetchval("select current_database()") == "gxami"
        await conn.execute("create table if not exists outage_probe (n int primary key)")
        await conn.execute("insert into outage_probe values (1) on conflict do nothing")
    finally:
        await conn.close()

    port = _pg_port(local_stack.database_url)
    local_stack.stop_database()
    assert not local_stack.info().database_running
    assert port_is_free(port)
    with pytest.raises(OSError):
        await asyncpg.connect(local_stack.database_url, timeout=5)

    local_stack.start_database()
    assert _pg_port(local_stack.database_url) == port
    conn = await asyncpg.connect(local_stack.database_url, timeout=5)
    try:
        assert await conn.fetchval("select n from outage_probe") == 1  # committed data survived
    finally:
        await conn.close()


def test_env_state_and_env_file(local_stack: DevStack) -> None:
    env = local_stack.env()
    assert env == {
        "GXAMI_KAFKA_BOOTSTRAP": local_stack.kafka_bootstrap,
        "GXAMI_DATABASE_URL": local_stack.database_url,
        "GXAMI_KAFKA_ENABLE_IDEMPOTENCE": "false",
        "GXAMI_KAFKA_SESSION_TIMEOUT_MS": "2000",
        "GXAMI_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
    }
    assert local_stack.kafka_bootstrap.startswith("127.0.0.1:")
    assert local_stack.database_url.startswith("postgresql://gxami@127.0.0.1:")
    lines = (local_stack.root / ENV_FILE).read_text().splitlines()
    assert lines == [f"{k}={v}" for k, v in env.items()]
    state = json.loads((local_stack.root / STATE_FILE).read_text())
    info = local_stack.info()
    assert state["kafka"]["process"]["pid"] == info.broker_pid
    assert state["owner"]["pid"] == os.getpid()
    assert info.running
    assert not info.detached


# --- nothing is left behind --------------------------------------------------------------------------


def test_stop_leaves_no_process_and_frees_ports(tmp_path: Path) -> None:
    started = time.monotonic()
    running = DevStack(tmp_path / "dev", keep_data=False)
    running.start()
    elapsed = time.monotonic() - started
    assert elapsed < 20, f"start took {elapsed:.1f} s"
    info = running.info()
    assert info.broker_pid is not None
    assert info.database_pid is not None
    procs = _stack_pids([info.broker_pid, info.database_pid])
    assert len(procs) > 2  # the postmaster has auxiliary processes
    ports = [_port(running.kafka_bootstrap), _pg_port(running.database_url)]
    cluster = (running.root / "postgres").resolve()

    running.stop()

    _assert_all_gone(procs)
    assert all(port_is_free(p) for p in ports)
    assert not (running.root / STATE_FILE).exists()
    assert not (running.root / "postgres").exists()
    assert not cluster.exists()
    with pytest.raises(DevStackError):
        _ = running.kafka_bootstrap
    running.stop()  # idempotent


def test_detached_up_status_down(tmp_path: Path) -> None:
    root = tmp_path / "dev"
    assert status(root) is None
    info = up(root)
    try:
        assert info.running
        assert info.detached
        assert info.owner_pid is None
        first_line = (root / ENV_FILE).read_text().splitlines()[0]
        assert first_line == f"GXAMI_KAFKA_BOOTSTRAP={info.endpoints.kafka_bootstrap}"
        assert probe_api_versions("127.0.0.1", _port(info.endpoints.kafka_bootstrap), timeout=2)
        again = up(root)
        assert (again.broker_pid, again.database_pid) == (info.broker_pid, info.database_pid)
        current = status(root)
        assert current is not None
        assert current.running
        # An in-process stack must not take over a detached one in the same folder.
        with pytest.raises(DevStackError, match="gxami dev down"):
            DevStack(root).start()
        assert info.broker_pid is not None
        assert info.database_pid is not None
        procs = _stack_pids([info.broker_pid, info.database_pid])
    finally:
        stopped = down(root, keep_data=False)
    assert stopped
    _assert_all_gone(procs)
    assert status(root) is None
    assert not down(root)  # nothing left to stop
    assert port_is_free(_port(info.endpoints.kafka_bootstrap))
    assert port_is_free(_pg_port(info.endpoints.database_url))


_OWNER_SCRIPT = """
import sys, time
from pathlib import Path
from gxami_meterlab.devstack import DevStack
stack = DevStack(Path(sys.argv[1]), keep_data=False)
stack.start()
print("up", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_owner_signal_stops_the_stack(tmp_path: Path, sig: signal.Signals) -> None:
    root = tmp_path / "dev"
    with subprocess.Popen(
        [sys.executable, "-c", _OWNER_SCRIPT, str(root)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    ) as owner:
        try:
            assert owner.stdout is not None
            assert owner.stdout.readline() == b"up\n"
            info = status(root)
            assert info is not None
            assert info.running
            assert info.owner_pid == owner.pid
            assert info.broker_pid is not None
            assert info.database_pid is not None
            procs = _stack_pids([info.broker_pid, info.database_pid])
            owner.send_signal(sig)
            assert owner.wait(20) != 0
        finally:
            if owner.poll() is None:
                owner.kill()
    _assert_all_gone(procs)
    assert status(root) is None


def _dead_ref() -> ProcessRef:
    """A reference to a process that has exited (pid of a finished child, its real start time)."""
    proc = psutil.Popen(["true"])
    ref = ProcessRef(proc.pid, proc.create_time())
    proc.wait(5)
    return ref


def test_stale_state_with_dead_pids_is_replaced(tmp_path: Path) -> None:
    root = tmp_path / "dev"
    root.mkdir()
    dead = _dead_ref().to_json()
    stale = {
        "version": 1,
        "detached": False,
        "owner": dead,
        "kafka": {"port": 1, "process": dead},
        "postgres": {"port": 2, "process": dead},
    }
    (root / STATE_FILE).write_text(json.dumps(stale))
    with DevStack(root, keep_data=False) as running:
        info = running.info()
        assert info.running
        assert _port(running.kafka_bootstrap) != 1
        assert json.loads((root / STATE_FILE).read_text())["owner"]["pid"] == os.getpid()
    assert not (root / STATE_FILE).exists()


def test_stale_live_stack_of_a_killed_owner_is_stopped(tmp_path: Path) -> None:
    root = tmp_path / "dev"
    # Live components whose recorded owner is dead: what a SIGKILLed test run leaves behind.
    info = up(root)
    assert info.broker_pid is not None
    assert info.database_pid is not None
    orphans = _stack_pids([info.broker_pid, info.database_pid])
    state = json.loads((root / STATE_FILE).read_text())
    state["detached"] = False
    state["owner"] = _dead_ref().to_json()
    (root / STATE_FILE).write_text(json.dumps(state))
    try:
        with DevStack(root, keep_data=False) as running:
            _assert_all_gone(orphans)
            assert running.info().broker_pid != info.broker_pid
            assert running.info().running
    finally:
        down(root, keep_data=False)


def test_owner_alive_elsewhere_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "dev"
    root.mkdir()
    parent = ProcessRef.of(os.getppid())
    assert parent is not None
    claimed = {
        "version": 1,
        "detached": False,
        "owner": parent.to_json(),
        "kafka": {"port": 1, "process": None},
        "postgres": {"port": 2, "process": None},
    }
    (root / STATE_FILE).write_text(json.dumps(claimed))
    with pytest.raises(DevStackError, match=f"in use by pid {parent.pid}"):
        DevStack(root).start()


def test_broker_failure_is_one_line_with_log_tail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "tansu"
    fake.write_text("#!/bin/sh\necho 'fatal: storage engine exploded' >&2\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("CALF_TANSU_BIN", str(fake))
    root = tmp_path / "dev"
    with pytest.raises(DevStackError) as caught:
        DevStack(root, start_timeout=5).start()
    message = str(caught.value)
    assert "\n" not in message
    assert "tansu" in message
    assert "storage engine exploded" in message
    assert not (root / STATE_FILE).exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="relocation only happens when the server runs as another user")
def test_cluster_of_a_deleted_root_is_swept(tmp_path: Path) -> None:
    # pytest's tmp folders are 0700, so the server user cannot reach them: the cluster is relocated.
    gone_root = tmp_path / "gone"
    info = up(gone_root)
    link = gone_root / "postgres"
    assert link.is_symlink()
    relocated = link.resolve()
    assert relocated.parent.name == "gxami-devstack"
    assert info.database_pid is not None
    assert info.broker_pid is not None
    orphan_pg = _stack_pids([info.database_pid])
    # The owner and its folder vanish (pytest cleans old tmp folders); the broker is stopped by hand
    # because nothing records it outside the folder.
    psutil.Process(info.broker_pid).kill()
    psutil.Process(info.broker_pid).wait(5)
    shutil.rmtree(gone_root)

    with DevStack(tmp_path / "next", keep_data=False) as running:
        assert running.info().running
        _assert_all_gone(orphan_pg)
        assert not relocated.exists()


# --- helpers -----------------------------------------------------------------------------------------


def test_api_versions_probe_rejects_a_non_kafka_server() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]

        def answer() -> None:
            conn, _ = server.accept()
            with conn:
                conn.recv(100)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

        thread = threading.Thread(target=answer)
        thread.start()
        assert not probe_api_versions("127.0.0.1", port, timeout=2)
        thread.join(5)
    assert not probe_api_versions("127.0.0.1", port, timeout=1)  # nothing listens any more


def test_docker_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'missing.sock'}")
    assert not docker_reachable(timeout=0.5)
    path = tmp_path / "docker.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen()

        def answer() -> None:
            conn, _ = server.accept()
            with conn:
                conn.recv(200)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")

        thread = threading.Thread(target=answer)
        thread.start()
        monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
        assert docker_reachable(timeout=2)
        thread.join(5)


def test_backend_choice(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'missing.sock'}")
    monkeypatch.delenv("GXAMI_TEST_STACK", raising=False)
    assert stack_backend() == "local"
    monkeypatch.setenv("GXAMI_TEST_STACK", "docker")
    assert stack_backend() == "docker"
    monkeypatch.setenv("GXAMI_TEST_STACK", "kubernetes")
    with pytest.raises(DevStackError):
        stack_backend()


def test_session_stack_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GXAMI_TEST_STACK", "local")
    with session_stack(tmp_path) as endpoints:
        assert not endpoints.kafka_enable_idempotence
        assert endpoints.env()["GXAMI_KAFKA_ENABLE_IDEMPOTENCE"] == "false"
        assert probe_api_versions("127.0.0.1", _port(endpoints.kafka_bootstrap), timeout=2)
        assert not port_is_free(_pg_port(endpoints.database_url))
    assert port_is_free(_port(endpoints.kafka_bootstrap))
    assert not any(live.root.is_relative_to(tmp_path) for live in devstack._LIVE)


def test_default_root_is_repo_local(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "services" / "x").mkdir(parents=True)
    (repo / "uv.lock").write_text("")
    assert default_root(repo / "services" / "x") == repo / ".gxami" / "dev"
