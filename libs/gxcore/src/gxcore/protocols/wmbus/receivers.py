"""How telegrams arrive from a wM-Bus receiver: four framings, split sans-IO, with resync after garbage.

``hex``: one telegram per line, as rtl-wmbus and many gateways print them::

    2E44931578563412330333637A2A0020255923C95AAA26D1B2E7493B013EC4A6F6D3529B520EDFF0EA6DEFC99D6D69EBF3\\r\\n
    # a comment line (also ; and //)
    T1;1;1;2019-04-27 11:45:01.000;97;148;12345678;0x2e44...   rtl-wmbus: the last field, RSSI field 5

  CR, LF or CRLF end a line; spaces, colons and a 0x prefix inside the hex are allowed.
  Blank lines are dropped, comment lines are reported as ``comment``, lines that are not
  hex or not a telegram as ``garbage``, an rtl-wmbus line whose CRC_OK field is 0 as
  ``checksum``. A line longer than any telegram is reported once (``overlong``) and
  dropped up to its end. Resync: the next line end.

``length``: a 2-byte big-endian length, then the raw telegram (L field first)::

    | size (2, big-endian) | telegram (size bytes: L C M A ..., data-link CRCs in or out) |

  A size no telegram can have, or one the telegram's L field does not explain (L + 1
  without CRCs, or format A with CRCs), is not believed. Resync: slide one byte and look
  again. Garbage made of bytes >= 0x02 can never pass for a size.

``lfield``: raw telegrams back to back, each delimited by its own L field, with its
data-link CRCs (format A or B), as raw radio bridges forward them::

    | L | C | M (2) | A (6) | CRC (2) | blocks ... |      format A: L + 1 + 2 per block bytes
    | L | C | M (2) | A (6) | CI ... | CRC (2) | ... |    format B: L + 1 bytes, CRCs counted in L

  The CRCs are what make this framing resynchronisable: a start whose C field is not
  one a meter sends, or whose CRCs do not hold, is not believed. Resync: slide one byte
  and look again (a false start in garbage holds the bytes after it until its L + 1
  bytes are in, then lets them go). (Without CRCs the L field alone cannot be told from garbage: use
  ``length``.)

``im871a``: IMST iM871A / iM170A WM-Bus HCI (public "Wireless M-Bus Host Controller
Interface" spec, doc 4100/6404/0050)::

    | A5 | control (4 bit) endpoint (4 bit) | message id | length | payload |
        [time stamp (4, LE)] | [RSSI] | [FCS (2, LE)] |

  Control bits: 0x2 time stamp follows, 0x4 RSSI follows, 0x8 FCS follows; 0x1 is
  reserved (a frame with it set is not believed). Endpoints 1 device management, 2 radio
  link, 3 radio link test, 4 hardware test. A received telegram is radio link message
  0x03 (WMBUSMSG_IND): its payload is the telegram from the C field on, without L and
  without data-link CRCs; L is the length field. The FCS is CRC-16/X-25 (polynomial
  0x1021 reflected, initial 0xFFFF, final complement) over control field to RSSI.
  The RSSI byte is reported raw (``rssi_raw``): the spec gives no dBm formula for it.
  Other messages (a ping reply, a configuration) are reported as ``message``. Resync:
  the next 0xA5 after a start byte whose header or FCS does not hold.

``amber``: Amber / Würth Elektronik AMB8465, AMB8665 in command mode (UART_CMD_Out_Enable)::

    | FF | command | length | payload | checksum |      checksum: XOR of FF .. last payload byte

  A received telegram is CMD_DATA_IND (0x03): its payload is the telegram from the C
  field on, without L and without data-link CRCs, followed by one RSSI byte when the
  module's RSSI_Enable is set (``rssi=True``, counted in the length). RSSI in dBm per the
  module manual: raw/2 - 74 for raw < 128, (raw - 256)/2 - 74 above. Confirmations
  (0x80 | request) are reported as ``message``. Resync: the next 0xFF after a start byte
  whose command, checksum or link header does not hold. Transparent mode (telegrams
  without the FF frame) is not read.

Every skip is a :class:`Skipped` with the stream offset and the typed error of what was
wrong (FramingError, ChecksumError); consecutive garbage bytes within one
:meth:`ReceiverFeed.feed` call are reported once. Nothing in a feed stops the splitter,
and its buffer stays bounded by the longest frame the framing can carry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal, get_args

from gxcore.errors import ChecksumError, ConfigurationError, FramingError, GxError
from gxcore.protocols.wmbus.frame import DLL_SIZE, MAX_TELEGRAM, CrcMode, add_crcs, crc16, strip_crcs

ReceiverFraming = Literal["hex", "length", "lfield", "im871a", "amber"]
FRAMINGS: Final[tuple[str, ...]] = get_args(ReceiverFraming)
SkipKind = Literal["garbage", "comment", "checksum", "message", "overlong"]

MAX_LINE: Final = 2 * MAX_TELEGRAM + 8  # hex digits of the longest telegram, and a little slack for CR and spaces
_RTL_MAX_LINE: Final = MAX_LINE + 128  # rtl-wmbus puts mode, flags, time, RSSI and ID before the hex
IM871A_SOF: Final = 0xA5
IM871A_RADIOLINK: Final = 0x02
IM871A_WMBUSMSG_IND: Final = 0x03
_IM871A_TIMESTAMP, _IM871A_RSSI, _IM871A_FCS = 0x20, 0x40, 0x80  # in the control/endpoint byte
_IM871A_MESSAGES: Final = {1: range(0x01, 0x28), 2: range(0x01, 0x06), 3: range(0x01, 0x08), 4: range(0x01, 0x03)}
AMBER_SOF: Final = 0xFF
AMBER_DATA_IND: Final = 0x03
_AMBER_REQUESTS: Final = (0x00, 0x02, 0x04, 0x05, 0x06, 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x10, 0x11, 0x30, 0x31)
_AMBER_COMMANDS: Final = frozenset({AMBER_DATA_IND, *(0x80 | c for c in _AMBER_REQUESTS)})
# C fields of EN 13757-4 frames a receiver hears (SND_NR, SND_IR, ACC_NR, ACC_DMD, SND_UD, REQ_UD, RSP_UD, ACK, ...)
LINK_C_FIELDS: Final = frozenset(
    {0x40, 0x43, 0x44, 0x46, 0x47, 0x48, 0x53, 0x73, 0x5A, 0x7A, 0x5B, 0x7B, 0x06, 0x08, 0x18, 0x28, 0x38}
    | {0x00, 0x10, 0x20, 0x30, 0x01, 0x11, 0x21, 0x31}
)


@dataclass(frozen=True, slots=True)
class ReceivedFrame:
    """One telegram as a receiver delivered it: ``raw`` starts with the L field; ``offset`` is its stream offset."""

    raw: bytes
    offset: int
    crc: CrcMode  # "absent" from dongles (they remove the data-link CRCs), "auto" from feeds
    rssi_raw: int | None = None
    rssi_dbm: float | None = None
    timestamp: int | None = None  # the receiver's own time stamp (iM871A ticks), when it sends one


@dataclass(frozen=True, slots=True)
class Skipped:
    """Bytes of the feed that gave no telegram: where, how many, why (``error`` None for comments and messages)."""

    offset: int
    length: int
    kind: SkipKind
    error: GxError | None
    note: str = ""


ReceiverEvent = ReceivedFrame | Skipped


@dataclass(frozen=True, slots=True)
class _Frame:
    raw: bytes
    crc: CrcMode
    rssi_raw: int | None = None
    rssi_dbm: float | None = None
    timestamp: int | None = None


@dataclass(frozen=True, slots=True)
class _Skip:
    kind: SkipKind
    reason: str  # "" for comments and messages: not errors
    note: str = ""
    checksum: bool = False


_Item = _Frame | _Skip | None
Decoder = Callable[[bytearray, int], tuple[int, _Item]]


# -- checksums -----------------------------------------------------------------------------------


def crc16_x25(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/X-25 (the iM871A HCI frame check sequence): check value 0x906E for b"123456789"."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc ^ 0xFFFF


def xor_checksum(data: bytes | bytearray | memoryview) -> int:
    """The Amber command frame checksum: XOR of every byte."""
    out = 0
    for byte in data:
        out ^= byte
    return out


def amber_rssi_dbm(raw: int) -> float:
    """RSSI in dBm from the byte an AMB8465/AMB8665 appends (module manual: two's complement / 2 - 74)."""
    return (raw - 256) / 2 - 74 if raw >= 128 else raw / 2 - 74


def _plausible_link(telegram: bytes | bytearray) -> bool:
    """A CRC-free telegram whose L field counts its bytes and whose C field is one a meter sends."""
    return len(telegram) >= DLL_SIZE + 1 and telegram[0] + 1 == len(telegram) and telegram[1] in LINK_C_FIELDS


# -- encoders (simulators, tests) -----------------------------------------------------------------


def encode_hex_line(telegram: bytes) -> bytes:
    """One telegram as a ``hex`` line."""
    return telegram.hex().upper().encode() + b"\n"


def encode_length(telegram: bytes) -> bytes:
    """One telegram in ``length`` framing."""
    return len(telegram).to_bytes(2, "big") + telegram


def encode_lfield(telegram: bytes, frame_format: Literal["A", "B"] = "A") -> bytes:
    """A CRC-free telegram in ``lfield`` framing: with its data-link CRCs, nothing around it."""
    return add_crcs(telegram, frame_format)


def encode_im871a(telegram: bytes, *, rssi: int | None = None, timestamp: int | None = None, fcs: bool = True) -> bytes:
    """A CRC-free telegram as the iM871A's WMBUSMSG_IND frame."""
    if not telegram or telegram[0] + 1 != len(telegram):
        raise FramingError("L field does not match the telegram length", offset=0, frame=telegram)
    control = (_IM871A_TIMESTAMP if timestamp is not None else 0) | (_IM871A_RSSI if rssi is not None else 0)
    control |= _IM871A_FCS if fcs else 0
    body = bytearray([control | IM871A_RADIOLINK, IM871A_WMBUSMSG_IND, telegram[0]]) + telegram[1:]
    if timestamp is not None:
        body += timestamp.to_bytes(4, "little")
    if rssi is not None:
        body.append(rssi)
    if fcs:
        body += crc16_x25(body).to_bytes(2, "little")
    return bytes([IM871A_SOF]) + bytes(body)


def encode_amber(telegram: bytes, *, rssi: int | None = None) -> bytes:
    """A CRC-free telegram as the Amber module's CMD_DATA_IND frame (RSSI appended when given)."""
    if not telegram or telegram[0] + 1 != len(telegram):
        raise FramingError("L field does not match the telegram length", offset=0, frame=telegram)
    payload = telegram[1:] + (bytes([rssi]) if rssi is not None else b"")
    frame = bytes([AMBER_SOF, AMBER_DATA_IND, len(payload)]) + payload
    return frame + bytes([xor_checksum(frame)])


# -- decoders: (buffer, position) -> (bytes consumed, frame | skip | None) -------------------------


def _line_end(buf: bytearray, pos: int) -> int:
    ends = [i for i in (buf.find(b"\n", pos), buf.find(b"\r", pos)) if i >= 0]
    return min(ends) if ends else -1


def parse_hex_line(text: bytes) -> _Frame | _Skip | None:
    """One stripped ``hex`` line: a telegram, a skip, or None for a blank line."""
    if not text:
        return None
    if text.startswith((b"#", b";", b"//")):
        return _Skip("comment", "", note=text[:80].decode("ascii", "replace"))
    rssi_raw: int | None = None
    if b";" in text:  # rtl-wmbus: MODE;CRC_OK;3OUTOF6OK;TIMESTAMP;PACKET_RSSI;CURRENT_RSSI;ID;0xTELEGRAM
        fields = text.split(b";")
        text = fields[-1].strip()
        if len(fields) >= 8:
            if fields[1].strip() == b"0":
                return _Skip("checksum", "rtl-wmbus line with CRC_OK 0", checksum=True)
            if fields[4].strip().isdigit():
                rssi_raw = int(fields[4])
    clean = b"".join(text.split()).replace(b":", b"")
    if clean[:2].lower() == b"0x":
        clean = clean[2:]
    try:
        raw = bytes.fromhex(clean.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return _Skip("garbage", "line is not hex")
    if len(raw) < DLL_SIZE + 1:
        return _Skip("garbage", f"hex line of {len(raw)} bytes is shorter than a link header")
    if len(raw) > MAX_TELEGRAM:
        return _Skip("garbage", f"hex line of {len(raw)} bytes is longer than any telegram")
    return _Frame(raw, "auto", rssi_raw=rssi_raw)


def _length_fits(l_field: int, size: int) -> bool:
    """Whether an L field explains ``size`` bytes: without CRCs, or format A with its block CRCs."""
    if size == l_field + 1:
        return True
    blocks = 1 + -(-(l_field + 1 - DLL_SIZE) // 16) if l_field + 1 > DLL_SIZE else 1
    return size == l_field + 1 + 2 * blocks


def decode_length(buf: bytearray, pos: int) -> tuple[int, _Item]:
    """``length`` framing at ``pos`` (module doc)."""
    if len(buf) - pos < 3:
        return 0, None
    size = int.from_bytes(buf[pos : pos + 2], "big")
    if not DLL_SIZE < size <= MAX_TELEGRAM or not _length_fits(buf[pos + 2], size):
        return 1, _Skip("garbage", f"no telegram has size {size} with L field {buf[pos + 2]}")
    if len(buf) - pos < 2 + size:
        return 0, None
    return 2 + size, _Frame(bytes(buf[pos + 2 : pos + 2 + size]), "auto")


def decode_lfield(buf: bytearray, pos: int) -> tuple[int, _Item]:
    """``lfield`` framing at ``pos`` (module doc): format A when block 1's CRC holds, else format B."""
    if len(buf) - pos < 2:
        return 0, None
    length = buf[pos]
    if length < DLL_SIZE or buf[pos + 1] not in LINK_C_FIELDS:
        return 1, _Skip("garbage", f"L field {length} with C field 0x{buf[pos + 1]:02X} starts no telegram")
    if len(buf) - pos < DLL_SIZE + 2:
        return 0, None
    block_a = crc16(buf[pos : pos + DLL_SIZE]) == int.from_bytes(buf[pos + DLL_SIZE : pos + DLL_SIZE + 2], "big")
    total = length + 1
    if block_a:
        total += 2 * (1 + -(-(length + 1 - DLL_SIZE) // 16))
    if len(buf) - pos < total:
        return 0, None
    raw = bytes(buf[pos : pos + total])
    try:
        strip_crcs(raw, crc="present", frame_format="A" if block_a else "B")
    except GxError as exc:
        return 1, _Skip("checksum" if block_a else "garbage", exc.reason, checksum=block_a)
    return total, _Frame(raw, "present")


def decode_im871a(buf: bytearray, pos: int) -> tuple[int, _Item]:
    """iM871A HCI framing at ``pos`` (module doc)."""
    if buf[pos] != IM871A_SOF:
        nxt = buf.find(IM871A_SOF, pos + 1)
        return (nxt - pos if nxt >= 0 else len(buf) - pos), _Skip("garbage", "no iM871A start of frame (0xA5)")
    if len(buf) - pos < 4:
        return 0, None
    control, endpoint, msg_id, length = buf[pos + 1] >> 4, buf[pos + 1] & 0x0F, buf[pos + 2], buf[pos + 3]
    if control & 0x1 or msg_id not in _IM871A_MESSAGES.get(endpoint, ()):
        return 1, _Skip("garbage", f"iM871A header {bytes(buf[pos : pos + 4]).hex()} is not a known message")
    flags = buf[pos + 1]
    total = 4 + length + (4 if flags & _IM871A_TIMESTAMP else 0) + (1 if flags & _IM871A_RSSI else 0)
    total += 2 if flags & _IM871A_FCS else 0
    if len(buf) - pos < total:
        return 0, None
    end = pos + total
    if flags & _IM871A_FCS:
        sent = int.from_bytes(buf[end - 2 : end], "little")
        if crc16_x25(buf[pos + 1 : end - 2]) != sent:
            return 1, _Skip("checksum", f"iM871A frame check sequence 0x{sent:04X} does not match", checksum=True)
    cursor = pos + 4 + length
    timestamp = rssi = None
    if flags & _IM871A_TIMESTAMP:
        timestamp = int.from_bytes(buf[cursor : cursor + 4], "little")
        cursor += 4
    if flags & _IM871A_RSSI:
        rssi = buf[cursor]
    if endpoint != IM871A_RADIOLINK or msg_id != IM871A_WMBUSMSG_IND:
        return total, _Skip("message", "", note=f"iM871A endpoint {endpoint} message 0x{msg_id:02X}")
    telegram = bytes([length]) + bytes(buf[pos + 4 : pos + 4 + length])
    if not _plausible_link(telegram):
        return 1, _Skip("garbage", "iM871A WMBUSMSG_IND does not carry a wM-Bus link header")
    return total, _Frame(telegram, "absent", rssi_raw=rssi, timestamp=timestamp)


def amber_decoder(*, rssi: bool = True) -> Decoder:
    """Amber command-mode framing (module doc); ``rssi``: the module appends an RSSI byte to CMD_DATA_IND."""

    def decode_amber(buf: bytearray, pos: int) -> tuple[int, _Item]:
        if buf[pos] != AMBER_SOF:
            nxt = buf.find(AMBER_SOF, pos + 1)
            return (nxt - pos if nxt >= 0 else len(buf) - pos), _Skip("garbage", "no Amber start of frame (0xFF)")
        if len(buf) - pos < 3:
            return 0, None
        command, length = buf[pos + 1], buf[pos + 2]
        if command not in _AMBER_COMMANDS:
            return 1, _Skip("garbage", f"Amber command 0x{command:02X} is not one a module sends")
        total = 4 + length
        if len(buf) - pos < total:
            return 0, None
        end = pos + total
        if xor_checksum(buf[pos : end - 1]) != buf[end - 1]:
            return 1, _Skip("checksum", f"Amber checksum 0x{buf[end - 1]:02X} does not match", checksum=True)
        if command != AMBER_DATA_IND:
            return total, _Skip("message", "", note=f"Amber command 0x{command:02X}")
        payload = bytes(buf[pos + 3 : end - 1])
        rssi_raw = payload[-1] if rssi and payload else None
        body = payload[:-1] if rssi_raw is not None else payload
        telegram = bytes([len(body) & 0xFF]) + body
        if not _plausible_link(telegram):
            return 1, _Skip("garbage", "Amber CMD_DATA_IND does not carry a wM-Bus link header")
        dbm = amber_rssi_dbm(rssi_raw) if rssi_raw is not None else None
        return total, _Frame(telegram, "absent", rssi_raw=rssi_raw, rssi_dbm=dbm)

    return decode_amber


# -- the splitter -------------------------------------------------------------------------------


class ReceiverFeed:
    """Sans-IO splitter of a receiver's byte stream into :class:`ReceiverEvent` (module doc for each framing)."""

    def __init__(self, framing: ReceiverFraming, *, rssi: bool = True) -> None:
        if framing not in FRAMINGS:
            raise ConfigurationError(f"unknown wM-Bus receiver framing {framing!r} (use {', '.join(FRAMINGS)})")
        self.framing: ReceiverFraming = framing
        self._buffer = bytearray()
        self._base = 0  # stream offset of _buffer[0]
        self._skipping = False  # hex: inside an overlong line, dropped up to its end
        self._decode: Decoder | None = {
            "length": decode_length,
            "lfield": decode_lfield,
            "im871a": decode_im871a,
            "amber": amber_decoder(rssi=rssi),
        }.get(framing)

    @property
    def offset(self) -> int:
        """Stream offset of the first byte not yet framed."""
        return self._base

    @property
    def pending(self) -> int:
        """Bytes held while a frame is incomplete."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[ReceiverEvent]:
        """Add received bytes; return the telegrams and skips they completed, in stream order."""
        self._buffer += data
        out: list[ReceiverEvent] = []
        pos = self._lines(out) if self._decode is None else self._frames(self._decode, out)
        del self._buffer[:pos]
        self._base += pos
        return out

    def _frames(self, decode: Decoder, out: list[ReceiverEvent]) -> int:
        pos = 0
        garbage_at: int | None = None
        garbage_reason = ""
        buf = self._buffer
        while pos < len(buf):
            consumed, item = decode(buf, pos)
            if consumed == 0:
                break
            if isinstance(item, _Skip) and item.kind == "garbage":
                if garbage_at is None:
                    garbage_at, garbage_reason = pos, item.reason
                pos += consumed
                continue
            if garbage_at is not None:
                out.append(self._skip(_Skip("garbage", garbage_reason), garbage_at, pos))
                garbage_at = None
            if isinstance(item, _Frame):
                out.append(self._frame(item, pos))
            elif isinstance(item, _Skip):
                out.append(self._skip(item, pos, pos + consumed))
            pos += consumed
        if garbage_at is not None:
            out.append(self._skip(_Skip("garbage", garbage_reason), garbage_at, pos))
        return pos

    def _lines(self, out: list[ReceiverEvent]) -> int:
        pos = 0
        buf = self._buffer
        while True:
            end = _line_end(buf, pos)
            if end < 0:
                if len(buf) - pos > _RTL_MAX_LINE:
                    if not self._skipping:
                        out.append(self._skip(_Skip("overlong", "line longer than any telegram"), pos, len(buf)))
                    self._skipping = True
                    return len(buf)
                return pos
            if self._skipping:
                self._skipping = False
            else:
                item = parse_hex_line(bytes(buf[pos:end]).strip())
                if isinstance(item, _Frame):
                    out.append(self._frame(item, pos))
                elif item is not None:
                    out.append(self._skip(item, pos, end))
            pos = end + 1

    def _frame(self, item: _Frame, pos: int) -> ReceivedFrame:
        return ReceivedFrame(item.raw, self._base + pos, item.crc, item.rssi_raw, item.rssi_dbm, item.timestamp)

    def _skip(self, item: _Skip, start: int, end: int) -> Skipped:
        offset = self._base + start
        error: GxError | None = None
        if item.reason:
            kind = ChecksumError if item.checksum else FramingError
            error = kind(
                f"wM-Bus {self.framing} feed: {item.reason}; {end - start} bytes skipped",
                offset=offset,
                frame=bytes(self._buffer[start : min(end, start + 64)]),
            )
        return Skipped(offset, end - start, item.kind, error, item.note)
