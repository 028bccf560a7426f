"""The gurux-dlms server side, made to work: GXDLMSServer with the callbacks a meter needs.

gurux-dlms 1.0.203's server has bugs this module works around, each marked
``gurux 1.0.203:`` so it can go when gurux fixes it. Values and decisions come from a
:class:`MeterCallbacks` (the sans-IO :class:`~gxcore.dlms.server.CosemMeterCore`).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator
from typing import Final, Protocol

from gurux_dlms import (
    GXDLMS,
    GXByteBuffer,
    GXDLMSConfirmedServiceError,
    GXDLMSException,
    GXDLMSLNParameters,
    GXDLMSLongTransaction,
    GXDLMSServer,
    GXDLMSSettings,
    GXServerReply,
    ValueEventArgs,
)
from gurux_dlms._GXAPDU import _GXAPDU
from gurux_dlms.ConfirmedServiceError import ConfirmedServiceError
from gurux_dlms.ConnectionState import ConnectionState
from gurux_dlms.enums import (
    AccessMode,
    AssociationResult,
    Authentication,
    Command,
    Conformance,
    ErrorCode,
    InterfaceType,
    MethodAccessMode,
    ObjectType,
    Service,
    SourceDiagnostic,
)
from gurux_dlms.internal._GXCommon import _GXCommon
from gurux_dlms.objects import GXDLMSAssociationLogicalName, GXDLMSDisconnectControl
from gurux_dlms.objects.enums import AssociationStatus
from gurux_dlms.ServiceError import ServiceError

from gxcore.dlms.ciphering import encode_length
from gxcore.errors import GxError

HDLC_MAX_INFO: Final = 128  # the meter's HDLC information field limit, both directions
# HDLC parameter negotiation (IEC 62056-46 6.4.4.4.3.2): format 0x81, group 0x80, then
# max info TX (0x05), max info RX (0x06), window TX (0x07), window RX (0x08).
_HDLC_TX, _HDLC_RX, _WINDOW_TX, _WINDOW_RX = 0x05, 0x06, 0x07, 0x08


class MeterCallbacks(Protocol):
    """What the gurux server asks of the meter core."""

    @property
    def interface(self) -> str: ...

    @property
    def server_address(self) -> int: ...

    @property
    def max_pdu(self) -> int: ...

    def freeze(self) -> None: ...

    def attribute_access(self, arg: object) -> int: ...

    def allowed(self, target: object) -> bool:
        """May the associated client use this object at all (public client, HLS still pending)?"""
        ...

    def set_request(self, request: bytes) -> tuple[int, int]: ...

    def act(self, arg: object) -> None: ...

    def association_decision(self, authentication: int, password: bytes, ciphered: bool) -> int:
        """ACSE diagnostic for an AARQ that parsed: NONE accepts, anything else refuses."""
        ...

    def answer_hls(self, answer: bytes, challenge: bytes) -> bytes | None:
        """The meter's f(CtoS) if the client's f(StoC) ``answer`` to our ``challenge`` checks, else None."""
        ...

    def association_opened(self) -> None:
        """The meter may now hand out values (after the AARE, or after the HLS pass)."""
        ...

    def restore_counter(self) -> None:
        """Put the meter's own invocation counter back where it was (never reuse one)."""
        ...

    def association_closed(self) -> None:
        """The association was released or the link disconnected."""
        ...


class ServerReply(GXServerReply):  # type: ignore[misc]  # gurux ships no type hints
    """gurux 1.0.203: handleRequest() calls setters GXServerReply does not define."""

    def setReply(self, value: object) -> None:
        self.reply = value

    def setCount(self, value: int) -> None:
        self.count = value

    def getConnectionInfo(self) -> object:
        return self.connectionInfo


class _LongTransaction(GXDLMSLongTransaction):  # type: ignore[misc]  # gurux ships no type hints
    """gurux 1.0.203: the next-block handler calls setData(), which the class lacks."""

    def setData(self, value: object) -> None:
        self.data = value


class _ServerSettings(GXDLMSSettings):  # type: ignore[misc]  # gurux ships no type hints
    """gurux 1.0.203: requests store the invoke-id in ``invokeID`` but replies read ``invokeId``;
    alias the two so every reply echoes the request's invoke-id. Also adds a missing setter."""

    @property
    def invokeId(self) -> int:
        return int(self.invokeID)

    @invokeId.setter
    def invokeId(self, value: int) -> None:
        self.invokeID = value

    def setConnected(self, value: int) -> None:
        """gurux 1.0.203: the HLS method handler calls this setter, which GXDLMSSettings lacks."""
        self.connected = value


class _EventArgs(ValueEventArgs):  # type: ignore[misc]  # gurux ships no type hints
    """gurux 1.0.203: SET and ACTION handlers call ``list(e)`` on one ValueEventArgs; iterate as [e]."""

    def __iter__(self) -> Iterator[object]:
        return iter([self])


