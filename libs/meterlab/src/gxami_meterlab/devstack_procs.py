"""Process plumbing for the local dev stack: spawning in a new session, identity-checked stops, log tails.

A component process is remembered as a `ProcessRef` (pid plus the kernel's start time), so that a pid
reused by an unrelated process after a crash is never signalled.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

__all__ = [
    "DevStackError",
    "PortTakenError",
    "ProcessRef",
    "free_port",
    "log_tail",
    "mentions_port_in_use",
    "port_is_free",
    "spawn",
    "stop_group",
]

# Signals a spawned component gets back at their default action: Python ignores SIGPIPE and SIGXFSZ,
# and an owner may have installed handlers that must not leak into the child.
_RESET_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

# Colour escapes some components write even into files; stripped from log tails in error messages.
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

# Two start times within this many seconds belong to the same process (psutil rounds to clock ticks).
_CREATE_TIME_SLACK = 0.05


class DevStackError(RuntimeError):
    """A local dev-stack component failed to start or stop; the message is one line with the log tail."""


class PortTakenError(DevStackError):
    """The port chosen for a component was taken between choosing it and binding it; pick another."""


def mentions_port_in_use(text: str) -> bool:
    """True when a log tail says a bind failed because the address was taken."""
    lowered = text.lower()
    return "addrinuse" in lowered or "address in use" in lowered or "address already in use" in lowered


@dataclass(frozen=True, slots=True)
class ProcessRef:
    """One process, identified by pid and start time so that a reused pid is never mistaken for it."""

    pid: int
    create_time: float

    @classmethod
    def of(cls, pid: int) -> ProcessRef | None:
        """The reference for a running pid, or None when no such process runs."""
        try:
            return cls(pid, psutil.Process(pid).create_time())
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None

    def to_json(self) -> dict[str, Any]:
        """The JSON form stored in the state file."""
        return {"pid": self.pid, "create_time": self.create_time}

    @classmethod
    def from_json(cls, data: Any) -> ProcessRef | None:
        """Parse the stored form; anything malformed reads as no process."""
        if not isinstance(data, dict):
            return None
        pid, created = data.get("pid"), data.get("create_time")
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            return None
        if not isinstance(created, int | float) or isinstance(created, bool):
            return None
        return cls(pid, float(created))

    def _process(self) -> psutil.Process | None:
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.create_time) > _CREATE_TIME_SLACK:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                _reap(self.pid)
                return None
            return proc
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None

    def alive(self) -> bool:
        """True while this very process runs (a zombie or a reused pid counts as dead)."""
        return self._process() is not None

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the process to end (reaping it if it is our child)."""
        proc = self._process()
        if proc is None:
            return True
        try:
            proc.wait(timeout)
        except psutil.TimeoutExpired:
            return not self.alive()
        except psutil.NoSuchProcess:
            pass
        return True


def _reap(pid: int) -> None:
    """Collect a dead child's exit status so that it stops being a zombie; a no-op for non-children."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def spawn(argv: list[str], log_path: Path, env: dict[str, str]) -> ProcessRef:
    """Start `argv` in a new session (so its own process group), stdout and stderr appended to `log_path`.

    posix_spawn rather than subprocess.Popen: the child may outlive this process (detached mode), and a
    Popen object dropped while its child runs warns; here nothing but the pid is kept.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log_path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    try:
        pid = os.posix_spawn(
            argv[0],
            argv,
            env,
            file_actions=actions,
            setsid=True,
            setsigdef=_RESET_SIGNALS,
            setsigmask=(),
        )
    except OSError as exc:
        raise DevStackError(f"cannot start {argv[0]}: {exc}") from exc
    ref = ProcessRef.of(pid)
    if ref is None:  # it died before we could look at it: still a valid, dead reference
        _reap(pid)
        return ProcessRef(pid, 0.0)
    return ref


def stop_group(ref: ProcessRef, timeout: float) -> bool:
    """SIGTERM the process group led by `ref`, SIGKILL it after `timeout`; True when it is gone."""
    if not ref.alive():
        return True
    for sig, wait_s in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(ref.pid, sig)
        except ProcessLookupError:
            return True
        except PermissionError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(ref.pid, sig)
        if ref.wait(wait_s):
            return True
    return not ref.alive()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bind to port 0, read it back, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on `host:port` (a bind would succeed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR as servers use it, so that TIME_WAIT leftovers do not count as in use.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def log_tail(path: Path, lines: int = 3, max_bytes: int = 4096) -> str:
    """The last non-empty lines of a log joined on one line, or a note that there is no log."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError:
        return f"(no log at {path})"
    text = _ANSI.sub("", data.decode("utf-8", errors="replace"))
    kept = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    if not kept:
        return f"(log {path} is empty)"
    return f"log {path} ends: " + " | ".join(kept)
