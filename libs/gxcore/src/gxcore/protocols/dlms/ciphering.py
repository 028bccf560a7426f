"""DLMS/COSEM transport security (Green Book 9.2.7): AES-GCM with `cryptography`, ciphered APDU headers.

Security suite 0 (AES-GCM-128) and the AES-GCM part of suites 1 (128-bit) and 2 (256-bit
keys). A protected APDU carries a security header and the protected payload::

    service-specific  glo-/ded-xxx:       tag | len | SC | IC (4) | payload
    general-glo/ded-ciphering (DB/DC):    tag | len | system title | len | SC | IC (4) | payload

    SC (security control): bit 4 authenticated, bit 5 encrypted, bit 6 broadcast key,
                           bit 7 compressed, bits 0-3 security suite
    payload:   authenticated only       plaintext  | T (12)
               encrypted only           ciphertext
               authenticated+encrypted  ciphertext | T (12)

    nonce (IV) = system title of the sender (8) | IC (4)
    AAD        = SC | AK  (| plaintext, when only authenticated)
    T          = the GCM tag cut to its first 12 bytes

An HLS-GMAC answer to a challenge (``f(StoC)``, ``f(CtoS)``) is ``0x10 | IC | T`` with the
challenge as the plaintext of an authenticated-only protection.

Lengths are checked against the bytes present before anything is sliced. Every failure
is a :class:`~gxcore.errors.DecryptionError` (or FramingError for a header that does not
parse) whose message names what failed, never a key or a tag value.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Final, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gxcore.errors import DecryptionError, FramingError, KeyMissingError

AUTHENTICATED: Final = 0x10
ENCRYPTED: Final = 0x20
BROADCAST: Final = 0x40
COMPRESSED: Final = 0x80
TAG_LENGTH: Final = 12
SYSTEM_TITLE_LENGTH: Final = 8
GENERAL_GLO_CIPHERING: Final = 0xDB
GENERAL_DED_CIPHERING: Final = 0xDC

SecurityPolicy = Literal["authenticated", "encrypted", "authenticated-encrypted"]
SECURITY_CONTROL: Final[dict[str, int]] = {
    "authenticated": AUTHENTICATED,
    "encrypted": ENCRYPTED,
    "authenticated-encrypted": AUTHENTICATED | ENCRYPTED,
}

# Service-specific global and dedicated ciphering tags (Green Book 9.5, xDLMS APDUs).
# fmt: off
GLOBAL_TAGS: Final = frozenset({
    0x21, 0x22, 0x25, 0x26, 0x28, 0x2C, 0x2D, 0x2E,  # glo initiate/read/write/confirmed-service-error (SN)
    0xC8, 0xC9, 0xCA, 0xCB, 0xCC, 0xCD, 0xCE, 0xCF,  # glo get/set/event-notification/action request+response
})
DEDICATED_TAGS: Final = frozenset({
    0x41, 0x45, 0x46, 0x48, 0x4C, 0x4D, 0x4E, 0x56, 0x58,
    0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7,
})
# fmt: on
CIPHERED_TAGS: Final = GLOBAL_TAGS | DEDICATED_TAGS | {GENERAL_GLO_CIPHERING, GENERAL_DED_CIPHERING}
_KEY_LENGTHS: Final = {0: 16, 1: 16, 2: 32}


@dataclass(frozen=True, slots=True)
class CipheredApdu:
    """The security header of a protected APDU and its protected payload (not yet checked)."""

    tag: int
    system_title: bytes | None
    security_control: int
    invocation_counter: int
    payload: bytes
    end: int

    @property
    def suite(self) -> int:
        return self.security_control & 0x0F

    @property
    def dedicated(self) -> bool:
        return self.tag in DEDICATED_TAGS or self.tag == GENERAL_DED_CIPHERING


def read_length(data: bytes, pos: int, what: str) -> tuple[int, int]:
    """A-XDR length at ``pos``: ``(length, position after it)``; FramingError past the end."""
    if pos >= len(data):
        raise FramingError(f"{what}: length missing", offset=pos, frame=data)
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    size = first & 0x7F
    if size == 0 or size > 4 or pos + 1 + size > len(data):
        raise FramingError(f"{what}: bad length encoding", offset=pos, frame=data)
    return int.from_bytes(data[pos + 1 : pos + 1 + size], "big"), pos + 1 + size


def parse_ciphered_apdu(data: bytes, pos: int = 0) -> CipheredApdu:
    """Parse the security header at ``pos``; the payload ends where the APDU's length says."""
    if pos >= len(data) or data[pos] not in CIPHERED_TAGS:
        raise FramingError("not a ciphered APDU", offset=pos, frame=data)
    tag = data[pos]
    at = pos + 1
    title: bytes | None = None
    if tag in (GENERAL_GLO_CIPHERING, GENERAL_DED_CIPHERING):
        size, at = read_length(data, at, "system title")
        if at + size > len(data):
            raise FramingError("system title runs past the end", offset=at, frame=data)
        title = bytes(data[at : at + size])
        at += size
    length, at = read_length(data, at, "ciphered content")
    if length < 5 or at + length > len(data):
        raise FramingError(
            f"ciphered content of {length} bytes does not fit the {len(data) - at} present", offset=at, frame=data
        )
    control = data[at]
    counter = int.from_bytes(data[at + 1 : at + 5], "big")
    return CipheredApdu(tag, title, control, counter, bytes(data[at + 5 : at + length]), at + length)


