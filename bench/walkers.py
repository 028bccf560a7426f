"""Bare frame walkers: the peers of the protocol decoders, the floor of touching the bytes in Python.

Each walker does only what any correct decoder must do with a frame: check its
checksum over the same bytes (with the fastest plain-Python method for that check:
a C builtin where one exists, a 256-entry table loop otherwise), decrypt it if it is
encrypted (with the same ``cryptography`` call the decoder uses), and step over its
records to find where each value lies. It builds no objects, converts no units, checks
nothing else and raises plain ``ValueError``. A decoder that reaches the walker's rate
spends nothing beyond touching the bytes; the ratio says how much more it does.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def _table(poly: int, reflected: bool) -> tuple[int, ...]:
    out = []
    for byte in range(256):
        if reflected:
            crc = byte
            for _ in range(8):
                crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        else:
            crc = byte << 8
            for _ in range(8):
                crc = ((crc << 1) ^ poly) if crc & 0x8000 else (crc << 1)
        out.append(crc & 0xFFFF)
    return tuple(out)


_EN13757 = _table(0x3D65, reflected=False)  # wM-Bus data link CRC
_ARC = _table(0xA001, reflected=True)  # DSMR P1 CRC16/ARC

# EN 13757-3 table 4: data field (DIF low nibble) -> bytes; -1 = variable (LVAR follows the VIF).
_DATA_BYTES = (0, 1, 2, 3, 4, 4, 6, 8, 0, 1, 2, 3, 4, -1, 6, 0)


def crc_en13757(data: bytes) -> int:
    crc = 0
    table = _EN13757
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ table[((crc >> 8) ^ byte) & 0xFF]
    return crc ^ 0xFFFF


def crc_arc(data: bytes) -> int:
    crc = 0
    table = _ARC
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


def xor_fold(data: bytes) -> int:
    """XOR of all bytes, folded as one big integer: log2(n) C-level steps, no Python byte loop."""
    n = int.from_bytes(data, "little")
    width = len(data)
    while width > 1:
        half = width // 2
        n = (n & ((1 << (8 * half)) - 1)) ^ (n >> (8 * half))
        width -= half
    return n


def walk_records(data: bytes, pos: int, end: int) -> int:
    """Step over EN 13757-3 data records in ``data[pos:end]``; returns how many there are."""
    records = 0
    while pos < end:
        dif = data[pos]
        pos += 1
        if dif in (0x0F, 0x1F):  # manufacturer data / more records follow: one element, the rest is opaque
            records += 1
            pos = end
            break
        if dif == 0x2F:  # idle filler
            continue
        while data[pos - 1] & 0x80:  # DIFEs
            pos += 1
        vif = data[pos]
        pos += 1
        if vif & 0x7F == 0x7C:  # plain-text VIF: length and text follow
            pos += 1 + data[pos]
        while data[pos - 1] & 0x80:  # VIFEs
            pos += 1
        size = _DATA_BYTES[dif & 0x0F]
        if size < 0:
            lvar = data[pos]
            pos += 1
            size = lvar if lvar < 0xC0 else lvar & 0x0F
        pos += size
        records += 1
    if pos > end:
        raise ValueError("record runs past the end of the frame")
    return records


def walk_mbus(frame: bytes) -> int:
    """Wired M-Bus long frame 68 L L 68 C A CI <12-byte header> records CS 16."""
    length = frame[1]
    if frame[0] != 0x68 or frame[3] != 0x68 or frame[2] != length or len(frame) != length + 6 or frame[-1] != 0x16:
        raise ValueError("not a long frame")
    if sum(frame[4:-2]) & 0xFF != frame[-2]:
        raise ValueError("checksum")
    return walk_records(frame, 7 + 12, len(frame) - 2)


def walk_wmbus(frame: bytes, key: bytes | None) -> int:
    """wM-Bus format A with CRCs: block CRCs, link header, short TPL (7A), mode 5 AES-CBC, records."""
    length = frame[0]
    plain = bytearray()
    pos, remaining, first = 0, length + 1, True
    while remaining > 0:
        size = 10 if first else min(16, remaining)
        block = frame[pos : pos + size]
        if crc_en13757(block) != int.from_bytes(frame[pos + size : pos + size + 2], "big"):
            raise ValueError("block CRC")
        plain += block
        pos, remaining, first = pos + size + 2, remaining - size, False
    if plain[10] != 0x7A:
        raise ValueError("not a short transport layer header")
    config = int.from_bytes(plain[13:15], "little")
    payload = bytes(plain[15:])
    if (config >> 8) & 0x1F == 5:
        if key is None:
            raise ValueError("encrypted")
        blocks = (config >> 4) & 0x0F
        iv = bytes(plain[2:10]) + bytes([plain[11]]) * 8
        decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
        clear = decryptor.update(payload[: 16 * blocks]) + decryptor.finalize()
        if clear[:2] != b"\x2f\x2f":
            raise ValueError("wrong key")
        payload = clear[2:] + payload[16 * blocks :]
    return walk_records(payload, 0, len(payload))


def walk_dsmr(telegram: bytes) -> int:
    """DSMR P1 telegram '/' ... '!' CRC: CRC16/ARC, then each data line split at its first '('."""
    start = telegram.index(b"/")
    bang = telegram.index(b"!", start)
    if crc_arc(telegram[start : bang + 1]) != int(telegram[bang + 1 : bang + 5], 16):
        raise ValueError("CRC")
    lines = 0
    for line in telegram[start:bang].split(b"\r\n")[2:]:
        _key, paren, _value = line.partition(b"(")
        lines += bool(paren)
    return lines


def walk_iec62056_21(readout: bytes) -> int:
    """IEC 62056-21 STX lines ! CR LF ETX BCC: the BCC, then the data sets of each line."""
    stx = readout.index(b"\x02")
    etx = readout.index(b"\x03", stx)
    if xor_fold(readout[stx + 1 : etx + 1]) != readout[etx + 1]:
        raise ValueError("BCC")
    sets = 0
    for line in readout[stx + 1 : etx].split(b"\r\n"):
        sets += line.count(b"(") - line.count(b")(")  # ")(" = a further value of the same address
    return sets


class RegisterBlockWalker:
    """Big-endian register block -> numbers, with one precompiled ``struct`` per point."""

    def __init__(self, layout: Sequence[tuple[int, str, float, float]], registers: int) -> None:
        # layout: (register offset in the block, struct code, scale, offset) per point
        self._words = struct.Struct(f">{registers}H")
        self._points = [(2 * at, struct.Struct(">" + code), scale, offset) for at, code, scale, offset in layout]

    def walk(self, words: Sequence[int]) -> int:
        data = self._words.pack(*words)
        values = 0
        for at, fmt, scale, offset in self._points:
            fmt.unpack_from(data, at)[0] * scale + offset
            values += 1
        return values
