"""One exception hierarchy for everything gxcore decodes or talks to.

Every decoder and link layer raises only these. Each error says what was wrong
and where: the byte ``offset`` into the frame (when known) and a bounded hex dump
of the offending bytes. ``remote`` tells a fault of the meter or the line (bad
frame, wrong reply) from a local one (bad parameters, missing key).

Messages never contain keys, passwords or authentication tags.
"""

from __future__ import annotations

_DUMP_LIMIT = 64  # bytes shown in a hex dump; frames can be long, logs should not be


def hexdump(data: bytes | bytearray | memoryview, limit: int = _DUMP_LIMIT) -> str:
    """Return ``data`` as spaced hex, cut to ``limit`` bytes with a marker."""
    raw = bytes(data)
    shown = raw[:limit].hex(" ")
    return shown + (f" ... (+{len(raw) - limit} bytes)" if len(raw) > limit else "")


class GxError(Exception):
    """Base of every error gxcore raises on purpose."""

    remote: bool = True

    def __init__(
        self,
        message: str,
        *,
        offset: int | None = None,
        frame: bytes | bytearray | memoryview | None = None,
        meter_id: str | None = None,
    ) -> None:
        self.reason = message
        self.offset = offset
        self.frame = bytes(frame) if frame is not None else None
        self.meter_id = meter_id
        super().__init__(self._render())

    def __str__(self) -> str:
        # Rendered on demand so a caller that learns the meter id later (``exc.meter_id = ...``)
        # gets it into the message.
        return self._render()

    def _render(self) -> str:
        parts = []
        if self.meter_id is not None:
            parts.append(f"meter {self.meter_id}: ")
        parts.append(self.reason)
        if self.offset is not None:
            parts.append(f" at byte offset {self.offset}")
        if self.frame is not None:
            parts.append(f" [frame: {hexdump(self.frame)}]")
        return "".join(parts)

    @property
    def kind(self) -> str:
        """Short stable name of the error class, for job results and metrics."""
        return _KIND_BY_CLASS.get(type(self), type(self).__name__)


class FramingError(GxError):
    """The bytes do not form a frame of the expected layout."""


class ChecksumError(FramingError):
    """A frame is complete but its checksum (CRC, FCS, BCC, sum) does not match."""


class DecryptionError(GxError):
    """A ciphered payload could not be decrypted or failed its integrity check."""


class KeyMissingError(DecryptionError):
    """A payload is encrypted and no key was given for this meter."""

    remote = False


class ProtocolError(GxError):
    """Frames are fine but the exchange breaks the protocol (unexpected reply, refused request)."""


class AccessDeniedError(ProtocolError):
    """The meter refused the association or the requested access."""


class MeterTimeoutError(GxError):
    """The meter did not answer within the allowed time."""


class MediaError(GxError):
    """The medium (TCP, serial, UDP) failed: refused, reset or closed."""


class ConfigurationError(GxError):
    """Local parameters are wrong: bad URL, bad profile, unknown protocol."""

    remote = False


_KIND_BY_CLASS: dict[type[GxError], str] = {
    GxError: "error",
    FramingError: "framing",
    ChecksumError: "checksum",
    DecryptionError: "decryption",
    KeyMissingError: "key-missing",
    ProtocolError: "protocol",
    AccessDeniedError: "access-denied",
    MeterTimeoutError: "timeout",
    MediaError: "media",
    ConfigurationError: "configuration",
}
