"""The gurux-dlms server side, made to work: GXDLMSServer with the callbacks a meter needs.

gurux-dlms 1.0.203's server has bugs this module works around, each marked
``gurux 1.0.203:`` so it can go when gurux fixes it. Values and decisions come from a
:class:`MeterCallbacks` (the sans-IO :class:`~gxami_meterlab.dlms.server.CosemMeterCore`).
Association establishment (AARQ/AARE, the HLS pass) is in :mod:`gxami_meterlab.dlms.gurux_association`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Final, Protocol

from gurux_dlms import (
    GXDLMS,
    GXByteBuffer,
    GXDLMSLNParameters,
    GXDLMSLongTransaction,
    GXDLMSServer,
    GXDLMSSettings,
    GXServerReply,
    ValueEventArgs,
)
from gurux_dlms.ConfirmedServiceError import ConfirmedServiceError
from gurux_dlms.ConnectionState import ConnectionState
from gurux_dlms.enums import (
    AccessMode,
    Command,
    ErrorCode,
    InterfaceType,
    MethodAccessMode,
    ObjectType,
    Service,
)
from gurux_dlms.objects import GXDLMSDisconnectControl
from gurux_dlms.ServiceError import ServiceError

from gxami_meterlab.dlms.gurux_association import MeterAssociation, answer_aarq

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

    def callable_method(self, target: object, index: int) -> bool:
        """May ``index`` of ``target`` be called (besides disconnect control and HLS)?"""
        ...

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
        if self.core.callable_method(target, index) and self.core.allowed(target):
            return int(MethodAccessMode.ACCESS)
        return int(MethodAccessMode.NO_ACCESS)

    def handleAarqRequest(self, data: object, connectionInfo: object) -> None:
        """gurux 1.0.203: its own AARQ handler writes a broken AARE; see :func:`answer_aarq`."""
        answer_aarq(self, data)

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
        if not (isinstance(target, GXDLMSDisconnectControl) and request[10] in (1, 2)) and not (
            self.core.callable_method(target, request[10])
        ):
            return int(ErrorCode.READ_WRITE_DENIED)
        return None

    def onPostWrite(self, args: object) -> None:
        pass

    def onPreAction(self, args: Iterable[object]) -> None:
        for arg in args:
            self.core.act(arg)

    def onPostAction(self, args: object) -> None:
        pass
