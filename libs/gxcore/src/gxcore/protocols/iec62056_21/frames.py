"""IEC 62056-21 messages: sign-on request, identification, acknowledgement/option select, data block.

Layouts (IEC 62056-21:2002 §6.3; characters are 7-bit ASCII, the UART adds even parity)::

    request          / ? [device address] ! CR LF
    identification   / X X X Z [\\ W] <ident, <= 16 chars> CR LF
                       XXX manufacturer (3rd letter lower case: meter answers after 20 ms)
                       Z   baud rate: '0'..'6' mode C/E, 'A'..'I' mode B, other mode A
    ack/option       ACK V Z Y CR LF     V protocol ('0' normal), Z baud char, Y '0' readout / '1' programming
    data message     STX <data lines CR LF> ! CR LF ETX BCC
                       BCC = XOR of every byte after STX up to and including ETX

Framers are pure functions over a buffer returning ``(consumed, frame | None)``.
Resynchronisation: bytes before '/' (identification) or STX (data message) are
noise, such as the wake-up NULs of an optical probe or the echo of our own request,
and are dropped; a frame longer than its bound raises ``FramingError``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gxcore.errors import ConfigurationError, FramingError

SOH, STX, ETX, EOT, ACK, NAK = 0x01, 0x02, 0x03, 0x04, 0x06, 0x15
CRLF = b"\r\n"

MODE_C_BAUD: dict[str, int] = {"0": 300, "1": 600, "2": 1200, "3": 2400, "4": 4800, "5": 9600, "6": 19200}
MODE_B_BAUD: dict[str, int] = {"A": 600, "B": 1200, "C": 2400, "D": 4800, "E": 9600, "F": 19200}
INITIAL_BAUD = 300

MAX_IDENTIFICATION_LINE = 128  # standard: 5 + 2 + 16 chars; some meters are chattier
MAX_DATA_MESSAGE = 64 * 1024

_ADDRESS_RE = re.compile(r"[0-9A-Za-z ]{0,32}")
_IDENT_RE = re.compile(r"/([A-Za-z]{3})([ -~])(?:\\([ -~]))?([ -~]*)")
_REQUEST_RE = re.compile(rb"/\?([0-9A-Za-z ]{0,32})!\r\n")
_OPTION_RE = re.compile(rb"\x06([0-9])([0-9A-Z])([0-9])\r\n")


def bcc(data: bytes | bytearray | memoryview) -> int:
    """Block check character: XOR of ``data`` (pass the bytes after STX through ETX)."""
    check = 0
    for byte in bytes(data):
        check ^= byte
    return check


def encode_request(address: str = "") -> bytes:
    """Sign-on request ``/?<address>!`` CR LF; an empty address asks any meter on the line."""
    if not _ADDRESS_RE.fullmatch(address):
        raise ConfigurationError("IEC 62056-21 device address: up to 32 letters, digits or spaces")
    return b"/?" + address.encode("ascii") + b"!" + CRLF


def find_request(buf: bytes | bytearray) -> tuple[int, str | None]:
    """Meter side: ``(end offset, address)`` of the first sign-on request in ``buf``, or ``(0, None)``."""
    match = _REQUEST_RE.search(bytes(buf))
    if match is None:
        return 0, None
    return match.end(), match.group(1).decode("ascii")


def encode_option_select(baud_char: str, *, mode: str = "0", protocol: str = "0") -> bytes:
    """Acknowledgement/option select: ACK V Z Y CR LF (mode '0' readout, '1' programming)."""
    if baud_char not in MODE_C_BAUD or mode not in "0126" or protocol not in "012":
        raise ConfigurationError("option select: baud char '0'..'6', mode '0'/'1'/'2'/'6', protocol '0'..'2'")
    return bytes([ACK]) + f"{protocol}{baud_char}{mode}".encode("ascii") + CRLF


def find_option_select(buf: bytes | bytearray) -> tuple[int, tuple[str, str, str] | None]:
    """Meter side: ``(end offset, (protocol, baud_char, mode))`` of the first option select, or ``(0, None)``."""
    match = _OPTION_RE.search(bytes(buf))
    if match is None:
        return 0, None
    protocol, baud_char, mode = (g.decode("ascii") for g in match.groups())
    return match.end(), (protocol, baud_char, mode)


@dataclass(frozen=True, slots=True)
class Identification:
    """The meter's identification message."""

    manufacturer: str
    baud_char: str
    ident: str
    enhanced: str | None = None  # W of "\W": '2' announces HDLC (mode E)

    @property
    def mode(self) -> str:
        """Protocol mode the identification announces: 'C' (also E), 'B' or 'A'."""
        if self.baud_char in MODE_C_BAUD:
            return "C"
        if self.baud_char in MODE_B_BAUD:
            return "B"
        return "A"

    @property
    def baud(self) -> int:
        """Highest baud rate the meter offers (mode A: the initial 300)."""
        return MODE_C_BAUD.get(self.baud_char) or MODE_B_BAUD.get(self.baud_char) or INITIAL_BAUD

    @property
    def fast_reaction(self) -> bool:
        """Lower-case third manufacturer letter: the meter reacts after 20 ms instead of 200 ms."""
        return self.manufacturer[2].islower()

    def encode(self) -> bytes:
        """The identification line as the meter sends it."""
        enhanced = f"\\{self.enhanced}" if self.enhanced is not None else ""
        return f"/{self.manufacturer}{self.baud_char}{enhanced}{self.ident}".encode("ascii") + CRLF


