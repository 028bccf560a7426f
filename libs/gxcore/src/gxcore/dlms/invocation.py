"""Invocation counters that are never reused: a store per meter (and client), in memory or a JSON file.

AES-GCM with one key must never see one nonce twice, and a DLMS nonce is the sender's
system title plus its invocation counter. So a client's counter toward a meter only ever
grows, across sessions, restarts and crashes. The store is a small sans-IO protocol:

* ``get(key)`` is the next counter never handed out (None: this store never saw the key);
* ``advance(key, to)`` records that every counter below ``to`` is spent; it never moves back.

A session *reserves* a window before it sends (``advance`` to the window's end first,
then uses counters inside it, see :class:`CounterWindow`), so a crash wastes counters but
never repeats one.

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

from gxcore.errors import AccessDeniedError, ConfigurationError, ProtocolError

MAX_COUNTER: Final = 0xFFFFFFFF
COUNTER_WINDOW: Final = 64  # invocation counters reserved in the store at a time
PER_BUILD: Final = 8  # headroom: one request (a long one in several APDUs) never outruns its window


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


class CountedCipher(Protocol):
    """What holds the counter the next protected APDU will carry (gurux's GXCiphering)."""

    invocationCounter: int  # gurux's attribute name


class CounterWindow:
    """Our invocation counter toward one meter, used only inside a window already recorded as spent.

    A new window starts at the store's mark or above, and the check and the store's
    ``advance`` run without an await between them, so two sessions of one process never
    share a window.
    """

    def __init__(self, store: InvocationCounterStore, key: str, cipher: CountedCipher) -> None:
        self.store = store
        self.key = key
        self.cipher = cipher
        self.reserved_to = 0
        cipher.invocationCounter = store.get(key) or 0

    @property
    def known(self) -> bool:
        """False when the store has never seen this meter (read its frame counter first)."""
        return self.store.get(self.key) is not None

    @property
    def next(self) -> int:
        """The counter the next protected APDU will carry."""
        return int(self.cipher.invocationCounter)

    def start_above(self, value: int) -> None:
        """Start above ``value`` (the meter's frame counter, or the counter it expects)."""
        start = max(self.next, self.store.get(self.key) or 0, value + 1)
        if start > MAX_COUNTER:
            raise AccessDeniedError("invocation counter exhausted: the meter needs new keys")
        self.cipher.invocationCounter = start
        self.reserved_to = 0  # reserve afresh from here

    def reserve(self) -> None:
        """Make sure the counter about to be used (and ``PER_BUILD`` after it) is recorded as spent."""
        counter = self.next
        if counter + PER_BUILD <= self.reserved_to:
            return
        counter = max(counter, self.store.get(self.key) or 0)
        if counter > MAX_COUNTER:
            raise AccessDeniedError("invocation counter exhausted: the meter needs new keys")
        end = min(counter + COUNTER_WINDOW, MAX_COUNTER + 1)
        self.store.advance(self.key, end)
        self.reserved_to = end
        self.cipher.invocationCounter = counter

    def check_used(self) -> None:
        """ProtocolError when a request went past the reserved window (it must never be sent)."""
        if self.next > self.reserved_to:
            raise ProtocolError("a request used invocation counters beyond the reserved window")