def _check_key(key: bytes | None, suite: int, name: str) -> bytes:
    if not key:
        raise KeyMissingError(f"the {name} is needed and none was given")
    wanted = _KEY_LENGTHS.get(suite)
    if wanted is None:
        raise DecryptionError(f"security suite {suite} is not supported")
    if len(key) != wanted:
        raise DecryptionError(f"the {name} must be {wanted} bytes for security suite {suite} (value not shown)")
    return bytes(key)


def _nonce(system_title: bytes, invocation_counter: int) -> bytes:
    if len(system_title) != SYSTEM_TITLE_LENGTH:
        raise DecryptionError(f"system title has {len(system_title)} bytes, expected {SYSTEM_TITLE_LENGTH}")
    if not 0 <= invocation_counter <= 0xFFFFFFFF:
        raise DecryptionError("invocation counter is outside 0..2^32-1")
    return bytes(system_title) + invocation_counter.to_bytes(4, "big")


def _usable(control: int) -> int:
    """The security bits of ``control``; refuses what suite-0 GCM cannot do here."""
    if control & COMPRESSED:
        raise DecryptionError("compressed ciphered APDUs are not supported")
    if control & BROADCAST:
        raise DecryptionError("broadcast-key ciphering is not supported")
    security = control & (AUTHENTICATED | ENCRYPTED)
    if not security:
        raise DecryptionError("security control byte asks for neither authentication nor encryption")
    return security


def seal(
    control: int,
    system_title: bytes,
    invocation_counter: int,
    block_cipher_key: bytes | None,
    authentication_key: bytes | None,
    plaintext: bytes,
) -> bytes:
    """The protected payload of ``plaintext`` under security control ``control`` (see the module doc)."""
    security = _usable(control)
    suite = control & 0x0F
    key = _check_key(block_cipher_key, suite, "block cipher key")
    iv = _nonce(system_title, invocation_counter)
    if security == ENCRYPTED:
        return _ctr(key, iv, plaintext)
    auth = _check_key(authentication_key, suite, "authentication key")
    if security == AUTHENTICATED:
        tag = AESGCM(key).encrypt(iv, b"", bytes([control]) + auth + plaintext)
        return bytes(plaintext) + tag[:TAG_LENGTH]
    sealed = AESGCM(key).encrypt(iv, bytes(plaintext), bytes([control]) + auth)
    return sealed[:-16] + sealed[-16 : -16 + TAG_LENGTH]


