"""Sans-IO M-Bus master: read a meter by primary or secondary address, and search a bus.

The adapter drives it like h11: start an operation with the current time, send
:meth:`MBusMaster.data_to_send`, feed received bytes to :meth:`receive_data`, call
:meth:`handle_timeout` when :meth:`next_deadline` has passed, and collect events
from :meth:`next_event`. Time is always passed in; nothing here sleeps or does I/O.

Exchanges (one reply window per request, ``retries`` resends of the same bytes):

* primary read:   SND_NKE(a) -> E5; REQ_UD2(a, FCB=1) -> RSP_UD; while the reply
  ends with DIF 0x1F: REQ_UD2 with the FCB toggled -> next RSP_UD.
* secondary read: SND_UD(FD, CI 52, address) -> E5; then REQ_UD2(FD, ...) as above.
* search:         depth-first over ID digits. Select a mask -> no reply: nobody there;
  E5 then a clean RSP_UD to REQ_UD2(FD): one meter, recorded; a garbled reply at
  either step: several meters (a collision), so the first wildcard digit is fixed to
  0..9 and each child mask probed. A collision with a complete ID is reported as
  unresolved.

A reply window closes at the first complete frame, or at the deadline. Bytes that
do not form a frame (two slaves talking at once) make the window "garbled".
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from gxcore.errors import GxError, MeterTimeoutError, ProtocolError
from gxcore.protocols.mbus.frame import (
    ADDRESS_NETWORK,
    MAX_FRAME,
    MAX_PRIMARY,
    Ack,
    LongFrame,
    SecondaryAddress,
    decode_frame,
    req_ud2,
    select_secondary,
    snd_nke,
)
from gxcore.protocols.mbus.telegram import MBusTelegram, decode_user_data


@dataclass(frozen=True, slots=True)
class MasterConfig:
    """Timing and bounds of the master; times in seconds of the caller's clock."""

    reply_timeout: float = 0.5  # 330 bit times + 50 ms at 2400 Bd is ~0.19 s; gateways add latency
    transfer_time: float = 1.5  # a 261-byte frame takes 1.09 s at 2400 Bd: how long bytes may keep coming
    retries: int = 2
    max_telegrams: int = 16
    reset_before_read: bool = True


@dataclass(frozen=True, slots=True)
class ReadComplete:
    """All telegrams of one read; ``truncated`` when max_telegrams stopped a longer reply."""

    telegrams: tuple[MBusTelegram, ...]
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class SearchComplete:
    """Secondary addresses found on the bus, and masks that still collided at full ID depth."""

    found: tuple[SecondaryAddress, ...]
    unresolved: tuple[SecondaryAddress, ...] = ()


@dataclass(frozen=True, slots=True)
class Failed:
    """The operation ended with a gxcore error."""

    error: GxError


Event = ReadComplete | SearchComplete | Failed


class State(Enum):
    IDLE = "idle"
    RESET = "reset"  # awaiting E5 to SND_NKE
    SELECT = "select"  # awaiting E5 to a secondary selection
    REQUEST = "request"  # awaiting RSP_UD to REQ_UD2
    PROBE = "probe"  # search: awaiting E5 to a wildcard selection
    PROBE_REQUEST = "probe-request"  # search: awaiting RSP_UD from the selected slave


class Reply(Enum):
    ACK = "ack"
    TELEGRAM = "telegram"
    GARBLED = "garbled"
    TIMEOUT = "timeout"


