"""DLMS/COSEM over gurux-dlms: a sans-IO client core, transports over gxcore.media (TCP or UDP
wrapper, HDLC over serial or TCP), a meter core.

The collector reads through :class:`gxcore.dlms.driver.DlmsDriver` (the driver API) and
controls with :func:`run_dlms_command` (disconnect, reconnect, clock sync);
:class:`DlmsSession` gives one association for other services. Security: HLS-GMAC and
ciphering with suite 0 (:class:`DlmsSecurity`), invocation counters in an
:class:`InvocationCounterStore`. Push: :func:`decode_dlms_push`. Discovery:
:func:`discover_profile`. Event logs: :func:`read_event_log`.
"""

from gxcore.dlms.control import DlmsCommand, DlmsCommandResult, SupplyState, run_dlms_command
from gxcore.dlms.discovery import CosemObjectInfo, Discovery, discover_profile, read_object_list
from gxcore.dlms.events import DlmsEvent, read_event_log
from gxcore.dlms.invocation import InvocationCounterStore, JsonInvocationCounters, MemoryInvocationCounters
from gxcore.dlms.parameters import (
    CosemValue,
    DlmsParameters,
    DlmsSecurity,
    ProfileEntries,
    ProfileRange,
    RegisterValue,
)
from gxcore.dlms.push import DlmsPush, PushColumn, decode_dlms_push
from gxcore.dlms.reader import DlmsSession

__all__ = [
    "CosemObjectInfo",
    "CosemValue",
    "Discovery",
    "DlmsCommand",
    "DlmsCommandResult",
    "DlmsEvent",
    "DlmsParameters",
    "DlmsPush",
    "DlmsSecurity",
    "DlmsSession",
    "InvocationCounterStore",
    "JsonInvocationCounters",
    "MemoryInvocationCounters",
    "ProfileEntries",
    "ProfileRange",
    "PushColumn",
    "RegisterValue",
    "SupplyState",
    "decode_dlms_push",
    "discover_profile",
    "read_event_log",
    "read_object_list",
    "run_dlms_command",
]
