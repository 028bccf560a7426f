"""DLMS/COSEM sessions over gxcore.media (TCP or UDP wrapper, HDLC over serial or TCP).

The collector reads, commands and serves pushes through :class:`gxcore.drivers.dlms.driver.DlmsDriver`
(the driver API: ``read``, also over a connection the meter opened; ``execute``; ``serve``);
:func:`run_dlms_command` runs one control command by URL (disconnect, reconnect, arm, clock);
:class:`DlmsSession` gives one association for other services. Security: HLS-GMAC and
ciphering with suite 0 (:class:`DlmsSecurity`), invocation counters in an
:class:`InvocationCounterStore`. Push: :func:`decode_dlms_push`. Discovery:
:func:`discover_profile`. Event logs: :func:`read_event_log`.
"""

from gxcore.drivers.dlms.control import DlmsCommand, DlmsCommandResult, SupplyState, run_dlms_command
from gxcore.drivers.dlms.counter_file import JsonInvocationCounters
from gxcore.drivers.dlms.discovery import CosemObjectInfo, Discovery, discover_profile, read_object_list
from gxcore.drivers.dlms.event_log import read_event_log
from gxcore.drivers.dlms.reader import DlmsSession
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
