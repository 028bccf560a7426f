"""Sans-IO IEC 62056-21 readout session (HHU side): modes A, B and C, driven by bytes and ``now``.

The transport calls ``start(now)``, then ``receive_data(data, now)`` for every chunk
read and ``handle_timer(now)`` when ``next_deadline()`` has passed, and acts on the
events returned: ``SendBytes`` (write), ``SwitchBaudRate`` (change the line once the
preceding writes are out; a no-op over a TCP bridge), ``IdentificationReceived``,
``ReadoutReceived`` (done) and ``SessionFailed`` (done, with a gxcore error).

    IDLE --start--> AWAIT_IDENTIFICATION --ident, mode C--> ACK_PENDING --tr elapsed--> AWAIT_READOUT
                               |                                (send ACK 0 Z 0, switch baud)
                               +--ident, mode A/B (B: switch baud)---------------------> AWAIT_READOUT
    AWAIT_READOUT --readout--> DONE;  any waiting state --timeout / bad frame--> FAILED

Timing (IEC 62056-21 §6.3.14): the meter answers within tr <= 1500 ms of the end of
our message; characters of one message are at most ta < 1500 ms apart; we wait at
least tr >= 200 ms (20 ms for a lower-case third manufacturer letter) before the ACK.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, tzinfo
from enum import Enum

from gxcore.errors import FramingError, GxError, MeterTimeoutError, ProtocolError
from gxcore.protocols.iec62056_21.frames import (
    INITIAL_BAUD,
    MAX_DATA_MESSAGE,
    MODE_B_BAUD,
    MODE_C_BAUD,
    Identification,
    encode_option_select,
    encode_request,
    next_data_message,
    next_line,
    parse_identification,
)
from gxcore.protocols.iec62056_21.readout import Iec62056Readout, decode_iec62056_21_readout


class SessionState(Enum):
    """Where a readout session stands."""

    IDLE = "idle"
    AWAIT_IDENTIFICATION = "await-identification"
    ACK_PENDING = "ack-pending"
    AWAIT_READOUT = "await-readout"
    DONE = "done"
    FAILED = "failed"


class _Input(Enum):
    START = "start"
    IDENT_OPTION_SELECT = "identification, mode C"
    IDENT_DIRECT = "identification, mode A/B"
    REACTION_ELAPSED = "reaction time elapsed"
    READOUT = "readout"
    TIMEOUT = "timeout"
    BAD_FRAME = "bad frame"


_S, _I = SessionState, _Input
_TRANSITIONS: dict[tuple[SessionState, _Input], SessionState] = {
    (_S.IDLE, _I.START): _S.AWAIT_IDENTIFICATION,
    (_S.AWAIT_IDENTIFICATION, _I.IDENT_OPTION_SELECT): _S.ACK_PENDING,
    (_S.AWAIT_IDENTIFICATION, _I.IDENT_DIRECT): _S.AWAIT_READOUT,
    (_S.AWAIT_IDENTIFICATION, _I.TIMEOUT): _S.FAILED,
    (_S.AWAIT_IDENTIFICATION, _I.BAD_FRAME): _S.FAILED,
    (_S.ACK_PENDING, _I.REACTION_ELAPSED): _S.AWAIT_READOUT,
    (_S.ACK_PENDING, _I.BAD_FRAME): _S.FAILED,
    (_S.AWAIT_READOUT, _I.READOUT): _S.DONE,
    (_S.AWAIT_READOUT, _I.TIMEOUT): _S.FAILED,
    (_S.AWAIT_READOUT, _I.BAD_FRAME): _S.FAILED,
}


@dataclass(frozen=True, slots=True)
class SendBytes:
    """Write these bytes to the line."""

    data: bytes


@dataclass(frozen=True, slots=True)
class SwitchBaudRate:
    """Change the line speed after the bytes already sent have left (7 data bits, even parity, 1 stop)."""

    baud: int


@dataclass(frozen=True, slots=True)
class IdentificationReceived:
    """The meter identified itself (manufacturer, mode, highest baud rate)."""

    identification: Identification


@dataclass(frozen=True, slots=True)
class ReadoutReceived:
    """The readout arrived with a good BCC; the session is done."""

    readout: Iec62056Readout


@dataclass(frozen=True, slots=True)
class SessionFailed:
    """The session ended with this error (timeout, framing, checksum); make a new session to retry."""

    error: GxError


SessionEvent = SendBytes | SwitchBaudRate | IdentificationReceived | ReadoutReceived | SessionFailed


@dataclass(frozen=True, slots=True)
class SessionTimings:
    """Deadlines in seconds; widen ``response_timeout`` for bridges that add network latency."""

    response_timeout: float = 1.5
    inter_char_timeout: float = 1.5
    min_reaction_time: float = 0.2
    fast_reaction_time: float = 0.02


def transmission_time(size: int, baud: int) -> float:
    """Seconds to send ``size`` characters of 10 bits (start, 7 data, parity, stop)."""
    return size * 10 / baud


class Iec62056Session:
    """One readout of one meter (HHU side, table-driven). Single use: make a new one per readout."""

    def __init__(
        self,
        *,
        address: str = "",
        max_baud: int = 19200,
        timings: SessionTimings | None = None,
        meter_tz: tzinfo = UTC,
        max_readout_size: int = MAX_DATA_MESSAGE,
    ) -> None:
        self._request = encode_request(address)  # validates the address up front (ConfigurationError)
        self._max_baud = max_baud
        self._timings = timings or SessionTimings()
        self._tz = meter_tz
        self._max_size = max_readout_size
        self._buffer = bytearray()
        self._deadline: float | None = None
        self._ack_due: float | None = None
        self._baud = INITIAL_BAUD
        self._awaiting_first_byte = True
        self.state = SessionState.IDLE
        self.identification: Identification | None = None
        self.readout: Iec62056Readout | None = None
        self.error: GxError | None = None

    @property
    def baud(self) -> int:
        """Line speed the session currently expects."""
        return self._baud

    def next_deadline(self) -> float | None:
        """When ``handle_timer`` must be called next (same clock as ``now``), or None."""
        if self.state is SessionState.ACK_PENDING:
            return self._ack_due
        return self._deadline

    def _advance(self, event: _Input) -> None:
        target = _TRANSITIONS.get((self.state, event))
        if target is None:
            raise ProtocolError(f"IEC 62056-21 session: {event.value} not allowed in state {self.state.value}")
        self.state = target

    def _sent(self, size: int, now: float) -> None:
        self._deadline = now + transmission_time(size, self._baud) + self._timings.response_timeout
        self._awaiting_first_byte = True

    def start(self, now: float) -> list[SessionEvent]:
        """Begin: set the line to 300 baud and send the sign-on request."""
        self._advance(_Input.START)
        self._baud = INITIAL_BAUD
        self._sent(len(self._request), now)
        return [SwitchBaudRate(INITIAL_BAUD), SendBytes(self._request)]

    def receive_data(self, data: bytes, now: float) -> list[SessionEvent]:
        """Bytes from the line; returns what to do next."""
        if self.state in (SessionState.IDLE, SessionState.DONE, SessionState.FAILED) or not data:
            return []
        self._buffer += data
        self._deadline = now + self._timings.inter_char_timeout
        self._awaiting_first_byte = False
        try:
            if self.state is SessionState.AWAIT_IDENTIFICATION:
                return self._on_identification(now)
            if self.state is SessionState.AWAIT_READOUT:
                return self._on_readout()
        except GxError as exc:
            return self._fail(_Input.BAD_FRAME, exc)
        if len(self._buffer) > self._max_size:  # ACK_PENDING: the meter should be silent
            return self._fail(_Input.BAD_FRAME, FramingError("meter talks while it should wait for our ACK"))
        return []

    def handle_timer(self, now: float) -> list[SessionEvent]:
        """Call at or after ``next_deadline()``: sends the pending ACK or fails on a timeout."""
        if self.state is SessionState.ACK_PENDING and self._ack_due is not None and now >= self._ack_due:
            return self._send_option_select(now)
        if self._deadline is None or now < self._deadline:
            return []
        if self.state in (SessionState.AWAIT_IDENTIFICATION, SessionState.AWAIT_READOUT):
            what = "identification" if self.state is SessionState.AWAIT_IDENTIFICATION else "readout"
            limit = "response" if self._awaiting_first_byte else "inter-character"
            return self._fail(_Input.TIMEOUT, MeterTimeoutError(f"no {what}: {limit} timeout"))
        return []

    def _fail(self, event: _Input, error: GxError) -> list[SessionEvent]:
        self._advance(event)
        self.error = error
        self._deadline = None
        self._buffer.clear()
        return [SessionFailed(error)]

    def _on_identification(self, now: float) -> list[SessionEvent]:
        while True:
            consumed, line = next_line(self._buffer)
            del self._buffer[:consumed]
            if line is None:
                if consumed == 0:
                    return []
                continue
            if line.startswith(b"/?"):
                continue  # echo of our own request (half-duplex probes and some bridges)
            break
        ident = parse_identification(line)
        self.identification = ident
        events: list[SessionEvent] = [IdentificationReceived(ident)]
        if ident.mode == "C":
            self._advance(_Input.IDENT_OPTION_SELECT)
            pause = self._timings.fast_reaction_time if ident.fast_reaction else self._timings.min_reaction_time
            self._ack_due = now + pause
            self._deadline = None
            return events
        self._advance(_Input.IDENT_DIRECT)
        if ident.mode == "B":
            self._baud = MODE_B_BAUD[ident.baud_char]
            events.append(SwitchBaudRate(self._baud))
        self._sent(0, now)
        events.extend(self._on_readout())
        return events

    def _send_option_select(self, now: float) -> list[SessionEvent]:
        assert self.identification is not None  # set on the way into ACK_PENDING
        offered = MODE_C_BAUD[self.identification.baud_char]
        chosen = max(c for c, b in MODE_C_BAUD.items() if b <= max(min(offered, self._max_baud), INITIAL_BAUD))
        ack = encode_option_select(chosen)
        self._advance(_Input.REACTION_ELAPSED)
        self._ack_due = None
        self._sent(len(ack), now)  # the answer comes at the new speed; the ACK still leaves at the old one
        self._baud = MODE_C_BAUD[chosen]
        return [SendBytes(ack), SwitchBaudRate(self._baud), *self._on_readout()]

    def _on_readout(self) -> list[SessionEvent]:
        consumed, block = next_data_message(self._buffer, max_size=self._max_size)
        del self._buffer[:consumed]
        if block is None:
            return []
        assert self.identification is not None  # AWAIT_READOUT is reached only after an identification
        readout = decode_iec62056_21_readout(block, tz=self._tz)
        readout = Iec62056Readout(self.identification, readout.records, readout.bcc, readout.meter_time, readout.raw)
        self._advance(_Input.READOUT)
        self.readout = readout
        self._deadline = None
        return [ReadoutReceived(readout)]


class SessionCore:
    """A started :class:`Iec62056Session` in the driver loop's shape (:class:`gxcore.drivers.loop.SansIoCore`).

    The session's events become a queue: :meth:`data_to_send` gives the bytes up to the
    next speed change, and :meth:`take_baud` that change, once those bytes are out, so a
    driver applies it (``drive(..., between=...)``, which must drain :meth:`take_baud`, also
    over a line without speeds: bytes queued behind a change wait for it) before anything
    sent at the new speed.
    ``done`` at the readout or the failure; :meth:`result` gives the one or raises the other.
    """

    def __init__(self, session: Iec62056Session, now: float) -> None:
        self.session = session
        self._queue: list[bytes | int] = []  # bytes to send, and ints: baud rates to switch to
        self._readout: Iec62056Readout | None = None
        self._error: GxError | None = None
        self._take(session.start(now))

    @property
    def done(self) -> bool:
        if self._readout is None and self._error is None and not self._queue and self.session.next_deadline() is None:
            # Awaiting nothing but not finished: a bug here, never a wait forever.
            self._error = ProtocolError(f"IEC 62056-21 session stalled in state {self.session.state.value}")
        # A failure ends it at once; a readout once what the session asked before it was taken
        # (mode B: the speed change that came with the identification, as a line would see it).
        return self._error is not None or (self._readout is not None and not self._queue)

    def data_to_send(self) -> bytes:
        out = bytearray()
        while self._queue and isinstance(head := self._queue[0], bytes):
            out += head
            del self._queue[0]
        return bytes(out)

    def take_baud(self) -> int | None:
        """The speed to switch the line to now (the bytes before it are sent), or None."""
        if self._queue and isinstance(head := self._queue[0], int):
            del self._queue[0]
            return head
        return None

    def receive_data(self, data: bytes, now: float) -> None:
        self._take(self.session.receive_data(data, now))

    def next_deadline(self) -> float | None:
        return self.session.next_deadline()

    def handle_timeout(self, now: float) -> None:
        self._take(self.session.handle_timer(now))

    def result(self) -> Iec62056Readout:
        """The readout; the session's gxcore error if it failed; ProtocolError if it is not done."""
        if self._error is not None:
            raise self._error
        if self._readout is None:
            raise ProtocolError(f"IEC 62056-21 session not finished (state {self.session.state.value})")
        return self._readout

    def _take(self, events: list[SessionEvent]) -> None:
        for event in events:
            if isinstance(event, SendBytes):
                self._queue.append(event.data)
            elif isinstance(event, SwitchBaudRate):
                self._queue.append(event.baud)
            elif isinstance(event, ReadoutReceived):
                self._readout = event.readout
            elif isinstance(event, SessionFailed):
                self._error = event.error
