"""Ciphered DLMS APDUs decrypted per second: gxcore and gurux-dlms against `cryptography`'s AES-GCM.

The APDUs are glo-get-response (0xCC) replies under security suite 0, authenticated and
encrypted (SC 0x30): nonce = the meter's system title | invocation counter, AAD = SC | AK,
a 12-byte tag. They are built here with `cryptography` from fixed plaintexts of two
sizes, a GET-Response-Normal of one register and a 1 KiB GET-Response-With-Datablock
(a load-profile block at max PDU 1024).

The limit is `cryptography`'s AES-GCM decrypting the same bytes with nothing around it:
the header read at fixed offsets, one GCM decryptor (AESGCM itself refuses 12-byte tags,
so the ``Cipher(AES, GCM(iv, tag, min_tag_length=12))`` form that DLMS needs). Against it:

* gxcore: :func:`gxcore_unseal`, the one place that knows gxcore's decrypt path;
* gxcore inside gurux: ``GXCiphering.decrypt`` (with a fresh AesGcmParameter per APDU, as
  gurux's client does for every ciphered reply) once gxcore.protocols.dlms.gurux has handed gurux's
  AES-GCM over to gxcore: what a DLMS session pays per ciphered reply;
* gurux-dlms alone: the same call with gurux's own pure-Python AES-GCM, timed in a fresh
  interpreter (bench.gurux_pure) because importing gxcore.protocols.dlms replaces it process-wide;
  the gap is around a thousandfold.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from gurux_dlms import GXByteBuffer, GXDLMSChippering
from gurux_dlms.AesGcmParameter import AesGcmParameter
from gurux_dlms.GXCiphering import GXCiphering
from gurux_dlms.GXDLMSSettings import GXDLMSSettings

from bench.figures import Figure, RunContext
from bench.timing import Contender, over, race

SYSTEM_TITLE = b"GXS\x00\x00\x01\xe2\x40"
BLOCK_CIPHER_KEY = bytes(range(16))
AUTHENTICATION_KEY = bytes(range(0xD0, 0xE0))
SECURITY_CONTROL = 0x30  # authenticated and encrypted, suite 0
GLO_GET_RESPONSE = 0xCC
TAG_LENGTH = 12
APDUS = 50

Decrypt = Callable[[bytes], bytes]


def _plaintext(kind: str, n: int) -> bytes:
    """A GET-Response APDU: one register value, or a 1 KiB data block of a profile buffer."""
    if kind == "register":
        return bytes([0xC4, 0x01, 0xC1, 0x00, 0x06]) + (285_706_866 + 37 * n).to_bytes(4, "big")
    body = b"".join(hashlib.sha256(f"row:{n}:{i}".encode()).digest() for i in range(32))[:1000]
    head = bytes([0xC4, 0x02, 0xC1, 0x00, 0x00]) + n.to_bytes(4, "big") + b"\x00\x82" + len(body).to_bytes(2, "big")
    return head + body


def _length(n: int) -> bytes:
    return bytes([n]) if n < 0x80 else b"\x82" + n.to_bytes(2, "big")


def seal(plaintext: bytes, invocation_counter: int) -> bytes:
    """glo-get-response | len | SC | IC | ciphertext | T(12), built with `cryptography` alone."""
    counter = invocation_counter.to_bytes(4, "big")
    encryptor = Cipher(algorithms.AES(BLOCK_CIPHER_KEY), modes.GCM(SYSTEM_TITLE + counter)).encryptor()
    encryptor.authenticate_additional_data(bytes([SECURITY_CONTROL]) + AUTHENTICATION_KEY)
    content = (
        bytes([SECURITY_CONTROL])
        + counter
        + encryptor.update(plaintext)
        + encryptor.finalize()
        + encryptor.tag[:TAG_LENGTH]
    )
    return bytes([GLO_GET_RESPONSE]) + _length(len(content)) + content


def cryptography_decrypt(apdu: bytes) -> bytes:
    """The floor: header at fixed offsets, then one AES-GCM decryption with a 12-byte tag."""
    pos = 2 if apdu[1] < 0x80 else 4
    iv = SYSTEM_TITLE + apdu[pos + 1 : pos + 5]
    decryptor = Cipher(
        algorithms.AES(BLOCK_CIPHER_KEY), modes.GCM(iv, apdu[-TAG_LENGTH:], min_tag_length=TAG_LENGTH)
    ).decryptor()
    decryptor.authenticate_additional_data(apdu[pos : pos + 1] + AUTHENTICATION_KEY)
    return decryptor.update(apdu[pos + 5 : -TAG_LENGTH]) + decryptor.finalize()


def gurux_decryptor() -> Decrypt:
    """gurux-dlms's GXCiphering.decrypt, set up as its client sets it up for a ciphered reply."""
    settings = GXDLMSSettings(False, None)
    settings.cipher = GXCiphering(bytearray(b"CLIENT01"))

    def decrypt(apdu: bytes) -> bytes:
        p = AesGcmParameter(0, bytearray(SYSTEM_TITLE), bytearray(BLOCK_CIPHER_KEY), bytearray(AUTHENTICATION_KEY))
        return bytes(GXCiphering.decrypt(settings, p, GXByteBuffer(apdu)))

    return decrypt


