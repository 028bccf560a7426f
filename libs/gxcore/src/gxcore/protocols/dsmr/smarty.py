"""Luxembourg Smarty P1: DSMR telegrams inside DLMS general-glo-ciphering frames (AES-128-GCM).

Frame layout (Luxembourg Smarty P1 specification, DLMS/COSEM general-glo-ciphering)::

    DB                        tag: general-glo-ciphering
    08 <system title, 8>      system title: the first 8 bytes of the GCM IV
    <length>                  of what follows: 1 byte (< 0x80), 81 LL, or 82 LL LL
    30                        security control: authenticated and encrypted
    <frame counter, 4>        big endian: the last 4 bytes of the GCM IV
    <ciphertext>              the plaintext DSMR telegram ('/' ... '!' CRC)
    <tag, 12>                 GCM tag; AAD = 30 || authentication key

The authentication key is the same published constant in every Smarty meter; the
encryption key (GUEK) is per meter and given as a ``Secret``.

Resynchronisation: bytes before ``DB 08`` are dropped; a header that does not parse
drops one byte and the scan goes on; a frame whose length is larger than
``max_size`` is treated as noise the same way. A complete frame that fails
authentication is dropped whole, so the scan does not wander into its ciphertext.
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from gxcore.errors import DecryptionError, FramingError, GxError, KeyMissingError
from gxcore.protocols.dsmr.framer import MAX_TELEGRAM_SIZE
from gxcore.protocols.dsmr.telegram import DsmrTelegram, decode_dsmr_telegram
from gxcore.secrets import Secret

SMARTY_AUTHENTICATION_KEY = bytes.fromhex("00112233445566778899AABBCCDDEEFF")  # public, same in every meter

_TAG, _TITLE_LEN, _SECURITY = 0xDB, 8, 0x30
_GCM_TAG_LEN = 12
_HEADER = 2 + _TITLE_LEN  # DB 08 + system title


def _length(buf: bytes | bytearray, pos: int) -> tuple[int, int] | None:
    """(value, bytes used) of the BER length at ``pos``; None if more bytes are needed; -1 if invalid."""
    if pos >= len(buf):
        return None
    first = buf[pos]
    if first < 0x80:
        return first, 1
    if first not in (0x81, 0x82):
        return -1, 1
    size = first - 0x80
    if pos + size >= len(buf):
        return None
    return int.from_bytes(buf[pos + 1 : pos + 1 + size], "big"), 1 + size


def next_smarty_frame(buf: bytes | bytearray, *, max_size: int = MAX_TELEGRAM_SIZE + 64) -> tuple[int, bytes | None]:
    """Next general-glo-ciphering frame in ``buf``: ``(consumed, frame)``; see the module docstring."""
    start = buf.find(bytes([_TAG, _TITLE_LEN]))
    if start < 0:
        keep = 1 if buf[-1:] == bytes([_TAG]) else 0  # a DB at the very end may start a frame
        return len(buf) - keep, None
    if start > 0:
        return start, None
    parsed = _length(buf, _HEADER)
    if parsed is None:
        return 0, None
    length, used = parsed
    if length < 1 + 4 + _GCM_TAG_LEN or length > max_size:
        return 1, None  # not a frame header after all
    end = _HEADER + used + length
    if len(buf) < end:
        return 0, None
    return end, bytes(buf[:end])


def decrypt_smarty_frame(
    frame: bytes, key: Secret | None, *, authentication_key: bytes = SMARTY_AUTHENTICATION_KEY
) -> bytes:
    """The plaintext telegram inside one frame; DecryptionError if the tag does not verify."""
    if key is None:
        raise KeyMissingError("Smarty P1 frame is encrypted and no key is configured")
    if len(frame) < _HEADER + 1 or frame[0] != _TAG or frame[1] != _TITLE_LEN:
        raise FramingError("not a general-glo-ciphering frame (DB 08 ...)", offset=0, frame=frame[:16])
    parsed = _length(frame, _HEADER)
    if parsed is None or parsed[0] < 0:
        raise FramingError("bad length field in Smarty frame", offset=_HEADER, frame=frame[:16])
    length, used = parsed
    body = frame[_HEADER + used :]
    if len(body) != length or length < 1 + 4 + _GCM_TAG_LEN:
        raise FramingError(f"Smarty frame length {length} does not match {len(body)} bytes", offset=_HEADER)
    if body[0] != _SECURITY:
        raise FramingError(f"security control byte {body[0]:#04x}, expected 0x30", offset=_HEADER + used)
    iv = frame[2:_HEADER] + body[1:5]
    ciphertext, tag = body[5:-_GCM_TAG_LEN], body[-_GCM_TAG_LEN:]
    secret = key.reveal()
    if len(secret) != 16:
        raise DecryptionError("Smarty key must be 16 bytes (AES-128)")
    decryptor = Cipher(algorithms.AES(secret), modes.GCM(iv, tag, min_tag_length=_GCM_TAG_LEN)).decryptor()
    decryptor.authenticate_additional_data(bytes([_SECURITY]) + authentication_key)
    try:
        return decryptor.update(ciphertext) + decryptor.finalize()
    except InvalidTag:
        # Neither the key nor the expected tag goes into the message.
        raise DecryptionError("Smarty frame failed authentication (wrong key or damaged frame)") from None


def encrypt_smarty_frame(
    telegram: bytes,
    key: Secret,
    *,
    system_title: bytes,
    frame_counter: int,
    authentication_key: bytes = SMARTY_AUTHENTICATION_KEY,
) -> bytes:
    """Wrap a plaintext telegram the way a Smarty meter does (for simulators and tests)."""
    if len(system_title) != _TITLE_LEN:
        raise ValueError("system title must be 8 bytes")
    counter = frame_counter.to_bytes(4, "big")
    encryptor = Cipher(algorithms.AES(key.reveal()), modes.GCM(system_title + counter)).encryptor()
    encryptor.authenticate_additional_data(bytes([_SECURITY]) + authentication_key)
    ciphertext = encryptor.update(telegram) + encryptor.finalize()
    body = bytes([_SECURITY]) + counter + ciphertext + encryptor.tag[:_GCM_TAG_LEN]
    size = len(body)
    length = (
        bytes([size]) if size < 0x80 else bytes([0x81, size]) if size < 0x100 else b"\x82" + size.to_bytes(2, "big")
    )
    return bytes([_TAG, _TITLE_LEN]) + system_title + length + body


class SmartyReader:
    """Sans-IO reader for an encrypted Smarty P1 stream: bytes in, decoded telegrams out."""

    def __init__(
        self,
        key: Secret | None,
        *,
        authentication_key: bytes = SMARTY_AUTHENTICATION_KEY,
        on_error: Callable[[GxError], None] | None = None,
    ) -> None:
        self._key = key
        self._ak = authentication_key
        self._on_error = on_error
        self._buffer = bytearray()
        self.rejected = 0
        self.discarded_bytes = 0
        self.last_error: GxError | None = None

    def feed(self, data: bytes) -> list[DsmrTelegram]:
        """Add received bytes; return the telegrams they completed."""
        self._buffer += data
        telegrams: list[DsmrTelegram] = []
        while True:
            consumed, frame = next_smarty_frame(self._buffer)
            del self._buffer[:consumed]
            if frame is None:
                self.discarded_bytes += consumed
                if consumed == 0:
                    return telegrams
                continue
            try:
                telegrams.append(
                    decode_dsmr_telegram(decrypt_smarty_frame(frame, self._key, authentication_key=self._ak))
                )
            except GxError as exc:
                self.rejected += 1
                self.last_error = exc
                if self._on_error is not None:
                    self._on_error(exc)
