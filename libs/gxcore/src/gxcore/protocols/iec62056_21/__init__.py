"""IEC 62056-21 (former IEC 61107) local data exchange: modes A, B, C readout. Sans-IO core."""

from gxcore.protocols.iec62056_21.frames import (
    MODE_B_BAUD,
    MODE_C_BAUD,
    Identification,
    bcc,
    encode_data_message,
    encode_option_select,
    encode_request,
    next_data_message,
    next_line,
    parse_identification,
)
from gxcore.protocols.iec62056_21.readout import (
    Iec62056Readout,
    Iec62056Record,
    decode_iec62056_21_readout,
    parse_data_lines,
)
from gxcore.protocols.iec62056_21.session import (
    IdentificationReceived,
    Iec62056Session,
    ReadoutReceived,
    SendBytes,
    SessionCore,
    SessionEvent,
    SessionFailed,
    SessionState,
    SessionTimings,
    SwitchBaudRate,
)

__all__ = [
    "MODE_B_BAUD",
    "MODE_C_BAUD",
    "Identification",
    "IdentificationReceived",
    "Iec62056Readout",
    "Iec62056Record",
    "Iec62056Session",
    "ReadoutReceived",
    "SendBytes",
    "SessionCore",
    "SessionEvent",
    "SessionFailed",
    "SessionState",
    "SessionTimings",
    "SwitchBaudRate",
    "bcc",
    "decode_iec62056_21_readout",
    "encode_data_message",
    "encode_option_select",
    "encode_request",
    "next_data_message",
    "next_line",
    "parse_data_lines",
    "parse_identification",
]
