"""The one boundary with gurux-dlms: its console output is silenced and its exceptions translated.

gurux-dlms 1.0.203 ``print()``s from inside the library, once with the expected GMAC tag
of a failed check. Every gurux call in gxcore runs inside :func:`quiet`, which points
``sys.stdout`` at a sink for the duration of the (synchronous, short) call. A lock and a
depth count make overlapping use from several threads restore the real stream exactly
once; while any thread is inside, other threads' ``print`` output is dropped too, which is
the price of not patching the library.

gurux raises ``Exception``, ``ValueError``, ``IndexError`` and its own classes with messages
that may quote payload bytes; :func:`translate` turns all of them into gxcore errors whose
messages are built from codes only.

Ciphering is handed over: gurux's AES-GCM is pure Python (~1000x slower than OpenSSL) and
prints the received and the correct tag when a check fails. Every gurux path that ciphers
(requests, replies, AARQ/AARE user information, HLS-GMAC, notifications) goes through the
two class methods ``GXDLMSChippering.encryptAesGcm`` / ``decryptAesGcm``; importing this
module replaces both, process-wide, with :func:`_encrypt_aes_gcm` / :func:`_decrypt_aes_gcm`,
which keep gurux's byte layout and parameter object but compute with
:mod:`gxcore.protocols.dlms.ciphering` (`cryptography`), print nothing and raise gxcore errors.
gurux's own cipher stream class is then never used for transport security.
"""

from __future__ import annotations

import io
import sys
import threading
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, Final, TextIO

from gurux_dlms import (
    GXByteBuffer,
    GXDLMSChippering,
    GXDLMSConfirmedServiceError,
    GXDLMSException,
    GXDLMSExceptionResponse,
)
from gurux_dlms.enums import Security

from gxcore.errors import AccessDeniedError, DecryptionError, GxError, ProtocolError
from gxcore.protocols.dlms import ciphering


class _Sink(io.TextIOBase):
    """A text stream that discards everything written to it."""

    def write(self, s: str) -> int:
        return len(s)

    def writable(self) -> bool:
        return True


_SINK: Final = _Sink()
_lock = threading.Lock()
_depth = 0
_saved: TextIO | None = None


class _Quiet(AbstractContextManager[None]):
    """The one stateless context manager :func:`quiet` hands out; the state is module-global.

    A plain class rather than ``@contextmanager``: every reply frame passes through here,
    and a generator-based manager costs several times more per use.
    """

    __slots__ = ()

    def __enter__(self) -> None:
        global _depth, _saved
        with _lock:
            if not _depth:
                _saved = sys.stdout
                sys.stdout = _SINK
            _depth += 1

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        global _depth, _saved
        with _lock:
            _depth -= 1
            if not _depth:
                sys.stdout = _saved  # restore exactly what was there
                _saved = None


_QUIET: Final = _Quiet()


def quiet() -> AbstractContextManager[None]:
    """Run the body with ``sys.stdout`` pointed at a sink; nestable and thread-safe."""
    return _QUIET


# Blue Book DataAccessResult, the result code of a GET/SET of one attribute.
# fmt: off
DATA_ACCESS_RESULTS: Final[dict[int, str]] = {
    0: "success", 1: "hardware-fault", 2: "temporary-failure", 3: "read-write-denied",
    4: "object-undefined", 9: "object-class-inconsistent", 11: "object-unavailable",
    12: "type-unmatched", 13: "scope-of-access-violated", 14: "data-block-unavailable",
    15: "long-get-aborted", 16: "no-long-get-in-progress", 17: "long-set-aborted",
    18: "no-long-set-in-progress", 19: "data-block-number-invalid", 250: "other-reason",
}
_DENIED_RESULTS: Final = frozenset({3, 13})

DECIPHERING_ERROR: Final = 5  # ExceptionResponse service-error deciphering-error
INVOCATION_COUNTER_ERROR: Final = 6  # ExceptionResponse service-error invocation-counter-error

