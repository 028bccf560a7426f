"""Invocation counters that are never reused: a durable store per meter (and client), and a lock per meter.

AES-GCM with one key must never see one nonce twice, and a DLMS nonce is the sender's
system title plus its invocation counter. So a client's counter toward a meter only ever
grows, across sessions, restarts, crashes and other processes. The store is a small protocol
(:class:`InvocationCounterStore`):

* ``get(key)`` is the next counter never handed out (None: this store never saw the key);
* ``reserve(key, floor, count)`` atomically takes ``count`` counters from
  ``max(get(key), floor)`` on and records them as spent *before* any is used: a crash wastes
  counters but never repeats one, and two processes sharing the store never get one window;
* ``try_hold(meter)`` takes the meter's session lock (None when someone holds it): one
  ciphered session per meter at a time, across processes.

:class:`~gxcore.drivers.dlms.counter_file.JsonInvocationCounters` (a flock'd JSON file) is the
default for the CLI and single-node setups; the collector's PostgreSQL store
(``gxami_collector.counter_store``) serves any number of pods behind the same protocol.
:class:`MemoryInvocationCounters` is for tests only: it forgets everything when the process ends.

A store key is ``<meter>/<client address>/<client system title>/<key generation>``
(:func:`counter_key`). The key generation is a fingerprint of the keys (never the keys): a
counter is only ever unique per key, so new keys start a new generation (from the meter's
frame counter), and going back to old keys finds their counters where they were left.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Final, Protocol, runtime_checkable

from gxcore.errors import AccessDeniedError, ConfigurationError, MeterTimeoutError, ProtocolError
from gxcore.protocols.dlms.parameters import DlmsSecurity

MAX_COUNTER: Final = 0xFFFFFFFF
COUNTER_WINDOW: Final = 64  # invocation counters reserved in the store at a time
PER_BUILD: Final = 8  # headroom: one request (a long one in several APDUs) never outruns its window
# When we start from the meter's own counter (the store never saw the meter, or the meter
# reports a counter at or above ours), we start this far above it. The meter's counter is
# the last one it *accepted*; counters that went out but never reached it are not in it:
# frames lost on the way (a broken link, a killed process whose store was lost), frames
# still in flight from another client that read the same frame counter, a tool that
# started at the frame counter + 1. Up to this many such counters are jumped over. 2^16
# leaves 65536 such restarts before the 32-bit counter is spent (and new keys are due).
METER_COUNTER_MARGIN: Final = 1 << 16


class MeterBusyError(MeterTimeoutError):
    """Another session (this process or another) holds the meter's lock and did not let go in time."""

    remote = False

    @property
    def kind(self) -> str:
        return "meter-busy"


class MeterHold(Protocol):
    """The session lock of one meter, held until released (or until the holder dies)."""

    def release(self) -> None:
        """Let the next session with the meter start (idempotent)."""


@runtime_checkable
class InvocationCounterStore(Protocol):
    """Where the next unused invocation counter of each (meter, client) is kept, and who talks to a meter."""

    def get(self, key: str) -> int | None:
        """The next counter never handed out for ``key``, or None if the store never saw it."""

    def reserve(self, key: str, floor: int, count: int) -> int:
        """Atomically take counters ``start .. start+count-1``, ``start = max(get(key), floor)``; returns start.

        They are recorded as spent before this returns. AccessDeniedError when ``start`` is past 2^32-1.
        """

    def try_hold(self, meter: str) -> MeterHold | None:
        """The session lock of ``meter`` if nobody holds it, else None (never blocks)."""

    # A store may say ``blocking = False`` (it does no I/O); otherwise sessions call ``get``,
    # ``reserve`` and ``try_hold`` in a worker thread, never on the event loop.


def key_generation(security: DlmsSecurity) -> str:
    """A fingerprint of the block cipher and authentication keys: 16 hex digits of a domain-separated
    SHA-256, which tells key generations apart and reveals nothing usable about the keys."""
    digest = hashlib.sha256(b"gxami invocation counter key generation\0")
    digest.update(security.block_cipher_key.reveal())
    digest.update(security.authentication_key.reveal())
    return digest.hexdigest()[:16]


def counter_key(meter: str, client_address: int, security: DlmsSecurity) -> str:
    """The store key of our counter toward ``meter``: meter, client, client system title, key generation."""
    return f"{meter}/{client_address}/{security.system_title.hex()}/{key_generation(security)}"


def checked_counter(to: int) -> int:
    if isinstance(to, bool) or not isinstance(to, int) or not 0 <= to <= MAX_COUNTER + 1:
        raise ConfigurationError(f"invocation counter {to!r} is outside 0..2^32")
    return to


