"""The default invocation-counter store: one JSON file under ``flock``, per-meter session locks as files.

See :mod:`gxcore.protocols.dlms.invocation` for the store protocol this implements and why a
counter is never reused. The file is read-modified-written under ``fcntl.flock`` on
``<file>.lock``, written to a temporary file, fsynced and renamed over the old one (a reader
or a crash sees the old map or the new one); per-meter session locks are ``flock``\\ s on
files in ``<file>.meters/``, which the kernel drops when the process dies (SIGKILL included).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from gxcore.errors import ConfigurationError
from gxcore.protocols.dlms.invocation import MAX_COUNTER, MeterHold, checked_counter, window_bounds


class _FileHold:
    """An ``flock`` on a meter's lock file; closing the descriptor (or dying) lets go."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor of the open file drops its flock

    def __del__(self) -> None:
        self.release()


class JsonInvocationCounters:
    """Counters in one JSON file (``{"key": next, ...}``) shared safely by every process that opens it.

    Every reservation re-reads the file under an exclusive ``flock`` of ``<file>.lock``, so
    two processes (two collectors on one volume, ``gxami read`` beside a collector) never
    hand out one window; the whole map is rewritten atomically each time, which suits a
    collector's meters (thousands), not a fleet (see the module doc).
    """

    blocking = True  # file I/O and fsync: sessions call it in a worker thread

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.meters_dir = self.path.with_name(self.path.name + ".meters")
        self._lock = threading.Lock()
        self._load()  # a damaged file is refused at once, not at the first ciphered read

    def _load(self) -> dict[str, int]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise ConfigurationError(f"invocation counters {self.path}: cannot read ({exc.strerror})") from None
        try:
            raw = json.loads(text)
        except ValueError:
            raise ConfigurationError(f"invocation counters {self.path}: not valid JSON") from None
        if not isinstance(raw, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_COUNTER + 1
            for k, v in raw.items()
        ):
            raise ConfigurationError(f"invocation counters {self.path}: not a map of names to counters")
        return dict(raw)

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """This thread, then this process, alone with the file (other processes wait on the flock)."""
        with self._lock:
            try:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                raise ConfigurationError(f"invocation counters {self.path}: cannot lock ({exc.strerror})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # held for one read-modify-write: milliseconds
                yield
            finally:
                os.close(fd)

    def get(self, key: str) -> int | None:
        with self._lock:
            return self._load().get(key)  # the rename makes any read whole; no lock needed

    def reserve(self, key: str, floor: int, count: int) -> int:
        with self._exclusive():
            data = self._load()
            start, end = window_bounds(data.get(key), floor, count)
            self._write({**data, key: end})
            return start

    def advance(self, key: str, to: int) -> None:
        """Record every counter below ``to`` as spent (a lower ``to`` changes nothing)."""
        to = checked_counter(to)
        with self._exclusive():
            data = self._load()
            if to > data.get(key, 0):
                self._write({**data, key: to})

    def try_hold(self, meter: str) -> MeterHold | None:
        name = hashlib.sha256(meter.encode("utf-8")).hexdigest()[:32] + ".lock"
        try:
            self.meters_dir.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(self.meters_dir / name, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ConfigurationError(f"invocation counters {self.path}: cannot lock a meter ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except OSError as exc:
            os.close(fd)
            raise ConfigurationError(f"invocation counters {self.path}: cannot lock a meter ({exc.strerror})") from None
        return _FileHold(fd)

    def _write(self, data: dict[str, int]) -> None:
        folder = self.path.parent
        try:
            handle, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=folder)
            try:
                with os.fdopen(handle, "w", encoding="utf-8") as out:
                    json.dump(data, out, sort_keys=True, indent=1)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(name, self.path)
            except BaseException:
                Path(name).unlink(missing_ok=True)
                raise
            directory = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(directory)  # the rename itself survives a crash
            finally:
                os.close(directory)
        except OSError as exc:
            raise ConfigurationError(f"invocation counters {self.path}: cannot write ({exc.strerror})") from None
