"""The meter side of push: DataNotification messages built by gurux's GXDLMSNotify (sans-IO).

The body is self-describing, the way many push setups are configured::

    structure {
        {0.0.42.0.0.255, logical device name}          (when ``name`` is given)
        {0.0.1.0.0.255, date-time}                      (when ``clock`` is given)
        {logical name, value, {scaler, unit}}  ...      one per :class:`PushRegister`
    }

HAN ports (the customer interfaces of Norwegian, Swedish and Austrian meters) push plain
lists over HDLC (a UI frame, LLC ``E6 E7 00``, then the APDU) in one of two shapes
(:func:`han_body`): Kaifa style, bare values in the order the meter's push object list fixes::

    structure { list id, serial, meter type, value, value, ... }

or Kamstrup style, a flat list of logical names each followed by its bare value::

    structure { list id, 1.1.0.0.5.255, serial, 1.1.96.1.1.255, meter type, OBIS, value, ... }

Neither carries scalers or units: the profile's ``push_objects`` give them.

Ciphered pushes use general-glo-ciphering (``DB``), or general-ded-ciphering (``DC``)
with a dedicated key; the AES-GCM is ours (see :mod:`gxcore.protocols.dlms.gurux`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from gurux_dlms import GXByteBuffer, GXCiphering
from gurux_dlms.ConnectionState import ConnectionState
from gurux_dlms.enums import Conformance, DataType, InterfaceType, Security
from gurux_dlms.GXDLMSNotify import GXDLMSNotify
from gurux_dlms.internal._GXCommon import _GXCommon

from gxcore.protocols.dlms.cosem_time import encode_datetime
from gxcore.protocols.dlms.gurux import quiet, translate
from gxcore.protocols.dlms.obis import obis_to_bytes
from gxcore.protocols.dlms.parameters import DlmsSecurity, Interface
from gxcore.secrets import Secret

PUSH_CLIENT: Final = 102  # a common wPort/SAP for the push destination
MAX_HDLC_INFO: Final = 1024


@dataclass(frozen=True, slots=True)
class PushRegister:
    """One register value in a push: OBIS, raw integer, its A-XDR type, scaler and COSEM unit code."""

    obis: str
    value: int
    data_type: int = DataType.UINT32
    scaler: int = 0
    unit: int = 255


def push_body(registers: Sequence[PushRegister], *, name: bytes | None = None, clock: datetime | None = None) -> bytes:
    """The A-XDR notification body (see the module doc)."""
    out = GXByteBuffer()
    out.setUInt8(DataType.STRUCTURE)
    _GXCommon.setObjectCount(len(registers) + (name is not None) + (clock is not None), out)
    if name is not None:
        _pair(out, "0.0.42.0.0.255", DataType.OCTET_STRING, name)
    if clock is not None:
        _pair(out, "0.0.1.0.0.255", DataType.OCTET_STRING, encode_datetime(clock))
    for reg in registers:
        out.setUInt8(DataType.STRUCTURE)
        out.setUInt8(3)
        _GXCommon.setData(None, out, DataType.OCTET_STRING, obis_to_bytes(reg.obis))
        _GXCommon.setData(None, out, reg.data_type, reg.value)
        out.setUInt8(DataType.STRUCTURE)
        out.setUInt8(2)
        _GXCommon.setData(None, out, DataType.INT8, reg.scaler)
        _GXCommon.setData(None, out, DataType.ENUM, reg.unit)
    return bytes(out.array())


HanStyle = Literal["kaifa", "kamstrup"]
HAN_LIST_IDS: Final[dict[str, str]] = {"kaifa": "KFM_001", "kamstrup": "Kamstrup_V0001"}
HAN_METER_TYPE: Final = b"GXSIM-HAN"
KAMSTRUP_SERIAL: Final = "1.1.0.0.5.255"  # where a Kamstrup list names the meter (its GS1 number)
KAMSTRUP_TYPE: Final = "1.1.96.1.1.255"


def han_body(registers: Sequence[PushRegister], *, serial: bytes, style: HanStyle) -> bytes:
    """A HAN-port list (see the module doc): no scalers, no units, a list id first."""
    out = GXByteBuffer()
    out.setUInt8(DataType.STRUCTURE)
    named = style == "kamstrup"
    _GXCommon.setObjectCount(3 + len(registers) + (2 + len(registers) if named else 0), out)
    _GXCommon.setData(None, out, DataType.STRING, HAN_LIST_IDS[style])
    for obis, kind, value in (
        (KAMSTRUP_SERIAL, DataType.OCTET_STRING, serial),
        (KAMSTRUP_TYPE, DataType.OCTET_STRING, HAN_METER_TYPE),
    ):
        if named:
            _GXCommon.setData(None, out, DataType.OCTET_STRING, obis_to_bytes(obis))
        _GXCommon.setData(None, out, kind, value)
    for reg in registers:
        if named:
            _GXCommon.setData(None, out, DataType.OCTET_STRING, obis_to_bytes(reg.obis))
        _GXCommon.setData(None, out, reg.data_type, reg.value)
    return bytes(out.array())


def _pair(out: GXByteBuffer, obis: str, kind: int, value: bytes) -> None:
    out.setUInt8(DataType.STRUCTURE)
    out.setUInt8(2)
    _GXCommon.setData(None, out, DataType.OCTET_STRING, obis_to_bytes(obis))
    _GXCommon.setData(None, out, kind, value)


def encode_push(
    body: bytes,
    *,
    at: datetime | None,
    security: DlmsSecurity | None = None,
    invocation_counter: int = 1,
    dedicated_key: Secret | None = None,
    interface: Interface = "wrapper",
    source: int = 1,
    destination: int = PUSH_CLIENT,
) -> bytes:
    """One DataNotification frame (wrapper or HDLC) carrying ``body``, ciphered when ``security`` is given."""
    kind = InterfaceType.HDLC if interface == "hdlc" else InterfaceType.WRAPPER
    try:
        with quiet():
            notify = GXDLMSNotify(True, destination, source, kind)
            notify.hdlcSettings.maxInfoTX = MAX_HDLC_INFO  # one push, one frame: no HDLC segments
            if security is not None:
                cipher = GXCiphering(bytearray(security.system_title))
                cipher.blockCipherKey = bytearray(security.block_cipher_key.reveal())
                cipher.authenticationKey = bytearray(security.authentication_key.reveal())
                cipher.security = Security(security.security_control)
                cipher.invocationCounter = invocation_counter
                notify.settings.cipher = cipher
                # general-glo/ded-ciphering (with the system title) rather than no ciphering at all
                notify.conformance = Conformance.GENERAL_PROTECTION
                if dedicated_key is not None:
                    cipher.dedicatedKey = bytearray(dedicated_key.reveal())
                    notify.settings.connected = ConnectionState.DLMS
            frames = notify.generateDataNotificationMessages(at, GXByteBuffer(body))
    except Exception as exc:  # noqa: BLE001 - gurux raises bare exceptions; a body that does not fit is one
        raise translate(exc, what="push encoding") from None
    if len(frames) != 1:
        raise ValueError("push body does not fit one frame")
    return bytes(frames[0])
