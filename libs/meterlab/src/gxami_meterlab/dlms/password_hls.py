"""The meter's side of HLS with the password as secret (IEC 62056-5-3 mechanisms 2, 3, 4 and 6).

Written from the standard and gurux-dlms's client, independently of gurux's own code, so a
simulator test checks the client's answers rather than gurux against itself:

* ``high`` (manufacturer specific; as gurux and most meters do it): AES-128-ECB of the challenge,
  zero-padded to whole blocks, under the password zero-padded to 16 bytes;
* ``high-md5`` / ``high-sha1``: MD5 / SHA-1 of challenge || password;
* ``high-sha256``: SHA-256 of password || own system title || peer's system title || challenge
  sent to the peer || challenge received from it (the Green Book's HLS-SHA256).

``f(StoC)`` is what the client sends back; the meter answers with ``f(CtoS)``.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from gxcore.errors import ConfigurationError
from gxcore.protocols.dlms.parameters import MAX_HIGH_PASSWORD, PASSWORD_HLS
from gxcore.secrets import Secret

BLOCK = 16


def _aes_ecb(password: bytes, challenge: bytes) -> bytes:
    key = password.ljust(BLOCK, b"\x00")
    padded = challenge.ljust(-(-len(challenge) // BLOCK) * BLOCK, b"\x00")
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305 - mechanism 2 is AES-ECB by definition
    return encryptor.update(padded) + encryptor.finalize()


@dataclass(frozen=True, slots=True)
class PasswordHls:
    """One meter's password HLS: its mechanism, secret and (for SHA-256) its system title."""

    mechanism: str
    password: Secret = field(repr=False)
    system_title: bytes

    def __post_init__(self) -> None:
        if self.mechanism not in PASSWORD_HLS:
            raise ConfigurationError(f"password HLS mechanism must be one of {sorted(PASSWORD_HLS)}")
        secret = self.password.reveal()
        if not secret:
            raise ConfigurationError(f"a meter with {self.mechanism} authentication needs a password")
        if self.mechanism == "high" and len(secret) > MAX_HIGH_PASSWORD:
            raise ConfigurationError(f"high authentication takes a password of at most {MAX_HIGH_PASSWORD} bytes")

    def _f(self, challenge: bytes, sent: bytes, received: bytes, first: bytes, second: bytes) -> bytes:
        secret = self.password.reveal()
        if self.mechanism == "high":
            return _aes_ecb(secret, challenge)
        if self.mechanism == "high-md5":
            return hashlib.md5(challenge + secret).digest()  # noqa: S324 - the mechanism is MD5 by definition
        if self.mechanism == "high-sha1":
            return hashlib.sha1(challenge + secret).digest()  # noqa: S324 - the mechanism is SHA-1 by definition
        return hashlib.sha256(secret + first + second + sent + received).digest()

    def client_answer(self, stoc: bytes, ctos: bytes, client_title: bytes) -> bytes:
        """f(StoC): what a client holding the password sends back."""
        return self._f(stoc, stoc, ctos, client_title, self.system_title)

    def meter_answer(self, ctos: bytes, stoc: bytes, client_title: bytes) -> bytes:
        """f(CtoS): what the meter sends back once the client's answer checked."""
        return self._f(ctos, ctos, stoc, self.system_title, client_title)

    def answer(self, received: bytes, stoc: bytes, ctos: bytes, client_title: bytes | None) -> bytes | None:
        """The meter's f(CtoS) if ``received`` is the right f(StoC) (constant-time), else None."""
        if self.mechanism == "high-sha256" and (client_title is None or len(client_title) != len(self.system_title)):
            return None  # HLS-SHA256 binds both titles; a client that sent none cannot pass
        title = client_title or b""
        if not hmac.compare_digest(received, self.client_answer(stoc, ctos, title)):
            return None
        return self.meter_answer(ctos, stoc, title)
