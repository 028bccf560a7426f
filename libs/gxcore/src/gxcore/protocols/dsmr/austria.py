"""Austrian encrypted P1 ("Kundenschnittstelle": EVN/Netz NÖ, Wiener Netze, Salzburg AG, TINETZ).

The meter pushes, every few seconds, one DLMS general-glo-ciphered APDU cut into wired
M-Bus long frames (EN 13757-2), usually two::

    68 L L 68  C  A  CI  STSAP DTSAP  <APDU part>  CS 16       CI 00 first, 1x last (x: sequence)
    APDU:  DB 08 <system title> <length> SC <invocation counter, 4> <ciphertext>[ <tag, 12>]

SC (security control) 0x20 is encryption only (AES-GCM's counter mode, no tag: the
authentication key is not needed), 0x30 encryption with authentication (the tag is checked
with the authentication key). The suite nibble (0x21: suite 1) changes nothing for AES-128.
The plaintext is a DLMS DataNotification (``0F ...``), mapped like a HAN push (its body is
the flat ``logical name, value, {scaler, unit}`` list the operators' documents describe; the
last bare text is the meter number), or a DSMR text telegram (``/ ... !CRC``).

Input may also be the bare ``DB 08 ...`` APDU. A missing key is KeyMissingError; a wrong one
DecryptionError: with a tag, the tag fails; without one, the plaintext does not decode. No
message holds a key or a tag. Pure functions: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from gxcore.errors import ChecksumError, DecryptionError, FramingError, GxError, KeyMissingError
from gxcore.protocols.dlms import ciphering
from gxcore.protocols.dlms.push import DlmsPush, decode_dlms_push
from gxcore.protocols.dsmr.telegram import DsmrTelegram, decode_dsmr_telegram
from gxcore.secrets import Secret

MAX_FRAMES: Final = 16  # an APDU of a few hundred bytes takes two; more is not a meter
_START, _STOP = 0x68, 0x16
_HEAD = 4 + 5  # 68 L L 68, then C A CI STSAP DTSAP


@dataclass(frozen=True, slots=True)
class AustrianP1:
    """One deciphered push: its security header and either a DataNotification or a DSMR telegram."""

    system_title: bytes
    security: str  # "encrypted" or "authenticated-encrypted"
    invocation_counter: int
    push: DlmsPush | None
    telegram: DsmrTelegram | None

    @property
    def meter_id(self) -> str | None:
        if self.telegram is not None:
            return self.telegram.equipment_id
        if self.push is None:
            return None
        return _meter_number(self.push) or self.push.meter_id


def is_mbus_wrapped(data: bytes) -> bool:
    """True when ``data`` starts as an M-Bus long frame (``68 L L 68``)."""
    return len(data) >= 4 and data[0] == _START and data[3] == _START and data[1] == data[2]


def mbus_apdu(data: bytes) -> bytes:
    """The APDU carried by one or more concatenated M-Bus long frames (see the module doc)."""
    apdu = bytearray()
    pos = 0
    frames = 0
    while pos < len(data):
        if data[pos] in (0x0D, 0x0A, 0x20):  # line ends or spaces between pasted frames
            pos += 1
            continue
        frames += 1
        if frames > MAX_FRAMES:
            raise FramingError(f"more than {MAX_FRAMES} M-Bus frames in one push", offset=pos)
        if not is_mbus_wrapped(data[pos:]):
            raise FramingError("not an M-Bus long frame (68 L L 68)", offset=pos, frame=data[pos : pos + 16])
        length = data[pos + 1]
        end = pos + 4 + length + 2
        if end > len(data):
            raise FramingError(f"M-Bus frame of {length} bytes is cut short", offset=pos, frame=data[pos : pos + 16])
        if length < 5:
            raise FramingError("M-Bus frame too short for a transport header", offset=pos)
        if data[end - 1] != _STOP:
            raise FramingError("M-Bus frame does not end with 16", offset=end - 1)
        if sum(data[pos + 4 : end - 2]) & 0xFF != data[end - 2]:
            raise ChecksumError("M-Bus frame checksum does not match", offset=end - 2)
        apdu += data[pos + _HEAD : end - 2]
        pos = end
    if not apdu:
        raise FramingError("no M-Bus frame")
    return bytes(apdu)


def decrypt_austrian_p1(
    data: bytes,
    key: Secret | None,
    *,
    auth_key: Secret | None = None,
    received_at: datetime | None = None,
    strict: bool = False,
) -> AustrianP1:
    """Decipher and decode one push (M-Bus frames or the bare DB 08 APDU); see the module doc."""
    apdu = mbus_apdu(data) if is_mbus_wrapped(data) else bytes(data)
    if apdu[:1] != bytes([ciphering.GENERAL_GLO_CIPHERING]):
        raise FramingError("not a general-glo-ciphered APDU (DB 08 ...)", offset=0, frame=apdu[:16])
    head = ciphering.parse_ciphered_apdu(apdu)
    if head.end != len(apdu):
        raise FramingError(f"{len(apdu) - head.end} bytes after the ciphered APDU", offset=head.end)
    if head.system_title is None or len(head.system_title) != ciphering.SYSTEM_TITLE_LENGTH:
        raise FramingError("system title is not 8 bytes", offset=1)
    if key is None:
        raise KeyMissingError("P1 push is encrypted and no key was given (--key-env)")
    security = head.security_control & (ciphering.AUTHENTICATED | ciphering.ENCRYPTED)
    if not security & ciphering.ENCRYPTED:
        raise DecryptionError(f"security control {head.security_control:#04x} is not encryption (0x20 or 0x30)")
    authenticated = bool(security & ciphering.AUTHENTICATED)
    if authenticated and auth_key is None:
        raise KeyMissingError("P1 push is authenticated and no authentication key was given (--auth-key-env)")
    plain = ciphering.unseal(
        head.security_control,
        head.system_title,
        head.invocation_counter,
        key.reveal(),
        auth_key.reveal() if auth_key is not None else None,
        head.payload,
    )
    try:
        push, telegram = _content(plain, received_at, strict)
    except GxError as exc:
        if authenticated:
            raise  # the tag held: the meter's content itself does not decode
        # No tag: a wrong key gives noise; that is the only way to tell.
        raise DecryptionError(f"deciphered P1 push does not decode ({exc.kind}): wrong key?") from None
    name = "authenticated-encrypted" if authenticated else "encrypted"
    return AustrianP1(head.system_title, name, head.invocation_counter, push, telegram)


def _content(plain: bytes, received_at: datetime | None, strict: bool) -> tuple[DlmsPush | None, DsmrTelegram | None]:
    if plain[:1] == b"\x0f":
        return decode_dlms_push(plain, received_at=received_at), None
    if plain[:1] == b"/":
        return None, decode_dsmr_telegram(plain, strict=strict)
    raise FramingError("plaintext is neither a DataNotification (0F) nor a DSMR telegram (/)", offset=0)


def _meter_number(push: DlmsPush) -> str | None:
    """The last bare printable text of the body (the meter number of the Austrian lists)."""
    for value in reversed(push.values):
        if isinstance(value, bytes) and 4 <= len(value) <= 32 and value.isascii() and value.decode().isprintable():
            return value.decode()
    return None