def unseal(
    control: int,
    system_title: bytes,
    invocation_counter: int,
    block_cipher_key: bytes | None,
    authentication_key: bytes | None,
    payload: bytes,
) -> bytes:
    """The plaintext of a protected payload; DecryptionError if it does not authenticate."""
    security = _usable(control)
    suite = control & 0x0F
    key = _check_key(block_cipher_key, suite, "block cipher key")
    iv = _nonce(system_title, invocation_counter)
    if security == ENCRYPTED:
        return _ctr(key, iv, payload)
    auth = _check_key(authentication_key, suite, "authentication key")
    if len(payload) < TAG_LENGTH:
        raise DecryptionError("ciphered content is shorter than its authentication tag")
    body, tag = bytes(payload[:-TAG_LENGTH]), bytes(payload[-TAG_LENGTH:])
    if security == AUTHENTICATED:
        expected = AESGCM(key).encrypt(iv, b"", bytes([control]) + auth + body)[:TAG_LENGTH]
        if not hmac.compare_digest(expected, tag):
            raise DecryptionError("authentication tag does not match (wrong key, or the frame was altered)")
        return body
    decryptor = Cipher(algorithms.AES(key), modes.GCM(iv, tag, min_tag_length=TAG_LENGTH)).decryptor()
    decryptor.authenticate_additional_data(bytes([control]) + auth)
    try:
        return decryptor.update(body) + decryptor.finalize()
    except InvalidTag:
        raise DecryptionError("authentication tag does not match (wrong key, or the frame was altered)") from None


def _ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    """GCM's encryption without its tag: AES-CTR from counter block ``IV | 00000002``."""
    cipher = Cipher(algorithms.AES(key), modes.CTR(iv + b"\x00\x00\x00\x02")).encryptor()
    return cipher.update(bytes(data)) + cipher.finalize()


def hls_gmac(
    system_title: bytes, invocation_counter: int, block_cipher_key: bytes, authentication_key: bytes, challenge: bytes
) -> bytes:
    """HLS-GMAC answer ``SC | IC | T`` to ``challenge`` by the holder of ``system_title`` (suite 0)."""
    sealed = seal(AUTHENTICATED, system_title, invocation_counter, block_cipher_key, authentication_key, challenge)
    return bytes([AUTHENTICATED]) + invocation_counter.to_bytes(4, "big") + sealed[-TAG_LENGTH:]


def check_hls_gmac(
    answer: bytes, system_title: bytes, block_cipher_key: bytes, authentication_key: bytes, challenge: bytes
) -> int:
    """Verify an HLS-GMAC answer to our ``challenge``; its invocation counter, or DecryptionError."""
    if len(answer) != 5 + TAG_LENGTH or answer[0] != AUTHENTICATED:
        raise DecryptionError("HLS-GMAC answer is not SC 0x10 | IC | 12-byte tag")
    counter = int.from_bytes(answer[1:5], "big")
    expected = hls_gmac(system_title, counter, block_cipher_key, authentication_key, challenge)
    if not hmac.compare_digest(expected, bytes(answer)):
        raise DecryptionError("HLS-GMAC answer does not match (wrong key or system title)")
    return counter


def protect_apdu(
    tag: int,
    control: int,
    system_title: bytes,
    invocation_counter: int,
    block_cipher_key: bytes,
    authentication_key: bytes | None,
    plaintext: bytes,
) -> bytes:
    """A whole protected APDU (service-specific ``tag``, or general-glo/ded with the system title)."""
    payload = seal(control, system_title, invocation_counter, block_cipher_key, authentication_key, plaintext)
    content = bytes([control]) + invocation_counter.to_bytes(4, "big") + payload
    head = bytes([tag])
    if tag in (GENERAL_GLO_CIPHERING, GENERAL_DED_CIPHERING):
        head += encode_length(len(system_title)) + system_title
    return head + encode_length(len(content)) + content


def encode_length(n: int) -> bytes:
    """A-XDR length: one byte below 0x80, else 0x8N and N big-endian bytes."""
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body
