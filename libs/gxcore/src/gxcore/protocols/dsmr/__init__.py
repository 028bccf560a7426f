"""DSMR P1 telegrams (NL 2.2-5.0, BE e-MUCS, LU Smarty): stream framing, CRC, decoding. Sans-IO."""

from gxcore.protocols.dsmr.framer import MAX_TELEGRAM_SIZE, crc16_arc, encode_telegram, next_telegram
from gxcore.protocols.dsmr.reader import P1Reader
from gxcore.protocols.dsmr.smarty import SmartyReader, decrypt_smarty_frame, encrypt_smarty_frame, next_smarty_frame
from gxcore.protocols.dsmr.telegram import DsmrHeader, DsmrRecord, DsmrTelegram, decode_dsmr_telegram
from gxcore.protocols.dsmr.timestamps import format_dsmr_timestamp, parse_dsmr_timestamp

__all__ = [
    "MAX_TELEGRAM_SIZE",
    "DsmrHeader",
    "DsmrRecord",
    "DsmrTelegram",
    "P1Reader",
    "SmartyReader",
    "crc16_arc",
    "decode_dsmr_telegram",
    "decrypt_smarty_frame",
    "encode_telegram",
    "encrypt_smarty_frame",
    "format_dsmr_timestamp",
    "next_smarty_frame",
    "next_telegram",
    "parse_dsmr_timestamp",
]
