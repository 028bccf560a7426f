"""DLMS/COSEM, pure: the gurux-backed client core, HDLC and wrapper framing, ciphering, A-XDR,
OBIS, COSEM value and profile decoding, pushes, and the invocation-counter protocol.

Sessions over a medium are in :mod:`gxcore.drivers.dlms`.
"""

from gxcore.protocols.dlms.events import DlmsEvent
from gxcore.protocols.dlms.invocation import InvocationCounterStore, MemoryInvocationCounters
from gxcore.protocols.dlms.parameters import (
    CosemValue,
    DlmsParameters,
    DlmsSecurity,
    ProfileEntries,
    ProfileRange,
    RegisterValue,
)
from gxcore.protocols.dlms.push import DlmsPush, PushColumn, decode_dlms_push

__all__ = [
    "CosemValue",
    "DlmsEvent",
    "DlmsParameters",
    "DlmsPush",
    "DlmsSecurity",
    "InvocationCounterStore",
    "MemoryInvocationCounters",
    "ProfileEntries",
    "ProfileRange",
    "PushColumn",
    "RegisterValue",
    "decode_dlms_push",
]
