"""The client's reply path, sans-IO: an :class:`Exchange` per confirmed service, a :class:`ReplyReader` to parse.

An exchange is a :class:`~gxcore.drivers.loop.SansIoCore`: the adapter calls :meth:`Exchange.start`
with ``now`` and the reply timeout, sends ``data_to_send()``, feeds whatever arrives to
``receive_data(data, now)``, and repeats until ``done``; when ``next_deadline()`` passes with
nothing received it calls ``handle_timeout(now)``, which records a MeterTimeoutError in
``failure`` and ends the exchange. Time is only ever passed in.

Frames are cut with the core's framer (:mod:`gxcore.protocols.dlms.wrapper` or
:mod:`gxcore.protocols.dlms.hdlc`) and handed whole, one at a time, to :meth:`ReplyReader.accept`:
our address check, gurux's ``getData`` into the exchange's ``GXReplyData``, the invoke-id
and command checks, and the next request of the same exchange when the reply has more to
come (a next-block request, an HDLC RR). An unsolicited notification is set aside before
gurux sees it (:mod:`gxcore.protocols.dlms.unsolicited`). Requests are built by the subclass,
:class:`~gxcore.protocols.dlms.session.DlmsClientCore`.

Bytes belong to the link, not to one exchange. What follows the last reply frame in the
same read is sorted: a whole unsolicited notification is set aside like one arriving
before the reply, a partial frame is kept by the core for the next exchange, and a whole
frame of any other kind is a ProtocolError (a reply nobody asked for).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from gurux_dlms import GXDLMS, GXByteBuffer, GXReplyData
from gurux_dlms.enums import Command

from gxcore.errors import MeterTimeoutError, ProtocolError
from gxcore.protocols.dlms import hdlc, wrapper
from gxcore.protocols.dlms.gurux import data_access_error, quiet, translate
from gxcore.protocols.dlms.parameters import DlmsParameters
from gxcore.protocols.dlms.unsolicited import APDU_AT, MAYBE_UNSOLICITED, UI_FRAME, PushHandler, UnsolicitedFrames

Frame = wrapper.WrapperFrame | hdlc.HdlcFrame
_NO_BYTES: Final = b""
_NOTIFICATIONS: Final = frozenset({Command.DATA_NOTIFICATION, Command.EVENT_NOTIFICATION, Command.INFORMATION_REPORT})
_INVOKED: Final = frozenset({Command.GET_RESPONSE, Command.SET_RESPONSE, Command.METHOD_RESPONSE})
# Short-name referencing answers with READ/WRITE responses, which carry no invoke-id.
_CONFIRMED: Final = _INVOKED | {Command.READ_RESPONSE, Command.WRITE_RESPONSE}
_get_data: Final = GXDLMS.getData
_new: Final = object.__new__


class Exchange:
    """One confirmed service: request frame(s) out, reply frame(s) in, data blocks followed.

    ``access_result`` is the meter's DataAccessResult for a GET/SET (0 = success); the
    exchange still completes when it is non-zero, so the caller decides per object.
    ``failure`` is set (and ``done``) when no reply came within ``reply_timeout`` of the last
    send or receive; :meth:`value` raises it.
    """

    # One exchange per reply read: slots make building and using it measurably cheaper.
    __slots__ = (
        "_buffer",
        "_core",
        "_frames",
        "_last",
        "_outgoing",
        "access_result",
        "done",
        "expect",
        "failure",
        "invoke_id",
        "reply",
        "reply_timeout",
        "what",
    )

    def __init__(self, core: ReplyReader, frames: list[bytes], expect: frozenset[int], what: str) -> None:
        if not frames:
            raise ValueError("an exchange needs at least one request frame")
        self.what = what
        self.expect = expect
        self.done = False
        self.failure: MeterTimeoutError | None = None
        self.reply_timeout = 0.0  # 0 until started: no deadline
        self._last = 0.0  # when bytes last moved (the start, or the last receive)
        self.access_result = 0
        self.invoke_id: int | None = None
        self.reply = GXReplyData()
        self._core = core
        self._frames = frames[1:]
        self._outgoing = frames[0]
        # Bytes an earlier exchange left on the link (the start of a push), else nothing.
        self._buffer = bytearray(core.carry)
        core.carry = _NO_BYTES

    def start(self, now: float, reply_timeout: float) -> Exchange:
        """Start the reply clock: each reply frame is due ``reply_timeout`` s after the last send or receive."""
        if not reply_timeout > 0:
            raise ValueError(f"{self.what}: reply timeout must be positive, not {reply_timeout!r}")
        self.reply_timeout = reply_timeout
        self._last = now
        return self

    def data_to_send(self) -> bytes:
        """Bytes to write now (empty when waiting for the meter or done)."""
        out, self._outgoing = self._outgoing, b""
        return out

    def next_deadline(self) -> float | None:
        """When the next reply frame is due (None before :meth:`start` or once done)."""
        if self.done or not self.reply_timeout:
            return None
        return self._last + self.reply_timeout

    def handle_timeout(self, now: float) -> None:
        """The deadline passed with nothing received: record the MeterTimeoutError and end the exchange."""
        deadline = self.next_deadline()
        if deadline is None or now < deadline:
            return  # early or spurious: keep waiting
        self.failure = MeterTimeoutError(f"{self.what}: no reply within {self.reply_timeout:g} s")
        self.done = True

    def receive_data(self, data: bytes, now: float) -> None:
        """Feed bytes from the meter that arrived at ``now``; may queue the next request (next block) or complete."""
        if self.done:
            raise ProtocolError(f"{self.what}: {len(data)} unexpected bytes after the reply", frame=data)
        self._last = now
        core = self._core
        buffer = self._buffer
        if not buffer:
            # Nothing pending, the usual case: cut the first frame straight from ``data``
            # (no copy through the buffer); whatever follows it takes the general path below.
            consumed, frame = core._decode(data)
            if consumed:
                if frame is not None:
                    core.accept(self, frame)
                if consumed == len(data):
                    return  # all taken: complete, or waiting for the next frame
                data = data[consumed:]
        buffer += data
        while not self.done:
            consumed, frame = core._decode(buffer)
            if not consumed:
                return
            del buffer[:consumed]
            if frame is not None:
                core.accept(self, frame)
        if buffer:
            self._after_reply(buffer)

    def _after_reply(self, buffer: bytearray) -> None:
        """Sort the bytes that came after the last reply frame (see the module doc)."""
        core = self._core
        while True:
            consumed, frame = core._decode(buffer)
            if not consumed:
                break
            del buffer[:consumed]
            if frame is not None and not core.set_aside(frame, self.what):
                raise ProtocolError(f"{self.what}: bytes after the last reply frame", frame=frame.raw)
        # HDLC leaves the closing flag of the last frame behind; anything more is the start of a frame.
        if buffer.strip(core._trailer):
            core.carry = bytes(buffer)
        buffer.clear()

    def value(self) -> object:
        """The decoded value of a successful GET; raises the mapped error for a refused one."""
        if self.failure is not None:
            raise self.failure
        if not self.done:
            raise ProtocolError(f"{self.what}: reply is not complete")
        if self.access_result:
            raise data_access_error(self.access_result, self.what)
        return self.reply.value

    @property
    def value_type(self) -> int:
        """The A-XDR type (gurux DataType) of the value a successful GET returned."""
        return int(self.reply.valueType or 0)

    def send_next(self, frame: bytes) -> None:
        """Queue the next request of this exchange (a next-block request)."""
        self._outgoing = frame

    def advance(self) -> bool:
        """Move to the next request frame of a multi-frame request; False when there is none."""
        if not self._frames:
            return False
        self._outgoing = self._frames.pop(0)
        self.reply.clear()
        return True


class ReplyReader:
    """The reply half of a client core: whole frames in, gurux's reply objects filled, pushes set aside.

    A subclass builds the requests; it gives :meth:`next_block_request` (an HDLC RR or a
    GET-next-block, built under its invocation counters).
    """

    def __init__(
        self, params: DlmsParameters, settings: object, *, max_reply_bytes: int, on_push: PushHandler | None
    ) -> None:
        self.max_reply_bytes = max_reply_bytes
        # Looked up once rather than per reply frame (params is frozen).
        self._decode: Callable[[bytes | bytearray], tuple[int, Frame | None]] = (
            hdlc.decode if params.interface == "hdlc" else wrapper.decode
        )
        self._trailer = b"~" if params.interface == "hdlc" else b""
        self.carry = b""  # the start of a frame that came after an exchange's last reply frame
        self._addresses = (params.link_server_address, params.client_address)
        self._settings = settings
        # A spare GXReplyData for pushes gurux finds inside replies, kept while unused (wrapper only:
        # gurux's HDLC path may also divert link-level state there).
        self._reuse_notify = params.interface != "hdlc"
        self._notify: GXReplyData | None = None
        security = params.security
        self._pushes = UnsolicitedFrames(on_push, security.block_cipher_key.reveal() if security else None)

    @property
    def pushes_set_aside(self) -> int:
        """Unsolicited notifications that arrived inside this core's exchanges (handed on or dropped)."""
        return self._pushes.set_aside_count

    def decode(self, buf: bytearray) -> tuple[int, Frame | None]:
        """Cut one frame of this core's framing off ``buf`` (see the framers' resync rules)."""
        return self._decode(buf)

    def next_block_request(self, reply: GXReplyData) -> bytes:
        """The request for the rest of a reply that has more to come."""
        raise NotImplementedError

    def set_aside(self, frame: Frame, what: str) -> bool:
        """True when ``frame`` is an unsolicited notification, now handed to ``on_push`` (or counted)."""
        return self._pushes.set_aside(frame, what)

    def accept(self, exchange: Exchange, frame: Frame) -> None:
        """Take one whole frame of ``exchange``'s reply (a push among them is set aside first)."""
        raw = frame.raw
        # gurux would parse a push into the exchange's reply and spoil it for the real one. The
        # cheap tests (the APDU's tag, the HDLC control) run inline: every reply frame passes here.
        pushes = self._pushes
        if isinstance(frame, wrapper.WrapperFrame):
            if len(raw) > APDU_AT and raw[APDU_AT] in MAYBE_UNSOLICITED and pushes.set_aside(frame, exchange.what):
                return
            addresses = (frame.source, frame.destination)
        else:
            if frame.control & 0xEF == UI_FRAME and pushes.set_aside(frame, exchange.what):
                return
            addresses = (frame.source_address, frame.destination_address)
        if addresses != self._addresses:
            self._wrong_addresses(exchange, frame)
        reply = exchange.reply
        notify = self._notify if self._notify is not None else GXReplyData()
        self._notify = None
        # GXByteBuffer(raw) without its copy (about 2 us a frame): gurux only reads the frame it
        # parses, and these are its own fields (pinned gurux 1.0.203).
        wire = _new(GXByteBuffer)
        wire._data = raw
        wire._GXByteBuffer__size = len(raw)
        wire._GXByteBuffer__position = 0
        try:
            with quiet():
                # GXDLMSClient.getData minus its XML-translator branch (we never set a translator):
                # the same GXDLMS.getData underneath, pinned gurux 1.0.203.
                whole = _get_data(self._settings, wire, reply, notify)
        except Exception as exc:  # noqa: BLE001 - gurux decodes with bare exceptions; every one becomes a gxcore error
            raise translate(exc, what=exchange.what, frame=raw) from None
        untouched = notify.command == Command.NONE and not notify.complete and not notify.data.size
        if self._reuse_notify and whole and untouched:
            # Over the wrapper gurux writes into ``notify`` only when it diverts a push there
            # (command set, complete set, and getData answers "not whole"); an untouched one is
            # as good as new and saves building a GXReplyData per frame.
            self._notify = notify
        if not whole:
            if notify.command in _NOTIFICATIONS or notify.data.size:
                # A push gurux found (one our own look did not): not ours to answer, keep waiting.
                pushes.take(raw, "notification", exchange.what)
                return
            raise ProtocolError(f"{exchange.what}: frame out of sequence or without a whole APDU", frame=raw)
        command = reply.command
        if exchange.invoke_id is not None and command in _INVOKED and exchange.invoke_id != int(reply.invokeId) & 0x0F:
            raise ProtocolError(
                f"{exchange.what}: reply carries invoke-id {int(reply.invokeId) & 0x0F},"
                f" expected {exchange.invoke_id} (a stale or foreign reply)",
                frame=raw,
            )
        if reply.data.size > self.max_reply_bytes:
            raise ProtocolError(f"{exchange.what}: reply exceeds {self.max_reply_bytes} bytes")
        if reply.isMoreData():
            # Next HDLC segment (RR) or next data block; gurux clears reply.command meanwhile.
            exchange.send_next(self.next_block_request(reply))
            return
        if exchange._frames and exchange.advance():
            return  # an acknowledged segment of a long request; send the next one
        if command not in exchange.expect:
            raise ProtocolError(
                f"{exchange.what}: reply is {_code(command)}, expected {'/'.join(map(_code, exchange.expect))}",
                frame=raw,
            )
        exchange.access_result = int(reply.error or 0) if command in _CONFIRMED else 0
        exchange.done = True

    def _wrong_addresses(self, exchange: Exchange, frame: Frame) -> None:
        """Raise for a reply frame not from our server to our client."""
        if isinstance(frame, wrapper.WrapperFrame):
            source, destination, offset = frame.source, frame.destination, 2
        else:
            source, destination, offset = frame.source_address, frame.destination_address, 3
        server, client = self._addresses
        raise ProtocolError(
            f"{exchange.what}: reply from address {source} to {destination}, expected {server} to {client}",
            offset=offset,
            frame=frame.raw,
        )


def as_frames(frames: object) -> list[bytes]:
    """gurux returns one frame, a list of frames, or a list holding a list; flatten to bytes."""
    if isinstance(frames, bytes | bytearray):
        return [bytes(frames)]
    out: list[bytes] = []
    if isinstance(frames, list | tuple):
        for item in frames:
            out.extend(as_frames(item))
    return out


def _code(value: object) -> str:
    try:
        return f"{int(value):#04x}"  # type: ignore[call-overload]  # gurux Command enums are ints
    except (TypeError, ValueError):
        return "?"
