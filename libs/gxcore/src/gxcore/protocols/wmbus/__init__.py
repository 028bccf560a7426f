"""Wireless M-Bus (EN 13757-4 / OMS): link layer, ELL/AFL/TPL, mode 5 and 7 decryption."""

from gxcore.protocols.mbus.telegram import MBusTelegram
from gxcore.protocols.wmbus.frame import LinkHeader, add_crcs, crc16, parse_link_header, strip_crcs
from gxcore.protocols.wmbus.telegram import decode_wmbus_telegram

__all__ = [
    "LinkHeader",
    "MBusTelegram",
    "add_crcs",
    "crc16",
    "decode_wmbus_telegram",
    "parse_link_header",
    "strip_crcs",
]
