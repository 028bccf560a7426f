"""DSMR P1 stream framing: find telegrams in a byte stream, check and add the CRC.

Telegram layout (DSMR P1 companion standard, after IEC 62056-21 mode D)::

    /XXXZ<ident> CR LF              header: '/', 3-letter manufacturer, baud char, identification
    CR LF                           empty line
    <OBIS>(<value>)... CR LF        data lines; DSMR 2.2/3 may continue a line with "(...)" lines
    ...
    !<CRC> CR LF                    '!' then CRC16 as 4 hex digits (DSMR 4+); DSMR 2.2/3: "!" CR LF

The CRC is CRC16/ARC (poly 0xA001 reflected, init 0, no final xor) over every byte
from '/' through '!' inclusive, written as 4 upper-case hex digits.

Resynchronisation rule (the same one dsmr_parser's telegram buffer applies): bytes
before a '/' are line noise and dropped. A telegram body never contains '/', so a
telegram starts at the *last* '/' before its '!': a torn telegram followed by a good
one loses only the torn one. A candidate longer than ``max_size`` without a '!' is
dropped whole. The framer never holds more than ``max_size`` bytes of a candidate.
"""

from __future__ import annotations

from collections.abc import Iterable

MAX_TELEGRAM_SIZE = 8192  # largest real telegrams (Belgian 13-month history, long text) stay < 3 KiB

_HEX = frozenset(b"0123456789ABCDEFabcdef")


def _crc16_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC16_TABLE = _crc16_table()


def crc16_arc(data: bytes | bytearray | memoryview) -> int:
    """CRC16/ARC of ``data`` as the P1 port computes it."""
    crc = 0
    for byte in bytes(data):
        crc = (crc >> 8) ^ _CRC16_TABLE[(crc ^ byte) & 0xFF]
    return crc


def next_telegram(buf: bytes | bytearray, *, max_size: int = MAX_TELEGRAM_SIZE) -> tuple[int, bytes | None]:
    """Find the next telegram in ``buf``: ``(consumed, telegram)``.

    ``telegram`` is the bytes from '/' through '!' and the CRC digits (no trailing
    CR LF). ``(0, None)`` means "need more bytes"; ``(n, None)`` with ``n > 0`` means
    ``n`` bytes of noise were dropped and the caller should call again.
    """
    start = buf.find(b"/")
    if start < 0:
        return len(buf), None
    end = buf.find(b"!", start)
    if end < 0:
        start = buf.rfind(b"/", start)
        if len(buf) - start > max_size:
            return len(buf), None  # oversized candidate without an end: drop it whole
        return start, None
    start = buf.rfind(b"/", start, end)
    if start > 0:
        return start, None  # drop the noise (or torn telegram) first, so callers can count it
    if end + 1 > max_size:
        return end + 1, None
    if end + 1 >= len(buf):
        return 0, None  # cannot yet tell "!" CR LF from "!" + CRC
    if buf[end + 1] not in _HEX:
        # DSMR 2.2/3: no CRC. Swallow the CR LF when it is already here.
        stop = end + 1
        for expected in b"\r\n":
            if stop < len(buf) and buf[stop] == expected:
                stop += 1
        return stop, bytes(buf[: end + 1])
    digits = 1
    while digits < 4 and end + 1 + digits < len(buf) and buf[end + 1 + digits] in _HEX:
        digits += 1
    if digits < 4 and end + 1 + digits >= len(buf):
        return 0, None
    # A short CRC (non-hex before the 4th digit) is handed on; the decoder rejects it.
    stop = end + 1 + digits
    if digits < 4:
        return stop, bytes(buf[:stop])
    for expected in b"\r\n":
        if stop < len(buf) and buf[stop] == expected:
            stop += 1
    return stop, bytes(buf[: end + 5])


def encode_telegram(header: str, lines: Iterable[str], *, with_crc: bool = True) -> bytes:
    """Build a telegram: header (without '/'), data lines, '!' and the CRC (when ``with_crc``)."""
    body = "/" + header + "\r\n\r\n" + "".join(line + "\r\n" for line in lines) + "!"
    raw = body.encode("ascii")
    if with_crc:
        raw += f"{crc16_arc(raw):04X}".encode("ascii")
    return raw + b"\r\n"
