"""Association establishment on the meter side: the AARQ answered with an AARE, and the HLS pass.

:func:`answer_aarq` replaces gurux-dlms 1.0.203's AARQ handler for the
:class:`~gxami_meterlab.dlms.gurux_server.GuruxMeter` (the decisions come from the meter core through
its :class:`~gxami_meterlab.dlms.gurux_server.MeterCallbacks`); :func:`encode_aare` writes the AARE
itself; :class:`MeterAssociation` answers reply_to_HLS_authentication. Workarounds are
marked ``gurux 1.0.203:``.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from gurux_dlms import GXDLMSConfirmedServiceError, GXDLMSException
from gurux_dlms._GXAPDU import _GXAPDU
from gurux_dlms.ConfirmedServiceError import ConfirmedServiceError
from gurux_dlms.ConnectionState import ConnectionState
from gurux_dlms.enums import (
    AssociationResult,
    Authentication,
    Conformance,
    ErrorCode,
    InterfaceType,
    ObjectType,
    SourceDiagnostic,
)
from gurux_dlms.internal._GXCommon import _GXCommon
from gurux_dlms.objects import GXDLMSAssociationLogicalName
from gurux_dlms.objects.enums import AssociationStatus
from gurux_dlms.ServiceError import ServiceError

from gxcore.errors import GxError
from gxcore.protocols.dlms.ciphering import encode_length

if TYPE_CHECKING:
    from gxami_meterlab.dlms.gurux_server import GuruxMeter, MeterCallbacks


class MeterAssociation(GXDLMSAssociationLogicalName):  # type: ignore[misc]  # gurux ships no type hints
    """gurux 1.0.203: reply_to_HLS_authentication calls ``int()`` on the octet-string parameter;
    method 1 is answered by the meter core instead (the GMAC math is in gxcore.protocols.dlms.ciphering)."""

    core: MeterCallbacks | None = None

    def getAssociationStatus(self) -> int:
        """gurux 1.0.203: the method handler asks for this getter, which the class lacks."""
        return int(self.associationStatus)

    def invoke(self, settings: object, e: object) -> object:
        if getattr(e, "index", 0) != 1 or self.core is None:
            return super().invoke(settings, e)
        answer = getattr(e, "parameters", None)
        challenge = getattr(settings, "stoCChallenge", None)
        reply = None
        if isinstance(answer, bytes | bytearray) and isinstance(challenge, bytes | bytearray):
            reply = self.core.answer_hls(bytes(answer), bytes(challenge))
        if reply is None:
            self.associationStatus = AssociationStatus.NON_ASSOCIATED
            e.error = ErrorCode.READ_WRITE_DENIED  # type: ignore[attr-defined]  # gurux ValueEventArgs
            return None
        self.associationStatus = AssociationStatus.ASSOCIATED
        self.core.association_opened()
        e.byteArray = False  # type: ignore[attr-defined]
        return bytearray(reply)


def answer_aarq(server: GuruxMeter, data: object) -> None:
    """gurux's AARQ handler for LN referencing, with the AARE encoded by :func:`encode_aare`.

    gurux 1.0.203: its generateAARE writes a broken responding-AP-title (length short by
    two, a ``setUInt8()`` without its value) whenever ciphering or HLS-GMAC is on, and
    draws the StoC challenge from ``random``. An AARQ whose ciphered user-information
    does not decipher (or replays a counter) is refused with authentication-failure.
    """
    settings = server.settings
    settings.setCtoSChallenge(None)
    settings.setStoCChallenge(None)
    if settings.interfaceType == InterfaceType.WRAPPER:
        server.reset(True)
    server.core.restore_counter()  # gurux 1.0.203: reset() sets the meter's invocation counter to 0
    if settings.cipher is not None:
        settings.cipher.setDedicatedKey(None)
    result, error = AssociationResult.ACCEPTED, None
    try:
        diagnostic = _GXAPDU.parsePDU(settings, settings.cipher, data, None)
        if settings.negotiatedConformance == Conformance.NONE or settings.dlmsVersion != 6:
            result, diagnostic = AssociationResult.PERMANENT_REJECTED, SourceDiagnostic.NO_REASON_GIVEN
            error = bytes([0x0E, ConfirmedServiceError.INITIATE_ERROR, ServiceError.INITIATE, 1])
        elif diagnostic != SourceDiagnostic.NONE:
            result, diagnostic = AssociationResult.PERMANENT_REJECTED, SourceDiagnostic.NOT_SUPPORTED
    except GXDLMSConfirmedServiceError as exc:
        result, diagnostic = AssociationResult.PERMANENT_REJECTED, SourceDiagnostic.NO_REASON_GIVEN
        error = bytes([0x0E, int(exc.confirmedServiceError), int(exc.serviceError), int(exc.serviceErrorValue)])
    except GXDLMSException as exc:
        result, diagnostic = exc.result, exc.diagnostic
    except GxError:
        result, diagnostic = AssociationResult.PERMANENT_REJECTED, SourceDiagnostic.AUTHENTICATION_FAILURE
    ciphered = settings.cipher is not None and settings.cipher.isCiphered()
    if result == AssociationResult.ACCEPTED:
        password = settings.password if isinstance(settings.password, bytes | bytearray) else b""
        diagnostic = server.core.association_decision(int(settings.authentication), bytes(password), ciphered)
        if diagnostic != SourceDiagnostic.NONE:
            result = AssociationResult.PERMANENT_REJECTED
    association = server.items.findByLN(ObjectType.ASSOCIATION_LOGICAL_NAME, "0.0.40.0.0.255")
    hls = result == AssociationResult.ACCEPTED and settings.authentication > Authentication.LOW
    if result == AssociationResult.ACCEPTED:
        server.core.freeze()
    if hls:
        diagnostic = SourceDiagnostic.AUTHENTICATION_REQUIRED
        settings.setStoCChallenge(bytearray(secrets.token_bytes(16)))
        if association is not None:
            association.associationStatus = AssociationStatus.ASSOCIATION_PENDING
    elif result == AssociationResult.ACCEPTED:
        settings.connected |= ConnectionState.DLMS
        if association is not None:
            association.associationStatus = AssociationStatus.ASSOCIATED
        server.core.association_opened()
    if settings.interfaceType in (InterfaceType.HDLC, InterfaceType.HDLC_WITH_MODE_E):
        server.replyData.set(_GXCommon.LLC_REPLY_BYTES)
    user = error
    if user is None and (result == AssociationResult.ACCEPTED or not ciphered):
        user = bytes(_GXAPDU.getUserInformation(settings, settings.cipher))
        if ciphered:
            # gurux 1.0.203: the ciphered InitiateResponse does not move the counter on.
            settings.cipher.invocationCounter += 1
    title = bytes(settings.cipher.systemTitle) if ciphered or hls else None
    challenge = bytes(settings.stoCChallenge) if hls else None
    aare = encode_aare(
        int(result),
        int(diagnostic),
        ciphered,
        title,
        int(settings.authentication) if hls else None,
        challenge,
        user,
    )
    server.replyData.set(aare)


def _ber(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + encode_length(len(body)) + body


def encode_aare(
    result: int,
    diagnostic: int,
    ciphered: bool,
    system_title: bytes | None,
    mechanism: int | None,
    challenge: bytes | None,
    user_information: bytes | None,
) -> bytes:
    """An AARE for LN referencing (IEC 62056-5-3 8.2, BER)::

    61 L  A1 09 06 07 60 85 74 05 08 01 {01 LN | 03 LN with ciphering}
          A2 03 02 01 <result>
          A3 05 A1 03 02 01 <acse-service-user diagnostic>
          [A4 0A 04 08 <responding-AP-title>]
          [88 02 07 80  89 07 60 85 74 05 08 02 <mechanism>  AA L 80 L <StoC>]
          [BE L 04 L <xDLMS InitiateResponse, ciphered or not, or a confirmed-service-error>]
    """
    body = _ber(0xA1, _ber(0x06, bytes([0x60, 0x85, 0x74, 0x05, 0x08, 0x01, 0x03 if ciphered else 0x01])))
    body += _ber(0xA2, bytes([0x02, 0x01, result]))
    body += _ber(0xA3, _ber(0xA1, bytes([0x02, 0x01, diagnostic])))
    if system_title is not None:
        body += _ber(0xA4, _ber(0x04, system_title))
    if mechanism is not None and challenge is not None:
        body += bytes([0x88, 0x02, 0x07, 0x80])
        body += _ber(0x89, bytes([0x60, 0x85, 0x74, 0x05, 0x08, 0x02, mechanism]))
        body += _ber(0xAA, _ber(0x80, challenge))
    if user_information is not None:
        body += _ber(0xBE, _ber(0x04, user_information))
    return _ber(0x61, body)