def parse_identification(line: bytes, *, offset: int = 0) -> Identification:
    """Parse an identification line (with or without its CR LF)."""
    try:
        text = line.removesuffix(CRLF).decode("ascii")
    except UnicodeDecodeError as exc:
        raise FramingError("identification has a non-ASCII byte", offset=offset + exc.start) from None
    match = _IDENT_RE.fullmatch(text)
    if match is None:
        raise FramingError("identification is not '/XXXZ<ident>'", offset=offset, frame=line[:32])
    manufacturer, baud_char, enhanced, ident = match.groups()
    return Identification(manufacturer, baud_char, ident.strip(), enhanced)


def next_line(buf: bytes | bytearray, *, max_size: int = MAX_IDENTIFICATION_LINE) -> tuple[int, bytes | None]:
    """Next '/'-line (identification or echoed request) without its CR LF: ``(consumed, line)``."""
    start = buf.find(b"/")
    if start < 0:
        return len(buf), None
    end = buf.find(CRLF, start)
    if end < 0:
        if len(buf) - start > max_size:
            raise FramingError(f"no CR LF within {max_size} bytes of '/'", offset=start, frame=buf[start:])
        return start, None
    if end - start > max_size:
        raise FramingError(f"identification longer than {max_size} bytes", offset=start, frame=buf[start:end])
    return end + 2, bytes(buf[start:end])


def next_data_message(buf: bytes | bytearray, *, max_size: int = MAX_DATA_MESSAGE) -> tuple[int, bytes | None]:
    """Next STX ... ETX BCC block, BCC included and unchecked: ``(consumed, block)``."""
    start = buf.find(bytes([STX]))
    if start < 0:
        return len(buf), None
    end = buf.find(bytes([ETX]), start + 1)
    if end < 0:
        if len(buf) - start > max_size:
            raise FramingError(f"no ETX within {max_size} bytes of STX", offset=start)
        return start, None
    if end + 1 - start > max_size:
        raise FramingError(f"data message longer than {max_size} bytes", offset=start)
    if end + 1 >= len(buf):
        return start, None
    return end + 2, bytes(buf[start : end + 2])


def encode_data_message(lines: list[str]) -> bytes:
    """STX, the data lines, '!' CR LF, ETX and the BCC: a complete readout data message."""
    body = ("".join(line + "\r\n" for line in lines) + "!\r\n").encode("ascii") + bytes([ETX])
    return bytes([STX]) + body + bytes([bcc(body)])