def gxcore_unseal() -> Decrypt | None:
    """gxcore's decrypt path for a ciphered APDU from a meter, or None while gxcore has none.

    The one function to change when gxcore's DLMS ciphering API moves: it returns
    ``apdu -> plaintext`` for a glo-ciphered reply whose sender is ``SYSTEM_TITLE``.
    """
    try:
        from gxcore.protocols.dlms.ciphering import parse_ciphered_apdu, unseal
    except ImportError:
        return None

    def decrypt(apdu: bytes) -> bytes:
        c = parse_ciphered_apdu(apdu)
        return unseal(
            c.security_control,
            c.system_title or SYSTEM_TITLE,
            c.invocation_counter,
            BLOCK_CIPHER_KEY,
            AUTHENTICATION_KEY,
            c.payload,
        )

    return decrypt


@dataclass(frozen=True, slots=True)
class ApduSet:
    kind: str
    plaintexts: list[bytes]
    apdus: list[bytes]


def apdus(kind: str, count: int) -> ApduSet:
    plain = [_plaintext(kind, n) for n in range(count)]
    return ApduSet(kind, plain, [seal(p, 1000 + n) for n, p in enumerate(plain)])


def _check(name: str, decrypt: Decrypt, apdu_set: ApduSet) -> None:
    for pos, (apdu, plain) in enumerate(zip(apdu_set.apdus, apdu_set.plaintexts, strict=True)):
        if decrypt(apdu) != plain:
            raise RuntimeError(f"{name}: APDU {pos} ({apdu_set.kind}) does not decrypt to its plaintext")


def gurux_is_handed_over() -> bool:
    """True once gxcore has routed gurux's AES-GCM to its own `cryptography` path (gxcore.protocols.dlms.gurux)."""
    return not GXDLMSChippering.decryptAesGcm.__func__.__module__.startswith("gurux_dlms")


def pure_gurux_rate(kind: str, count: int) -> float:
    """gurux's own pure-Python decrypt rate, timed in a fresh interpreter that never imports gxcore."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.gurux_pure", kind, str(count)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    if out.returncode != 0:
        raise RuntimeError(f"bench.gurux_pure failed: {out.stderr.strip()[-2000:]}")
    rate = json.loads(out.stdout.strip().splitlines()[-1])["rate"]
    return float(rate)


def run(ctx: RunContext) -> Iterator[Figure]:
    ours = gxcore_unseal()
    if ours is None:
        ctx.note(
            "TODO: gxcore has no DLMS decrypt path (gxcore.protocols.dlms.ciphering);"
            " only gurux vs cryptography measured"
        )
    with contextlib.suppress(ImportError):
        import gxcore.protocols.dlms.gurux  # noqa: F401  # importing it hands gurux's AES-GCM over to gxcore
    in_gurux = gurux_decryptor() if ours is not None and gurux_is_handed_over() else None
    for kind, fast_passes, gurux_count in (
        ("register", ctx.size.pick(1, 200, 800), ctx.size.pick(2, 40, APDUS)),
        ("block", ctx.size.pick(1, 40, 150), ctx.size.pick(1, 10, 30)),
    ):
        fast_set = apdus(kind, APDUS)
        contenders = [Contender("cryptography", over(fast_set.apdus, fast_passes, cryptography_decrypt))]
        _check("cryptography", cryptography_decrypt, fast_set)
        for name, path in (("gxcore", ours), ("gxcore_in_gurux", in_gurux)):
            if path is not None:
                _check(name, path, fast_set)
                contenders.append(Contender(name, over(fast_set.apdus, fast_passes, path)))
        ctx.note(f"decrypting {kind} APDUs: {', '.join(c.name for c in contenders)}")
        fast = race(contenders, repeats=5 if fast_passes > 1 else 1)
        apdu = f"glo-get-response, SC 0x30 suite 0, {len(fast_set.plaintexts[0])}-byte plaintext"
        peer = "cryptography AES-GCM (12-byte tag) on the same APDUs"
        if "gxcore" in fast:
            yield Figure(
                f"dlms_decrypt_{kind}_gxcore",
                fast["gxcore"],
                "APDUs/s",
                fast["cryptography"],
                "higher",
                {"peer": peer, "path": "gxcore.protocols.dlms.ciphering parse_ciphered_apdu + unseal", "apdu": apdu},
            )
        if "gxcore_in_gurux" in fast:
            yield Figure(
                f"dlms_decrypt_{kind}_gxcore_in_gurux",
                fast["gxcore_in_gurux"],
                "APDUs/s",
                fast["cryptography"],
                "higher",
                {
                    "peer": peer,
                    "path": "GXCiphering.decrypt handed over to gxcore (what a DLMS session runs)",
                    "apdu": apdu,
                },
            )
        # gurux's own AES-GCM is a thousand times slower: the first few of the same APDUs, once over.
        ctx.note(f"decrypting {gurux_count} {kind} APDUs with gurux's pure-Python AES-GCM (a fresh interpreter)")
        yield Figure(
            f"dlms_decrypt_{kind}_gurux",
            pure_gurux_rate(kind, gurux_count),
            "APDUs/s",
            fast["cryptography"],
            "higher",
            {
                "peer": peer,
                "path": "gurux-dlms GXCiphering.decrypt, its own pure-Python AES-GCM",
                "apdus_decrypted": gurux_count,
                "apdu": apdu,
            },
        )