class MeterAssociation(GXDLMSAssociationLogicalName):  # type: ignore[misc]  # gurux ships no type hints
    """gurux 1.0.203: reply_to_HLS_authentication calls ``int()`` on the octet-string parameter;
    method 1 is answered by the meter core instead (the GMAC math is in gxcore.dlms.ciphering)."""

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


class GuruxMeter(GXDLMSServer):  # type: ignore[misc]  # gurux ships no type hints
    """The gurux server with the callbacks a simple meter needs; values come from the core."""

    def __init__(self, core: MeterCallbacks) -> None:
        super().__init__(True, InterfaceType.HDLC if core.interface == "hdlc" else InterfaceType.WRAPPER)
        self.core = core
        self.settings.__class__ = _ServerSettings
        self.transaction: object = None
        # gurux 1.0.203: the next-block handler reads the misspelt settings.gbtWndowSize.
        self.settings.gbtWndowSize = self.settings.gbtWindowSize
        # gurux 1.0.203: the maxReceivePDUSize property recurses; set the settings field.
        self.settings.maxServerPDUSize = core.max_pdu

    # gurux 1.0.203: GET-normal calls these, which GXDLMSServer does not define.
    def setTransaction(self, value: object) -> None:
        if isinstance(value, GXDLMSLongTransaction):
            value.__class__ = _LongTransaction
        self.transaction = value

    def getTransaction(self) -> object:
        return self.transaction

    def notifyRead(self) -> None:
        pass

    def onPostRead(self, args: object = None) -> None:
        pass

    def isTarget(self, serverAddress: int, clientAddress: int) -> bool:
        return bool(serverAddress == self.core.server_address)

    def onValidateAuthentication(self, authentication: int, password: object) -> int:
        secret = bytes(password) if isinstance(password, bytes | bytearray) else b""
        return self.core.association_decision(int(authentication), secret, False)

    def onConnected(self, connectionInfo: object) -> None:
        self.core.freeze()

    def notifyConnected(self, connectionInfo: object) -> None:
        """gurux 1.0.203: called after a passed HLS, but GXDLMSServer does not define it."""

    def onGetAttributeAccess(self, arg: object) -> int:
        arg.__class__ = _EventArgs
        if not self.core.allowed(getattr(arg, "target", None)):
            return int(AccessMode.NO_ACCESS)
        return self.core.attribute_access(arg)

    def onGetMethodAccess(self, arg: object) -> int:
        arg.__class__ = _EventArgs
        target, index = getattr(arg, "target", None), getattr(arg, "index", 0)
        if isinstance(target, MeterAssociation) and index == 1:
            return int(MethodAccessMode.ACCESS)
        if isinstance(target, GXDLMSDisconnectControl) and index in (1, 2) and self.core.allowed(target):
            return int(MethodAccessMode.ACCESS)
        return int(MethodAccessMode.NO_ACCESS)

    def handleAarqRequest(self, data: object, connectionInfo: object) -> None:
        """gurux's AARQ handler for LN referencing, with the AARE encoded by :func:`encode_aare`.

        gurux 1.0.203: its generateAARE writes a broken responding-AP-title (length short by
        two, a ``setUInt8()`` without its value) whenever ciphering or HLS-GMAC is on, and
        draws the StoC challenge from ``random``. An AARQ whose ciphered user-information
        does not decipher (or replays a counter) is refused with authentication-failure.
        """
        settings = self.settings
        settings.setCtoSChallenge(None)
        settings.setStoCChallenge(None)
        if settings.interfaceType == InterfaceType.WRAPPER:
            self.reset(True)
        self.core.restore_counter()  # gurux 1.0.203: reset() sets the meter's invocation counter to 0
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
            diagnostic = self.core.association_decision(int(settings.authentication), bytes(password), ciphered)
            if diagnostic != SourceDiagnostic.NONE:
                result = AssociationResult.PERMANENT_REJECTED
        association = self.items.findByLN(ObjectType.ASSOCIATION_LOGICAL_NAME, "0.0.40.0.0.255")
        hls = result == AssociationResult.ACCEPTED and settings.authentication > Authentication.LOW
        if result == AssociationResult.ACCEPTED:
            self.core.freeze()
        if hls:
            diagnostic = SourceDiagnostic.AUTHENTICATION_REQUIRED
            settings.setStoCChallenge(bytearray(secrets.token_bytes(16)))
            if association is not None:
                association.associationStatus = AssociationStatus.ASSOCIATION_PENDING
        elif result == AssociationResult.ACCEPTED:
            settings.connected |= ConnectionState.DLMS
            if association is not None:
                association.associationStatus = AssociationStatus.ASSOCIATED
            self.core.association_opened()
        if settings.interfaceType in (InterfaceType.HDLC, InterfaceType.HDLC_WITH_MODE_E):
            self.replyData.set(_GXCommon.LLC_REPLY_BYTES)
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
        self.replyData.set(aare)

    def handleSnrmRequest(self, data: object) -> None:
        """gurux 1.0.203: the stock version reads its limits off ``self.hdlc`` (None unless an HDLC
        setup object is given) and calls a missing ``update()``; agree on limits here instead."""
        agreed = self.settings.hdlc
        agreed.maxInfoTX = agreed.maxInfoRX = HDLC_MAX_INFO
        agreed.windowSizeTX = agreed.windowSizeRX = 1
        GXDLMS.parseSnrmUaResponse(data, agreed)
        self.reset(True)
        # Never more than this meter handles; a window of one frame both ways.
        agreed.maxInfoTX = min(agreed.maxInfoTX, HDLC_MAX_INFO)
        agreed.maxInfoRX = min(agreed.maxInfoRX, HDLC_MAX_INFO)
        agreed.windowSizeTX = agreed.windowSizeRX = 1
        self._append_hdlc_parameters()
        self.settings.connected = ConnectionState.HDLC

    def generateDisconnectRequest(self) -> None:
        """gurux 1.0.203: same ``self.hdlc`` mix-up as handleSnrmRequest; the UA to a DISC."""
        self._append_hdlc_parameters()

    def _append_hdlc_parameters(self) -> None:
        agreed = self.settings.hdlc
        group = bytes([_HDLC_TX, 1, agreed.maxInfoTX, _HDLC_RX, 1, agreed.maxInfoRX])
        group += bytes([_WINDOW_TX, 4]) + agreed.windowSizeTX.to_bytes(4, "big")
        group += bytes([_WINDOW_RX, 4]) + agreed.windowSizeRX.to_bytes(4, "big")
        self.replyData.set(bytes([0x81, 0x80, len(group)]) + group)

    def onFindObject(self, objectType: object, sn: int, ln: str) -> None:
        return None

    def onInvalidConnection(self, connectionInfo: object) -> None:
        pass

    def onDisconnected(self, connectionInfo: object) -> None:
        self.core.association_closed()

    def onPreRead(self, args: object) -> None:
        pass

    def onPreGet(self, args: object) -> None:
        pass

    def onPostGet(self, args: object) -> None:
        pass

    def onPreWrite(self, args: object) -> None:
        pass

    def handleCommand(self, cmd: int, data: object, sr: object) -> object:
        """Answer SET, and ACTION on an unknown object, here; everything else goes to gurux.

        gurux 1.0.203: its SET handler calls a missing ``isMultipleBlocks()``, and its ACTION
        handler hits an unbound variable for an unknown object and then appends a second PDU,
        and leaves the return-parameters flag out of a refusal.
        """
        refusal: int | None = None
        request = bytes(data.array()[data.position :]) if data else b""  # type: ignore[attr-defined]  # GXByteBuffer
        if cmd == Command.SET_REQUEST:
            response = Command.SET_RESPONSE
        elif cmd == Command.METHOD_REQUEST and (refusal := self._action_refusal(request)) is not None:
            response = Command.METHOD_RESPONSE
        else:
            return super().handleCommand(cmd, data, sr)
        if not self.settings.acceptConnection():
            refused = self.generateConfirmedServiceError(
                ConfirmedServiceError.INITIATE_ERROR, ServiceError.SERVICE, Service.UNSUPPORTED
            )
            self.replyData.set(bytearray(refused))
        else:
            if response == Command.SET_RESPONSE:
                invoke, status = self.core.set_request(request)
            else:
                invoke, status = request[1], refusal or int(ErrorCode.OTHER_REASON)
            self.settings.updateInvokeId(invoke)
            result = GXByteBuffer(b"\x00") if response == Command.METHOD_RESPONSE else None  # no return parameters
            reply = GXDLMSLNParameters(self.settings, invoke, response, 1, None, result, status)
            GXDLMS.getLNPdu(reply, self.replyData)
        if self.core.interface == "hdlc":
            return GXDLMS.getHdlcFrame(self.settings, 0, self.replyData)
        return GXDLMS.getWrapperFrame(self.settings, cmd, self.replyData)

    def _action_refusal(self, request: bytes) -> int | None:
        """Action-Result for an ACTION this meter refuses (unknown object or method), else None."""
        if len(request) < 11:
            return None  # let gurux report the malformed request
        try:
            kind = ObjectType(int.from_bytes(request[2:4], "big"))
        except ValueError:
            return int(ErrorCode.UNDEFINED_OBJECT)
        target = self.settings.objects.findByLN(kind, ".".join(map(str, request[4:10])))
        if target is None:
            return int(ErrorCode.UNDEFINED_OBJECT)
        if isinstance(target, MeterAssociation) and request[10] == 1:
            return None  # reply_to_HLS_authentication, allowed while the association is pending
        if not (isinstance(target, GXDLMSDisconnectControl) and request[10] in (1, 2)):
            return int(ErrorCode.READ_WRITE_DENIED)
        return None

    def onPostWrite(self, args: object) -> None:
        pass

    def onPreAction(self, args: Iterable[object]) -> None:
        for arg in args:
            self.core.act(arg)

    def onPostAction(self, args: object) -> None:
        pass


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
