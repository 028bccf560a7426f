"""Wireless M-Bus telegram decoding: DLL, ELL (0x8C-0x8F), AFL (0x90), TPL (0x7A, 0x72, 0x78), APL.

Layer chain after the 10-byte link header, each announced by a CI byte::

    [ELL 8C: CC ACC | 8D: CC ACC SN(4) PCRC(2) | 8E: CC ACC M2 A2 | 8F: 8E + SN PCRC]
    [AFL 90: AFLL FCL(2) [MCL] [KI(2)] [MCR(4)] [MAC(n)] [ML(2)]]
    TPL 7A: ACC ST CF(2) [CFE]     |  72: ID(4) M(2) V T ACC ST CF(2) [CFE]  |  78: none
    APL: data records (EN 13757-3), the first CF.NNNN blocks encrypted per CF.MMMMM

The configuration field CF carries the security mode (bits 8-12) and the number of
encrypted 16-byte blocks (bits 4-7). The decrypted application layer is decoded with
the wired M-Bus record decoder, so both media yield the same :class:`MBusTelegram`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from gxcore.errors import ChecksumError, DecryptionError, FramingError, ProtocolError
from gxcore.protocols.mbus.frame import manufacturer_code
from gxcore.protocols.mbus.quantities import medium_text
from gxcore.protocols.mbus.records import MBusRecord, parse_records
from gxcore.protocols.mbus.telegram import MBusTelegram, bcd_id
from gxcore.protocols.wmbus import security
from gxcore.protocols.wmbus.frame import (
    DLL_SIZE,
    CrcMode,
    FrameFormat,
    LinkHeader,
    crc16,
    frame_length_a,
    parse_link_header,
    strip_crcs,
)
from gxcore.readings import Unparsed

CI_TPL_SHORT = 0x7A
CI_TPL_LONG = 0x72
CI_TPL_NONE = 0x78
CI_COMPACT = 0x79
CI_AFL = 0x90
_ELL_SIZES = {0x8C: 2, 0x8D: 8, 0x8E: 10, 0x8F: 16}
_AFL_MAC_SIZES = {4: 2, 5: 8, 6: 12, 7: 16}


@dataclass(frozen=True, slots=True)
class Afl:
    """Authentication and fragmentation layer fields needed for mode 7."""

    mcl: int | None
    counter_raw: bytes | None
    mac: bytes | None
    length_raw: bytes | None


def _need(telegram: bytes, pos: int, count: int, what: str) -> None:
    if pos + count > len(telegram):
        raise FramingError(f"telegram ends inside the {what}", offset=len(telegram), frame=telegram)


def _parse_ell(telegram: bytes, pos: int, key: bytes | None, link: LinkHeader) -> tuple[bytes, int]:
    ci = telegram[pos]
    size = _ELL_SIZES[ci]
    _need(telegram, pos + 1, size, f"extended link layer 0x{ci:02X}")
    cc = telegram[pos + 1]
    end = pos + 1 + size
    if ci in (0x8C, 0x8E):
        return telegram, end
    session_at = end - 6
    session_raw = telegram[session_at : session_at + 4]
    encrypted = int.from_bytes(session_raw, "little") >> 29
    body = telegram[end - 2 :]  # payload CRC (2) followed by the rest
    if encrypted == 1:
        ell_key = security.require_key(key, "ELL AES-CTR", link.id)
        counter = security.ell_counter_block(link.manufacturer_raw, link.address_raw, cc, session_raw)
        body = security.ctr_crypt(ell_key, counter, body)
    elif encrypted:
        raise DecryptionError(f"ELL encryption {encrypted} is not supported", meter_id=link.id)
    if len(body) < 2 or crc16(body[2:]) != int.from_bytes(body[:2], "little"):
        error = DecryptionError if encrypted else ChecksumError
        raise error("ELL payload CRC does not match" + (": wrong key?" if encrypted else ""), meter_id=link.id)
    return telegram[: end - 2] + body, end


def _parse_afl(telegram: bytes, pos: int) -> tuple[Afl, int]:
    _need(telegram, pos + 1, 1, "AFL length")
    length = telegram[pos + 1]
    start = pos + 2
    end = start + length
    _need(telegram, start, length, "authentication and fragmentation layer")
    if length < 2:
        raise ProtocolError("AFL shorter than its control field", offset=start, frame=telegram)
    fcl = int.from_bytes(telegram[start : start + 2], "little")
    if fcl & 0x4000:
        raise ProtocolError("fragmented wM-Bus messages are not supported", offset=start, frame=telegram)
    cursor = start + 2
    mcl = counter = mac = ml = None

    def take(count: int) -> bytes:
        nonlocal cursor
        if cursor + count > end:
            raise ProtocolError("AFL fields exceed its length", offset=cursor, frame=telegram)
        chunk = telegram[cursor : cursor + count]
        cursor += count
        return chunk

    if fcl & 0x2000:
        mcl = take(1)[0]
    if fcl & 0x0200:
        take(2)  # key information: not needed to decrypt with a per-meter key
    if fcl & 0x0800:
        counter = take(4)
    if fcl & 0x0400:
        at = (mcl or 0) & 0x0F
        if at not in _AFL_MAC_SIZES:
            raise ProtocolError(f"AFL authentication type {at} is not supported", offset=cursor, frame=telegram)
        mac = take(_AFL_MAC_SIZES[at])
    if fcl & 0x1000:
        ml = take(2)
    return Afl(mcl, counter, mac, ml), end


def decode_wmbus_telegram(
    data: bytes,
    key: bytes | None = None,
    *,
    crc: CrcMode = "auto",
    frame_format: FrameFormat = "auto",
    strict: bool = False,
) -> MBusTelegram:
    """Decode a raw wM-Bus telegram (L field first) as a receiver or TCP feed delivers it.

    ``crc`` says whether the data link CRCs are still in the bytes ("present"), already
    removed ("absent") or to be detected ("auto"). Raises only gxcore errors:
    KeyMissingError when the payload is encrypted and ``key`` is None, DecryptionError
    when the key does not fit.

    Tolerant by default: bytes beyond what the L field announces (a receiver's RSSI or padding)
    and records that cannot be read come back in ``unparsed``; CRCs and decryption stay strict.
    ``strict=True`` refuses both.
    """
    data = bytes(data)
    trailing = b""
    try:
        telegram = strip_crcs(data, crc=crc, frame_format=frame_format)
    except FramingError:
        if strict:
            raise
        data, trailing, telegram = _beyond_l_field(data, crc, frame_format)
    link = parse_link_header(telegram)
    pos = DLL_SIZE
    afl: Afl | None = None
    while pos < len(telegram) and telegram[pos] in _ELL_SIZES:
        telegram, pos = _parse_ell(telegram, pos, key, link)
    if pos < len(telegram) and telegram[pos] == CI_AFL:
        afl, pos = _parse_afl(telegram, pos)
    if pos >= len(telegram):
        raise FramingError("telegram ends before the transport layer CI", offset=pos, frame=telegram)
    decoded = _decode_tpl(telegram, pos, link, afl, key, strict)
    if trailing:
        extra = Unparsed(len(data), trailing, f"{len(trailing)} byte(s) beyond the L field")
        decoded = replace(decoded, unparsed=[*decoded.unparsed, extra])
    return decoded


def _beyond_l_field(data: bytes, crc: CrcMode, frame_format: FrameFormat) -> tuple[bytes, bytes, bytes]:
    """(telegram bytes, trailing bytes, CRC-free telegram) for input longer than its L field says.

    The lengths the L field explains are tried, the longest first: format A with CRCs, then
    format B or no CRCs (L + 1). A length that fits none is the original FramingError.
    """
    length = data[0] if data else 0
    for size in sorted({frame_length_a(length), length + 1}, reverse=True):
        if DLL_SIZE < size < len(data):
            try:
                return data[:size], data[size:], strip_crcs(data[:size], crc=crc, frame_format=frame_format)
            except FramingError:
                continue
    return data, b"", strip_crcs(data, crc=crc, frame_format=frame_format)


def _decode_tpl(
    telegram: bytes, pos: int, link: LinkHeader, afl: Afl | None, key: bytes | None, strict: bool
) -> MBusTelegram:
    ci = telegram[pos]
    tpl_start = pos
    ident, man_raw, version, device_type = link.address_raw[:4], link.manufacturer_raw, link.version, link.device_type
    access = status = config = 0
    if ci == CI_TPL_SHORT:
        _need(telegram, pos + 1, 4, "short transport header")
        access, status = telegram[pos + 1], telegram[pos + 2]
        config = int.from_bytes(telegram[pos + 3 : pos + 5], "little")
        pos += 5
    elif ci == CI_TPL_LONG:
        _need(telegram, pos + 1, 12, "long transport header")
        header = telegram[pos + 1 : pos + 13]
        ident, man_raw, version, device_type = header[0:4], header[4:6], header[6], header[7]
        access, status = header[8], header[9]
        config = int.from_bytes(header[10:12], "little")
        pos += 13
    elif ci == CI_TPL_NONE:
        pos += 1
    elif 0xA0 <= ci <= 0xB7:
        raw = telegram[pos + 1 :]
        record = MBusRecord(None, raw, "", 0, 0, 0, "instantaneous", f"Manufacturer specific CI 0x{ci:02X}", raw=raw)
        return _telegram(link, ident, man_raw, version, device_type, ci=ci, records=[record])
    elif ci == CI_COMPACT:
        raise ProtocolError("compact frames (CI 0x79) need the meter's format signature; not supported")
    else:
        raise ProtocolError(f"unsupported CI field 0x{ci:02X}", offset=pos, frame=telegram)
    mode = (config >> 8) & 0x1F
    blocks = (config >> 4) & 0x0F
    if mode == 7:
        _need(telegram, pos, 1, "configuration field extension")
        pos += 1
    payload = telegram[pos:]
    meter_id = bcd_id(ident)
    if mode == 5:
        iv = security.mode5_iv(man_raw, ident + bytes([version, device_type]), access)
        payload = security.decrypt_mode5(key, iv, payload, blocks=blocks, meter_id=meter_id)
    elif mode == 7:
        if afl is None or afl.counter_raw is None:
            raise DecryptionError("security mode 7 without an AFL message counter", meter_id=meter_id)
        if afl.mac is not None:
            mac_input = bytes([afl.mcl or 0]) + afl.counter_raw + (afl.length_raw or b"") + telegram[tpl_start:]
            security.verify_afl_mac(
                key, afl.mac, mac_input=mac_input, counter_raw=afl.counter_raw, meter_id_raw=ident, meter_id=meter_id
            )
        payload = security.decrypt_mode7(
            key, payload, blocks=blocks, counter_raw=afl.counter_raw, meter_id_raw=ident, meter_id=meter_id
        )
    elif mode != 0:
        raise DecryptionError(f"security mode {mode} is not supported", meter_id=meter_id)
    records, more, unparsed = parse_records(payload, medium=device_type, base_offset=pos, strict=strict)
    return _telegram(
        link, ident, man_raw, version, device_type,
        access=access, status=status, config=config, ci=ci, records=records, more=more, mode=mode,
        unparsed=unparsed,
    )  # fmt: skip


def _telegram(
    link: LinkHeader,
    ident: bytes,
    man_raw: bytes,
    version: int,
    device_type: int,
    *,
    ci: int,
    records: list[MBusRecord],
    access: int = 0,
    status: int = 0,
    config: int = 0,
    more: bool = False,
    mode: int = 0,
    unparsed: list[Unparsed] | None = None,
) -> MBusTelegram:
    return MBusTelegram(
        id=bcd_id(ident),
        manufacturer=manufacturer_code(int.from_bytes(man_raw, "little")),
        medium=medium_text(device_type),
        version=version,
        access_number=access,
        status=status,
        records=records,
        medium_code=device_type,
        signature=config,
        ci=ci,
        more_records_follow=more,
        security_mode=mode,
        extra={"c_field": link.control, "link_id": link.id, "link_manufacturer": link.manufacturer},
        unparsed=unparsed or [],
    )
