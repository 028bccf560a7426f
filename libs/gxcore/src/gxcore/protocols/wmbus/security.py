"""wM-Bus / OMS payload ciphers: security mode 5 and 7 (AES-128-CBC) and ELL AES-128-CTR.

* Mode 5 (EN 13757-7, OMS security profile A): AES-128-CBC, key = the meter key,
  IV = M (2) | A (6: ID, version, type) | access number repeated 8 times.
* Mode 7 (OMS security profile B): AES-128-CBC with a zero IV and an ephemeral key
  derived with AES-CMAC: ``K = CMAC(Kmeter, D | C | ID | 07 x 7)``, where D is 0x00
  (encryption, meter to reader) or 0x01 (MAC), C the AFL message counter and ID the
  meter identification, both as sent. The AFL MAC is
  ``CMAC(Kmac, MCL | MCR | CI ... end)`` cut to the AFL's MAC length.
* ELL (CI 0x8D/0x8F) encryption: AES-128-CTR, counter block
  M | A | CC | SN (4) | FN = 0 (2) | BC (1), then a payload CRC.

A decrypted payload must start with the check bytes 2F 2F; if not, the key is wrong
(:class:`DecryptionError`). Keys never appear in messages or reprs.
"""

from __future__ import annotations

import hmac

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

from gxcore.errors import ConfigurationError, DecryptionError, KeyMissingError

CHECK_BYTES = b"\x2f\x2f"
BLOCK = 16


def require_key(key: bytes | None, scheme: str, meter_id: str) -> bytes:
    """The key as given, or KeyMissingError / ConfigurationError; never echoes key material."""
    if key is None:
        raise KeyMissingError(f"payload is encrypted ({scheme}) and no key was given", meter_id=meter_id)
    if len(key) != BLOCK:
        raise ConfigurationError(f"AES-128 key must be 16 bytes, got {len(key)}", meter_id=meter_id)
    return key


def cbc_decrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    """AES-128-CBC decryption of whole blocks (no padding)."""
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    return decryptor.update(data) + decryptor.finalize()


def cbc_encrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    """AES-128-CBC encryption of whole blocks (no padding)."""
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def ctr_crypt(key: bytes, counter_block: bytes, data: bytes) -> bytes:
    """AES-128-CTR (encryption and decryption are the same operation)."""
    cipher = Cipher(algorithms.AES(key), modes.CTR(counter_block)).encryptor()
    return cipher.update(data) + cipher.finalize()


def aes_cmac(key: bytes, data: bytes) -> bytes:
    """AES-CMAC (RFC 4493) of ``data``."""
    mac = CMAC(algorithms.AES(key))
    mac.update(data)
    return mac.finalize()


def mode5_iv(manufacturer_raw: bytes, address_raw: bytes, access_number: int) -> bytes:
    """IV of security mode 5: M (2) | A (6) | access number x 8."""
    return manufacturer_raw + address_raw + bytes([access_number]) * 8


def mode7_key(key: bytes, derivation: int, counter_raw: bytes, meter_id_raw: bytes) -> bytes:
    """OMS key derivation: CMAC(K, D | C (4) | ID (4) | 07 x 7)."""
    return aes_cmac(key, bytes([derivation]) + counter_raw + meter_id_raw + b"\x07" * 7)


def _check(plain: bytes, meter_id: str) -> bytes:
    if not plain.startswith(CHECK_BYTES):
        # The message must not help an attacker: say what failed, never which key.
        raise DecryptionError("decrypted payload lacks the 2F 2F check bytes: wrong key?", meter_id=meter_id)
    return plain


def decrypt_mode5(key: bytes | None, iv: bytes, payload: bytes, *, blocks: int, meter_id: str) -> bytes:
    """Decrypt the first ``blocks`` 16-byte blocks of ``payload`` (the rest is plain)."""
    key = require_key(key, "security mode 5", meter_id)
    size = BLOCK * blocks if blocks else len(payload) - len(payload) % BLOCK
    if size == 0 or size > len(payload):
        raise DecryptionError(
            f"encrypted part of {size} bytes does not fit the {len(payload)}-byte payload", meter_id=meter_id
        )
    return _check(cbc_decrypt(key, iv, payload[:size]), meter_id) + payload[size:]


def encrypt_mode5(key: bytes, iv: bytes, plain: bytes) -> bytes:
    """Pad ``plain`` (which must start with 2F 2F) with 2F fillers to whole blocks and encrypt."""
    padded = plain + b"\x2f" * (-len(plain) % BLOCK)
    return cbc_encrypt(key, iv, padded)


def decrypt_mode7(
    key: bytes | None,
    payload: bytes,
    *,
    blocks: int,
    counter_raw: bytes,
    meter_id_raw: bytes,
    meter_id: str,
) -> bytes:
    """Decrypt a mode 7 payload with the key derived from the AFL message counter."""
    key = require_key(key, "security mode 7", meter_id)
    size = BLOCK * blocks if blocks else len(payload) - len(payload) % BLOCK
    if size == 0 or size > len(payload):
        raise DecryptionError(
            f"encrypted part of {size} bytes does not fit the {len(payload)}-byte payload", meter_id=meter_id
        )
    k_enc = mode7_key(key, 0x00, counter_raw, meter_id_raw)
    return _check(cbc_decrypt(k_enc, bytes(BLOCK), payload[:size]), meter_id) + payload[size:]


def verify_afl_mac(
    key: bytes | None,
    mac: bytes,
    *,
    mac_input: bytes,
    counter_raw: bytes,
    meter_id_raw: bytes,
    meter_id: str,
) -> None:
    """Check the AFL MAC (mode 7, CMAC); raise DecryptionError on mismatch."""
    key = require_key(key, "security mode 7", meter_id)
    k_mac = mode7_key(key, 0x01, counter_raw, meter_id_raw)
    expected = aes_cmac(k_mac, mac_input)[: len(mac)]
    if not hmac.compare_digest(expected, mac):
        raise DecryptionError("AFL MAC does not match: corrupted telegram or wrong key", meter_id=meter_id)


def ell_counter_block(manufacturer_raw: bytes, address_raw: bytes, cc: int, session_raw: bytes) -> bytes:
    """Initial counter block of ELL AES-CTR: M | A | CC | SN | FN=0 (2) | BC=0."""
    return manufacturer_raw + address_raw + bytes([cc]) + session_raw + b"\x00\x00\x00"
