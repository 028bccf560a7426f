"""Invocation counters that are never reused: a store per meter (and client), in memory or a JSON file.

AES-GCM with one key must never see one nonce twice, and a DLMS nonce is the sender's
system title plus its invocation counter. So a client's counter toward a meter only ever
grows, across sessions, restarts and crashes. The store is a small sans-IO protocol:

* ``get(key)`` is the next counter never handed out (None: this store never saw the key);
* ``advance(key, to)`` records that every counter below ``to`` is spent; it never moves back.

A session *reserves* a window before it sends (``advance`` to the window's end first,
then uses counters inside it), so a crash wastes counters but never repeats one.

:class:`JsonInvocationCounters` writes the whole map to a temporary file, fsyncs it and
renames it over the old one, so a reader (or a crash) sees the old map or the new one,
never half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Final, Protocol, runtime_checkable

from gxcore.errors import ConfigurationError

MAX_COUNTER: Final = 0xFFFFFFFF


@runtime_checkable
class InvocationCounterStore(Protocol):
    """Where the next unused invocation counter of each (meter, client) is kept."""

    def get(self, key: str) -> int | None:
        """The next counter never handed out for ``key``, or None if the store never saw it."""

    def advance(self, key: str, to: int) -> None:
        """Record every counter below ``to`` as spent (a lower ``to`` changes nothing)."""


def _checked(to: int) -> int:
    if isinstance(to, bool) or not isinstance(to, int) or not 0 <= to <= MAX_COUNTER + 1:
        raise ConfigurationError(f"invocation counter {to!r} is outside 0..2^32")
    return to


class MemoryInvocationCounters:
    """Counters in this process only (lost on restart: the meter's frame counter is read again then)."""

    def __init__(self) -> None:
        self._next: dict[str, int] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> int | None:
        with self._lock:
            return self._next.get(key)

    def advance(self, key: str, to: int) -> None:
        to = _checked(to)
        with self._lock:
            self._next[key] = max(self._next.get(key, 0), to)


class JsonInvocationCounters:
    """Counters in one JSON file (``{"key": next, ...}``), rewritten atomically on every advance."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._next = self._load()

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

    def get(self, key: str) -> int | None:
        with self._lock:
            return self._next.get(key)

    def advance(self, key: str, to: int) -> None:
        to = _checked(to)
        with self._lock:
            if to <= self._next.get(key, 0):
                return
            updated = {**self._next, key: to}
            self._write(updated)
            self._next = updated  # only once it is on disk

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


DEFAULT_COUNTERS: Final = MemoryInvocationCounters()