# ACSE associate-source-diagnostic of a refused AARE.
SOURCE_DIAGNOSTICS: Final[dict[int, str]] = {
    0: "null", 1: "no-reason-given", 2: "application-context-name-not-supported",
    11: "authentication-mechanism-name-not-recognised", 12: "authentication-mechanism-name-required",
    13: "authentication-failure", 14: "authentication-required",
}
ASSOCIATION_RESULTS: Final[dict[int, str]] = {0: "accepted", 1: "rejected-permanent", 2: "rejected-transient"}
# fmt: on


def data_access_error(code: int, what: str) -> ProtocolError:
    """The error for a refused attribute access: AccessDeniedError for denials, ProtocolError otherwise."""
    name = DATA_ACCESS_RESULTS.get(code, f"result {code}")
    cls = AccessDeniedError if code in _DENIED_RESULTS else ProtocolError
    return cls(f"{what}: meter answered {name}")


def association_refused(result: int, diagnostic: int, what: str) -> AccessDeniedError:
    """The error for an AARE that did not accept the association."""
    res = ASSOCIATION_RESULTS.get(result, f"result {result}")
    diag = SOURCE_DIAGNOSTICS.get(diagnostic, f"diagnostic {diagnostic}")
    return AccessDeniedError(f"{what}: association {res} ({diag})")


def translate(exc: BaseException, *, what: str, frame: bytes | None = None) -> GxError:
    """Map any exception raised inside gurux to a gxcore error; messages carry codes, not payloads."""
    if isinstance(exc, GxError):
        return exc
    if isinstance(exc, GXDLMSException):
        result = getattr(exc, "result", None)
        if result is not None:
            return association_refused(int(result), int(getattr(exc, "diagnostic", 1) or 0), what)
        return data_access_error(int(getattr(exc, "errorCode", 250) or 250), what)
    if isinstance(exc, GXDLMSConfirmedServiceError):
        return ProtocolError(
            f"{what}: confirmed-service-error (service {_code(exc.confirmedServiceError)},"
            f" error {_code(exc.serviceError)}, value {_code(exc.serviceErrorValue)})",
            frame=frame,
        )
    if isinstance(exc, GXDLMSExceptionResponse):
        if int(exc.exceptionServiceError or 0) == DECIPHERING_ERROR:
            return DecryptionError(f"{what}: the meter could not decipher the request (wrong key?)", frame=frame)
        return ProtocolError(
            f"{what}: exception-response (state {_code(exc.exceptionStateError)},"
            f" service {_code(exc.exceptionServiceError)})",
            frame=frame,
        )
    return ProtocolError(f"{what}: reply could not be decoded ({type(exc).__name__})", frame=frame)


def _code(value: object) -> str:
    try:
        return str(int(value))  # type: ignore[call-overload]  # gurux enums and ints, anything else falls through
    except (TypeError, ValueError):
        return "?"


# -- ciphering handed over to `cryptography` --------------------------------------------------
_PACKET, _TAG, _DATA = -1, 1, 2  # gurux CountType: whole APDU, or tag and/or data only


def _bytes(value: object) -> bytes | None:
    return bytes(value) if isinstance(value, bytes | bytearray) and value else None


