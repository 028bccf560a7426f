"""Wired M-Bus (EN 13757-2 link layer, EN 13757-3 application layer) and its master state machine."""

from gxcore.protocols.mbus.frame import (
    Ack,
    ControlFrame,
    Frame,
    LongFrame,
    SecondaryAddress,
    ShortFrame,
    decode_frame,
    encode_frame,
    parse_frame,
    req_ud2,
    select_secondary,
    snd_nke,
)
from gxcore.protocols.mbus.master import (
    Failed,
    MasterConfig,
    MasterOperation,
    MBusMaster,
    ReadComplete,
    SearchComplete,
)
from gxcore.protocols.mbus.records import MBusRecord, parse_records
from gxcore.protocols.mbus.telegram import MBusTelegram, decode_mbus_telegram, decode_user_data

__all__ = [
    "Ack",
    "ControlFrame",
    "Failed",
    "Frame",
    "LongFrame",
    "MBusMaster",
    "MBusRecord",
    "MBusTelegram",
    "MasterConfig",
    "MasterOperation",
    "ReadComplete",
    "SearchComplete",
    "SecondaryAddress",
    "ShortFrame",
    "decode_frame",
    "decode_mbus_telegram",
    "decode_user_data",
    "encode_frame",
    "parse_frame",
    "parse_records",
    "req_ud2",
    "select_secondary",
    "snd_nke",
]