class MBusMaster:
    """One M-Bus master on one bus: one operation at a time."""

    def __init__(self, config: MasterConfig | None = None) -> None:
        self.config = config or MasterConfig()
        self.state = State.IDLE
        self._out = bytearray()
        self._rx = bytearray()
        self._garbage = False
        self._frame: LongFrame | None = None
        self._events: deque[Event] = deque()
        self._deadline: float | None = None
        self._window_end = 0.0  # a reply window never outlasts this, however bytes trickle in
        self._last_request = b""
        self._attempts = 0
        self._address = 0
        self._fcb = True
        self._telegrams: list[MBusTelegram] = []
        self._pending: list[SecondaryAddress] = []
        self._found: list[SecondaryAddress] = []
        self._unresolved: list[SecondaryAddress] = []
        self._mask = SecondaryAddress.wildcard()
        self._last_reply = Reply.TIMEOUT
        self._table: dict[tuple[State, Reply], Callable[[float], None]] = {
            (State.RESET, Reply.ACK): self._request_first,
            (State.RESET, Reply.TIMEOUT): self._retry_or_fail,
            (State.RESET, Reply.GARBLED): self._retry_or_fail,
            (State.SELECT, Reply.ACK): self._request_first,
            (State.SELECT, Reply.TIMEOUT): self._retry_or_fail,
            (State.SELECT, Reply.GARBLED): self._fail_not_unique,
            (State.REQUEST, Reply.TELEGRAM): self._on_telegram,
            (State.REQUEST, Reply.TIMEOUT): self._retry_or_fail,
            (State.REQUEST, Reply.GARBLED): self._retry_or_fail,
            (State.REQUEST, Reply.ACK): self._retry_or_fail,
            (State.PROBE, Reply.ACK): self._probe_request,
            (State.PROBE, Reply.TIMEOUT): self._probe_next,
            (State.PROBE, Reply.GARBLED): self._probe_collision,
            (State.PROBE_REQUEST, Reply.TELEGRAM): self._probe_found,
            (State.PROBE_REQUEST, Reply.GARBLED): self._probe_collision,
            (State.PROBE_REQUEST, Reply.ACK): self._probe_collision,
            (State.PROBE_REQUEST, Reply.TIMEOUT): self._probe_retry,
        }

    # -- operations ---------------------------------------------------------------

    def read_primary(self, address: int, now: float) -> None:
        """Start reading the meter at primary ``address`` (0-250)."""
        if not 0 <= address <= MAX_PRIMARY:
            raise ValueError(f"primary address must be 0..{MAX_PRIMARY}, got {address}")
        self._begin(address)
        if self.config.reset_before_read:
            self._send(State.RESET, snd_nke(address), now)
        else:
            self._request_first(now)

    def read_secondary(self, address: SecondaryAddress | str, now: float) -> None:
        """Start reading the meter with secondary ``address`` (wildcards allowed if unique)."""
        mask = address if isinstance(address, SecondaryAddress) else SecondaryAddress.parse(address)
        self._begin(ADDRESS_NETWORK)
        self._send(State.SELECT, select_secondary(mask), now)

    def search(self, now: float, mask: SecondaryAddress | None = None) -> None:
        """Start a wildcard search of the bus below ``mask`` (default: everything)."""
        self._begin(ADDRESS_NETWORK)
        self._pending = [mask or SecondaryAddress.wildcard()]
        self._probe_next(now)

    # -- I/O side -----------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Bytes to put on the bus now (empty when there is nothing)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def receive_data(self, data: bytes, now: float) -> None:
        """Feed bytes read from the bus."""
        if self._deadline is None:
            return  # nobody asked: stray bytes on an idle bus are dropped
        self._rx += data
        if not self._garbage:
            self._deadline = min(max(self._deadline, now + self.config.reply_timeout), self._window_end)
        while self._rx:
            consumed, frame = decode_frame(self._rx)
            if consumed == 0:
                break
            del self._rx[:consumed]
            if frame is None:
                self._garbage = True
                continue
            if self._garbage:
                self._dispatch(Reply.GARBLED, now)
            elif isinstance(frame, Ack):
                self._dispatch(Reply.ACK, now)
            elif isinstance(frame, LongFrame) and frame.control & 0x0F == 0x08:
                self._frame = frame
                self._dispatch(Reply.TELEGRAM, now)
            else:
                self._dispatch(Reply.GARBLED, now)
            return
        if len(self._rx) > 2 * MAX_FRAME:
            self._dispatch(Reply.GARBLED, now)

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timeout` must be called, or None when nothing is awaited."""
        return self._deadline

    def handle_timeout(self, now: float) -> None:
        """Close the reply window if its deadline has passed."""
        if self._deadline is None or now < self._deadline:
            return
        self._dispatch(Reply.GARBLED if self._garbage or self._rx else Reply.TIMEOUT, now)

    def next_event(self) -> Event | None:
        """The next finished operation, if any."""
        return self._events.popleft() if self._events else None

    # -- machinery ----------------------------------------------------------------

    def _begin(self, address: int) -> None:
        if self.state is not State.IDLE:
            raise ProtocolError(f"master is busy ({self.state.value}); one operation at a time")
        self._address = address
        self._fcb = True
        self._telegrams = []
        self._found, self._unresolved, self._pending = [], [], []

    def _send(self, state: State, request: bytes, now: float, *, retry: bool = False) -> None:
        self.state = state
        self._last_request = request
        self._attempts = self._attempts + 1 if retry else 0
        self._out += request
        self._rx.clear()
        self._garbage = False
        self._deadline = now + self.config.reply_timeout
        self._window_end = self._deadline + self.config.transfer_time

    def _dispatch(self, reply: Reply, now: float) -> None:
        self._deadline = None
        self._last_reply = reply
        handler = self._table.get((self.state, reply))
        if handler is None:
            self._finish(Failed(ProtocolError(f"unexpected {reply.value} in state {self.state.value}")))
            return
        handler(now)

    def _finish(self, event: Event) -> None:
        self.state = State.IDLE
        self._deadline = None
        self._events.append(event)

    def _retry_or_fail(self, now: float) -> None:
        if self._attempts < self.config.retries:
            self._send(self.state, self._last_request, now, retry=True)
            return
        what = {State.RESET: "SND_NKE", State.SELECT: "selection", State.REQUEST: "REQ_UD2"}[self.state]
        error: GxError = MeterTimeoutError(f"no reply to {what} after {self._attempts + 1} attempts")
        if self._last_reply is not Reply.TIMEOUT:
            error = ProtocolError(f"no valid reply to {what} after {self._attempts + 1} attempts")
        self._finish(Failed(error))

    def _fail_not_unique(self, now: float) -> None:
        self._finish(Failed(ProtocolError("secondary address matches more than one meter (collision)")))

    def _request_first(self, now: float) -> None:
        self._fcb = True
        self._send(State.REQUEST, req_ud2(self._address, self._fcb), now)

    def _decode(self) -> MBusTelegram:
        assert self._frame is not None  # set before every TELEGRAM dispatch
        return decode_user_data(self._frame.ci, self._frame.data, address=self._frame.address, base_offset=7)

    def _on_telegram(self, now: float) -> None:
        assert self._frame is not None
        if self._address not in (ADDRESS_NETWORK, self._frame.address):
            self._retry_or_fail(now)
            return
        try:
            telegram = self._decode()
        except GxError as error:
            self._finish(Failed(error))
            return
        self._telegrams.append(telegram)
        if not telegram.more_records_follow:
            self._finish(ReadComplete(tuple(self._telegrams)))
        elif len(self._telegrams) >= self.config.max_telegrams:
            self._finish(ReadComplete(tuple(self._telegrams), truncated=True))
        else:
            self._fcb = not self._fcb
            self._send(State.REQUEST, req_ud2(self._address, self._fcb), now)

    # -- search -------------------------------------------------------------------

    def _probe_next(self, now: float) -> None:
        if not self._pending:
            self._finish(SearchComplete(tuple(self._found), tuple(self._unresolved)))
            return
        self._send(State.PROBE, select_secondary(self._pending.pop()), now)

    def _current_mask(self) -> SecondaryAddress:
        return SecondaryAddress.from_bytes(self._last_request[7:15]) if self.state is State.PROBE else self._mask

    def _probe_request(self, now: float) -> None:
        self._mask = SecondaryAddress.from_bytes(self._last_request[7:15])
        self._send(State.PROBE_REQUEST, req_ud2(ADDRESS_NETWORK, True), now)

    def _probe_retry(self, now: float) -> None:
        if self._attempts < self.config.retries:
            self._send(State.PROBE_REQUEST, self._last_request, now, retry=True)
        else:
            self._probe_next(now)  # selected but silent: nothing readable there

    def _probe_collision(self, now: float) -> None:
        mask = self._current_mask()
        position = mask.first_wildcard()
        if position is None:
            self._unresolved.append(mask)
        else:
            self._pending.extend(mask.with_digit(position, digit) for digit in range(9, -1, -1))
        self._probe_next(now)

    def _probe_found(self, now: float) -> None:
        try:
            telegram = self._decode()
            found = SecondaryAddress.parse(telegram.secondary_address)
        except (GxError, ValueError):
            self._probe_collision(now)
            return
        if not self._mask.matches(found):
            self._probe_collision(now)
            return
        if found not in self._found:
            self._found.append(found)
        self._probe_next(now)


class MasterOperation:
    """One started master operation in the driver loop's shape (:class:`gxcore.drivers.loop.SansIoCore`).

    ``done`` once the operation completed or failed; :meth:`result` then gives the
    :class:`ReadComplete` / :class:`SearchComplete` or raises the master's error.
    """

    def __init__(self, master: MBusMaster) -> None:
        self.master = master
        self.outcome: Event | None = None

    @property
    def done(self) -> bool:
        if self.outcome is None:
            self.outcome = self.master.next_event()
            if self.outcome is None and self.master.next_deadline() is None:
                # Not started, or a state that awaits nothing: a bug here, never a wait forever.
                self.outcome = Failed(ProtocolError(f"M-Bus master stalled in state {self.master.state.value}"))
        return self.outcome is not None

    def data_to_send(self) -> bytes:
        return self.master.data_to_send()

    def receive_data(self, data: bytes, now: float) -> None:
        self.master.receive_data(data, now)

    def next_deadline(self) -> float | None:
        return self.master.next_deadline()

    def handle_timeout(self, now: float) -> None:
        self.master.handle_timeout(now)

    def result(self) -> ReadComplete | SearchComplete:
        """The operation's result; its gxcore error if it failed; ProtocolError if it is not done."""
        if not self.done:
            raise ProtocolError(f"M-Bus operation not finished (state {self.master.state.value})")
        if isinstance(self.outcome, Failed):
            raise self.outcome.error
        assert self.outcome is not None  # done
        return self.outcome