def _encrypt_aes_gcm(cls: object, p: object, plain: object) -> bytearray:
    """gurux ``GXDLMSChippering.encryptAesGcm``: same output layout, computed by :func:`ciphering.seal`."""
    if isinstance(plain, GXByteBuffer):
        plain = plain.array()
    text = bytes(plain) if isinstance(plain, bytes | bytearray) else b""
    param: Any = p
    param.countTag = None
    control = int(param.security) | int(param.securitySuite)
    if param.broadcast:
        control |= ciphering.BROADCAST
    if param.compression:
        control |= ciphering.COMPRESSED
    title = _bytes(param.systemTitle) or b""
    counter = int(param.invocationCounter)
    sealed = ciphering.seal(
        control, title, counter, _bytes(param.blockCipherKey), _bytes(param.authenticationKey), text
    )
    kind = int(param.type_)
    tagged = int(param.security) != Security.ENCRYPTION
    tag = sealed[-ciphering.TAG_LENGTH :] if tagged else b""
    body = sealed[: -ciphering.TAG_LENGTH] if tagged else sealed
    if kind == _PACKET:
        content = bytes([control]) + counter.to_bytes(4, "big") + body + tag
        param.countTag = bytearray(tag) if tag else None
        head = bytes([int(param.tag)])
        if int(param.tag) in (ciphering.GENERAL_GLO_CIPHERING, ciphering.GENERAL_DED_CIPHERING, 0x0F):
            head += b"\x00" if param.ignoreSystemTitle else ciphering.encode_length(len(title)) + title
        return bytearray(head + ciphering.encode_length(len(content)) + content)
    out = b""
    if kind & _DATA:
        out += body
    if kind & _TAG and tag:
        param.countTag = bytearray(tag)
        out += tag
    return bytearray(out)


def _decrypt_aes_gcm(cls: object, settings: object, p: object, data: object) -> bytearray:
    """gurux ``GXDLMSChippering.decryptAesGcm``: parse at ``data.position``, check, return the plaintext.

    ``p`` gets what gurux reads back from it (security, suite, invocation counter, sender
    title). A settings object may carry two hooks: ``gx_counter_check(title, counter)``,
    called once the tag checked (to refuse replays), and ``gx_decrypt_failed(error)``,
    told of every failure, because gurux swallows errors raised while it parses an AARE.
    """
    try:
        return _decrypt(settings, p, data)
    except GxError as exc:
        failed = getattr(settings, "gx_decrypt_failed", None)
        if callable(failed):
            failed(exc)
        raise


def _decrypt(settings: object, p: object, data: object) -> bytearray:
    if not isinstance(data, GXByteBuffer) or data.available() < 2:
        raise DecryptionError("ciphered APDU is too short")
    param: Any = p
    raw = bytes(data.remaining())
    if raw[0] == 0xDD:
        raise DecryptionError("general-ciphering (security suites 1 and 2 key agreement) is not supported")
    head = ciphering.parse_ciphered_apdu(raw)
    if isinstance(param.tag, bytes | bytearray):
        # gurux 1.0.203: the server's handleGloDedRequest builds AesGcmParameter without its
        # tag argument, so every field sits one place to the right; shift them back.
        param.systemTitle, param.blockCipherKey, param.authenticationKey = (
            param.tag,
            param.systemTitle,
            param.blockCipherKey,
        )
        param.tag = 0
    if head.system_title is not None:
        param.systemTitle = bytearray(head.system_title)
    title = _bytes(param.systemTitle)
    if title is None:
        raise DecryptionError("the sender's system title is not known, so the APDU cannot be deciphered")
    plain = ciphering.unseal(
        head.security_control,
        title,
        head.invocation_counter,
        _bytes(param.blockCipherKey),
        _bytes(param.authenticationKey),
        head.payload,
    )
    check = getattr(settings, "gx_counter_check", None)
    if callable(check):
        check(title, head.invocation_counter)
    param.security = Security(head.security_control & 0x30)
    param.securitySuite = head.suite
    param.invocationCounter = head.invocation_counter
    param.cipheredContent = bytearray(raw[: head.end])
    data.position += head.end
    return bytearray(plain)


if not getattr(GXDLMSChippering, "gx_handed_over", False):
    # gurux's own pure-Python versions, kept for tests that compare against them.
    GURUX_ENCRYPT_AES_GCM: Final[Any] = GXDLMSChippering.encryptAesGcm
    GURUX_DECRYPT_AES_GCM: Final[Any] = GXDLMSChippering.decryptAesGcm
    GXDLMSChippering.encryptAesGcm = classmethod(_encrypt_aes_gcm)
    GXDLMSChippering.decryptAesGcm = classmethod(_decrypt_aes_gcm)
    GXDLMSChippering.gx_handed_over = True
