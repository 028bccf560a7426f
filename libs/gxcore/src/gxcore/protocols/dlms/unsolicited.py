"""Unsolicited notifications that arrive inside a client exchange: told apart from replies, set aside.

A meter may push (data-notification, event-notification, information-report, plain or
protected) on the link a client is using: before a reply, between two blocks of one, or
right after it. gurux-dlms parses such a frame into the reply object it is handed and
leaves that object unusable for the real reply, so the client core asks
:meth:`UnsolicitedFrames.set_aside` about a frame before gurux sees it:

* wrapper: the APDU's tag says it (a notification tag is never a reply's);
* HDLC: a UI frame (control ``0x03``, ``0x13`` with the poll/final bit) is never a reply in
  normal response mode, so every one is set aside;
* general-glo-ciphering (``DB``) carries replies too once security is on. Then the first
  plaintext byte is worked out without gurux (in clear when only authenticated, else one
  AES block of the GCM key stream). That only routes the frame; it is not authenticated
  here: whoever decodes the push (:func:`~gxcore.protocols.dlms.push.decode_dlms_push`) checks it.
  Our client never uses a dedicated or broadcast key, so general-ded-ciphering (``DC``) and
  a broadcast security control are always someone else's notification.

A frame set aside goes, whole as received, to the push handler when there is one
(:func:`~gxcore.protocols.dlms.push.decode_dlms_push` takes it as it is); what the handler raises
ends the exchange. Without a handler it is counted and logged at debug level by kind and
size, never by content.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from gxcore.protocols.dlms import hdlc, wrapper
from gxcore.protocols.dlms.ciphering import (
    AUTHENTICATED,
    BROADCAST,
    ENCRYPTED,
    GENERAL_DED_CIPHERING,
    GENERAL_GLO_CIPHERING,
)

log = logging.getLogger(__name__)

PushHandler = Callable[[bytes], None]
"""Takes one unsolicited frame (wrapper or HDLC, as received) that arrived inside an exchange."""

# fmt: off
NOTIFICATIONS: Final[dict[int, str]] = {
    0x0F: "data-notification", 0xC2: "event-notification", 0x18: "information-report",
    0xCA: "glo-event-notification", 0xD2: "ded-event-notification",
    0x38: "glo-information-report", 0x58: "ded-information-report",
}
# fmt: on
_GENERAL: Final = frozenset({GENERAL_GLO_CIPHERING, GENERAL_DED_CIPHERING})
MAYBE_UNSOLICITED: Final = frozenset(NOTIFICATIONS) | _GENERAL
"""APDU tags worth a closer look; anything else is a reply (checked for the right one by the core)."""
_BROADCAST_KEY: Final = -1  # not a byte: the APDU is ciphered with a broadcast key
UI_FRAME: Final = 0x03  # HDLC control with the poll/final bit (0x10) masked off
APDU_AT: Final = wrapper.HEADER_LENGTH
_LLC: Final = b"\xe6\xe7\x00"


class UnsolicitedFrames:
    """Spots unsolicited notifications among reply frames and hands them on (see the module doc)."""

    __slots__ = ("_block_cipher_key", "_keystream", "handler", "set_aside_count")

    def __init__(self, handler: PushHandler | None, block_cipher_key: bytes | None) -> None:
        self.handler = handler
        self.set_aside_count = 0
        self._block_cipher_key = block_cipher_key
        self._keystream: CipherContext | None = None

    def set_aside(self, frame: wrapper.WrapperFrame | hdlc.HdlcFrame, what: str) -> bool:
        """True (and the frame handed on) when ``frame`` is an unsolicited notification, not a reply."""
        raw = frame.raw
        if isinstance(frame, wrapper.WrapperFrame):
            if len(raw) <= APDU_AT or raw[APDU_AT] not in MAYBE_UNSOLICITED:
                return False
            kind = self._kind(frame.apdu)
        else:
            if frame.control & 0xEF != UI_FRAME:
                return False
            info = frame.info[3:] if frame.info[:3] == _LLC else frame.info
            kind = (self._kind(info) if info else None) or "UI frame"
        if kind is None:
            return False
        self.take(raw, kind, what)
        return True

    def take(self, raw: bytes, kind: str, what: str) -> None:
        """Hand one unsolicited frame to the handler, or count and log it (kind and size only)."""
        self.set_aside_count += 1
        if self.handler is not None:
            self.handler(raw)
        else:
            log.debug("%s: set aside an unsolicited %s of %d bytes (no push handler)", what, kind, len(raw))

    def _kind(self, apdu: bytes) -> str | None:
        """The notification an APDU is, or None for a reply (or an APDU that cannot be told)."""
        tag = apdu[0]
        name = NOTIFICATIONS.get(tag)
        if name is not None or tag not in _GENERAL:
            return name
        if tag == GENERAL_DED_CIPHERING or self._block_cipher_key is None:
            return "protected notification"  # never a reply to us: we have no dedicated key, or no security
        inner = self._first_plain_byte(apdu)
        if inner == _BROADCAST_KEY:
            return "protected notification"  # replies to us never use a broadcast key
        if inner is None:
            return None
        name = NOTIFICATIONS.get(inner)
        return f"protected {name}" if name is not None else None

    def _first_plain_byte(self, apdu: bytes) -> int | None:
        """First plaintext byte of a general-glo-ciphered APDU (unchecked); -1 for a broadcast-key one.

        ``DB | len | system title | len | SC | IC (4) | payload``; the key stream of GCM starts
        at counter block ``title | IC | 00000002``.
        """
        at = 1
        title_length = apdu[at] if len(apdu) > at else 0
        title = apdu[at + 1 : at + 1 + title_length]
        at += 1 + title_length
        if len(title) != 8 or len(apdu) <= at:
            return None
        at += 1 + (apdu[at] & 0x7F if apdu[at] & 0x80 else 0)  # the content length, one or more bytes
        if len(apdu) < at + 6:
            return None
        control, counter, first = apdu[at], apdu[at + 1 : at + 5], apdu[at + 5]
        if control & BROADCAST:
            return _BROADCAST_KEY
        security = control & (AUTHENTICATED | ENCRYPTED)
        if security == AUTHENTICATED:
            return first
        if not security:
            return None
        if self._keystream is None:
            try:
                # ECB over one counter block is one block of GCM's own CTR key stream, not ECB ciphering of data.
                cipher = Cipher(algorithms.AES(bytes(self._block_cipher_key or b"")), modes.ECB())  # noqa: S305
            except ValueError:  # a key of a wrong length; the real decryption will say so
                return None
            self._keystream = cipher.encryptor()
        block = self._keystream.update(bytes(title) + bytes(counter) + b"\x00\x00\x00\x02")
        return first ^ block[0]
