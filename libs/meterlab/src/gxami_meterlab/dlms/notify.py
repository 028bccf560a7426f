"""The meter side of push: DataNotification messages built by gurux's GXDLMSNotify (sans-IO).

The body is self-describing, the way many push setups are configured::

    structure {
        {0.0.42.0.0.255, logical device name}          (when ``name`` is given)
        {0.0.1.0.0.255, date-time}                      (when ``clock`` is given)
        {logical name, value, {scaler, unit}}  ...      one per :class:`PushRegister`
    }

HAN ports (the customer interfaces of Norwegian, Swedish and Austrian meters) push plain
lists over HDLC (a UI frame, LLC ``E6 E7 00``, then the APDU), laid out as the vendors' public
HAN documents say (:func:`han_body`, the object lists of :mod:`gxcore.protocols.dlms.han`):
Kaifa, bare values in the list's fixed order::

    structure { "KFM_001", meter id, meter type, P+, P-, Q+, Q-, IL1..3 (mA), UL1..3 (0.1 V)[, clock, A+, A-, R+, R-] }

Kamstrup, a flat list of logical names each followed by its bare value::

    structure { 1.1.0.2.129.255, "Kamstrup_V0001", 1.1.0.0.5.255, meter id, ..., 1.1.1.7.0.255, P+, ... }

and Aidon, ``{logical name, value, {scaler, unit}}`` structures. Kaifa and Kamstrup carry no
scalers or units: the vendor's list (or a profile's ``push_objects``) gives them.

Ciphered pushes use general-glo-ciphering (``DB``), or general-ded-ciphering (``DC``)
with a dedicated key; the AES-GCM is ours (see :mod:`gxcore.protocols.dlms.gurux`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Final, Literal

from gurux_dlms import GXByteBuffer, GXCiphering
from gurux_dlms.ConnectionState import ConnectionState
from gurux_dlms.enums import Conformance, DataType, InterfaceType, Security
from gurux_dlms.GXDLMSNotify import GXDLMSNotify
from gurux_dlms.internal._GXCommon import _GXCommon

from gxcore.protocols.dlms import han
from gxcore.protocols.dlms.cosem_time import encode_datetime
from gxcore.protocols.dlms.gurux import quiet, translate
from gxcore.protocols.dlms.obis import UNIT_CODES, obis_to_bytes
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


HanStyle = Literal["aidon", "kaifa", "kamstrup"]
HAN_LIST_IDS: Final[dict[str, str]] = {"aidon": "AIDON_V0001", "kaifa": "KFM_001", "kamstrup": "Kamstrup_V0001"}
HAN_METER_TYPES: Final[dict[str, bytes]] = {
    "aidon": b"6841121BN243101040",
    "kaifa": b"MA304H3E",
    "kamstrup": b"6841121BN243101040",
}
KAMSTRUP_SERIAL: Final = han.KAMSTRUP_METER_ID  # where a Kamstrup list names the meter (its GS1 number)
KAMSTRUP_TYPE: Final = han.KAMSTRUP_METER_TYPE


def _han_value(registers: Sequence[PushRegister], obj: han.HanObject) -> int:
    """The simulated register behind ``obj`` (same C.D.E), rescaled to the vendor's scaler; 0 if we have none."""
    want = obj.obis.split(".")[2:5]
    for reg in registers:
        if reg.obis.split(".")[2:5] == want:
            return int(Decimal(reg.value).scaleb(reg.scaler - obj.scaler).to_integral_value())
    return 0


def han_body(
    registers: Sequence[PushRegister], *, serial: bytes, style: HanStyle, clock: datetime | None = None
) -> bytes:
    """A HAN-port list as the vendor's HAN document lays it out (see the module doc).

    Three phase; with ``clock`` the hourly list (Kaifa list 3, Kamstrup list 2, Aidon list 3:
    the clock and the energy registers), else the 10-second list without them.
    """
    listed = (
        han.KAIFA_LISTS[18 if clock else 13] if style == "kaifa" else han.KAMSTRUP if style == "kamstrup" else han.AIDON
    )
    objects = [o for o in listed if clock is not None or not (o.obis.endswith(".8.0.255") or han.is_clock(o.obis))]
    out = GXByteBuffer()
    out.setUInt8(DataType.STRUCTURE)
    _GXCommon.setObjectCount(len(objects) * (2 if style == "kamstrup" else 1), out)
    texts = {han.LIST_ID: HAN_LIST_IDS[style].encode(), han.METER_ID: serial, han.KAMSTRUP_METER_ID: serial}
    texts |= {han.METER_TYPE: HAN_METER_TYPES[style], han.KAMSTRUP_METER_TYPE: HAN_METER_TYPES[style]}
    for obj in objects:
        if style == "kamstrup":
            _GXCommon.setData(None, out, DataType.OCTET_STRING, obis_to_bytes(obj.obis))
        elif style == "aidon":
            out.setUInt8(DataType.STRUCTURE)
            out.setUInt8(2 if obj.obis in texts or han.is_clock(obj.obis) else 3)
            _GXCommon.setData(None, out, DataType.OCTET_STRING, obis_to_bytes(obj.obis))
        if obj.obis in texts:
            # Kaifa sends its strings as octet strings, Aidon and Kamstrup as visible strings.
            kind = DataType.OCTET_STRING if style == "kaifa" else DataType.STRING
            value: object = texts[obj.obis] if kind == DataType.OCTET_STRING else texts[obj.obis].decode()
            _GXCommon.setData(None, out, kind, value)
        elif clock is not None and han.is_clock(obj.obis):
            _GXCommon.setData(None, out, DataType.OCTET_STRING, encode_datetime(clock))
        else:
            _GXCommon.setData(None, out, DataType.UINT32, max(0, _han_value(registers, obj)))
            if style == "aidon":
                out.setUInt8(DataType.STRUCTURE)
                out.setUInt8(2)
                _GXCommon.setData(None, out, DataType.INT8, obj.scaler)
                _GXCommon.setData(None, out, DataType.ENUM, UNIT_CODES.get(obj.unit, 255))
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