def window_bounds(current: int | None, floor: int, count: int) -> tuple[int, int]:
    """The window a reservation takes: its start and the store's new mark."""
    floor = checked_counter(floor)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigurationError(f"invocation counter window {count!r} is not a positive count")
    start = max(current or 0, floor)
    if start > MAX_COUNTER:
        raise AccessDeniedError("invocation counter exhausted: the meter needs new keys")
    return start, min(start + count, MAX_COUNTER + 1)


class _HeldKey:
    """A meter held in :class:`MemoryInvocationCounters`."""

    def __init__(self, owner: MemoryInvocationCounters, meter: str) -> None:
        self._owner: MemoryInvocationCounters | None = owner
        self._meter = meter

    def release(self) -> None:
        owner, self._owner = self._owner, None
        if owner is not None:
            with owner._lock:
                owner._held.discard(self._meter)


class MemoryInvocationCounters:
    """Counters and meter locks in this process only. For tests: a restart forgets every counter."""

    blocking = False  # no I/O: a session calls it on the event loop

    def __init__(self) -> None:
        self._next: dict[str, int] = {}
        self._held: set[str] = set()
        self._lock = threading.Lock()

    def get(self, key: str) -> int | None:
        with self._lock:
            return self._next.get(key)

    def advance(self, key: str, to: int) -> None:
        """Record every counter below ``to`` as spent (a lower ``to`` changes nothing)."""
        to = checked_counter(to)
        with self._lock:
            self._next[key] = max(self._next.get(key, 0), to)

    def reserve(self, key: str, floor: int, count: int) -> int:
        with self._lock:
            start, end = window_bounds(self._next.get(key), floor, count)
            self._next[key] = end
            return start

    def try_hold(self, meter: str) -> MeterHold | None:
        with self._lock:
            if meter in self._held:
                return None
            self._held.add(meter)
        return _HeldKey(self, meter)


class CountedCipher(Protocol):
    """What holds the counter the next protected APDU will carry (gurux's GXCiphering)."""

    invocationCounter: int  # gurux's attribute name


class CounterWindow:
    """Our invocation counter toward one meter, used only inside a window already recorded as spent.

    Each window comes from one atomic ``reserve`` in the store, so two sessions (of this
    process or of others sharing the store) never share a window.
    """

    def __init__(self, store: InvocationCounterStore, key: str, cipher: CountedCipher) -> None:
        self.store = store
        self.key = key
        self.cipher = cipher
        self.reserved_to = 0
        self._loaded = False
        self._mark: int | None = None
        cipher.invocationCounter = 0

    def load(self) -> None:
        """Read the store's mark for this key (once). A session calls it off the event loop
        (:attr:`due` and :meth:`reserve` are the other two store accesses); anything that needs
        the mark loads it on first use otherwise."""
        if not self._loaded:
            self._mark = self.store.get(self.key)
            self._loaded = True
            if self.reserved_to == 0 and int(self.cipher.invocationCounter) < (self._mark or 0):
                self.cipher.invocationCounter = self._mark or 0

    @property
    def known(self) -> bool:
        """False when the store has never seen this meter (read its frame counter first)."""
        self.load()
        return self._mark is not None or self.reserved_to > 0

    @property
    def due(self) -> bool:
        """True when the next request would have to reserve counters in the store first (store I/O)."""
        return not self._loaded or self.next + PER_BUILD > self.reserved_to

    @property
    def next(self) -> int:
        """The counter the next protected APDU will carry."""
        return int(self.cipher.invocationCounter)

    def start_above(self, value: int) -> None:
        """Start above ``value`` (the meter's frame counter, or the counter it expects).

        When ``value`` is at or above the counter we would use, we start
        :data:`METER_COUNTER_MARGIN` past it (see there why); below ours, ours stands.
        """
        self.load()
        ours = max(self.next, self._mark or 0)
        start = value + 1 + METER_COUNTER_MARGIN if value >= ours else ours
        if start > MAX_COUNTER:
            raise AccessDeniedError("invocation counter exhausted: the meter needs new keys")
        self.cipher.invocationCounter = start
        self.reserved_to = 0  # reserve afresh from here

    def reserve(self) -> None:
        """Make sure the counter about to be used (and ``PER_BUILD`` after it) is recorded as spent."""
        self.load()
        counter = self.next
        if counter + PER_BUILD <= self.reserved_to:
            return
        start = self.store.reserve(self.key, counter, COUNTER_WINDOW)
        self.reserved_to = min(start + COUNTER_WINDOW, MAX_COUNTER + 1)
        self.cipher.invocationCounter = start

    def check_used(self) -> None:
        """ProtocolError when a request went past the reserved window (it must never be sent)."""
        if self.next > self.reserved_to:
            raise ProtocolError("a request used invocation counters beyond the reserved window")
