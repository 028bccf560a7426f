"""What a receiver heard: each telegram's link header, its security, its RSSI; and the listening core (sans-IO).

:func:`hear` reads only what needs no key: the link header (ID, manufacturer, version,
device type) and whether the payload is encrypted (the ELL session number's encryption
bits, else the transport layer's security mode, CF bits 8-12). The raw telegram stays
in :class:`HeardTelegram` to be decrypted later with that meter's key
(``decode_wmbus_telegram(heard.raw, key, crc=heard.crc)``).

:class:`ReceiverCore` is the driver loop's core for a receiver that is listened to for
a long time: it sends nothing, splits what arrives with a
:class:`~gxcore.protocols.wmbus.receivers.ReceiverFeed`, and is ``done`` whenever it holds
telegrams (:meth:`ReceiverCore.take` empties it and it listens on) or when the line was
quiet for ``idle_timeout`` seconds (``error``: MeterTimeoutError). Skips, and telegrams
that frame but carry no readable link header, go to ``on_skipped`` and are counted;
they never end the core.

:class:`HeardMeters` tallies what was heard per meter ID (what an installer lists, and
what a collector counts for IDs it does not know).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from gxcore.errors import ConfigurationError, GxError, MeterTimeoutError
from gxcore.protocols.wmbus.frame import DLL_SIZE, CrcMode, LinkHeader, parse_link_header, strip_crcs
from gxcore.protocols.wmbus.receivers import ReceivedFrame, ReceiverFeed, ReceiverFraming, Skipped

_ELL_SIZES = {0x8C: 2, 0x8D: 8, 0x8E: 10, 0x8F: 16}  # as gxcore.protocols.wmbus.telegram
_CI_AFL = 0x90
_TPL_CONFIG_AT = {0x7A: 3, 0x72: 11}  # offset of the configuration field after the CI


@dataclass(frozen=True, slots=True)
class HeardTelegram:
    """One telegram a receiver heard, read as far as no key is needed (module doc)."""

    link: LinkHeader
    raw: bytes  # as received, L field first
    crc: CrcMode  # how to decode ``raw``: data-link CRCs "absent" (dongles) or "auto" (feeds)
    encrypted: bool
    security_mode: int | None  # the TPL's security mode (0: none, 5, 7, ...), None without a readable TPL
    offset: int  # stream offset where its frame began
    received_at: float  # the core's ``now`` when its last byte arrived
    rssi_raw: int | None = None
    rssi_dbm: float | None = None
    timestamp: int | None = None

    @property
    def id(self) -> str:
        return self.link.id

    @property
    def manufacturer(self) -> str:
        return self.link.manufacturer


def security_of(telegram: bytes) -> tuple[bool, int | None]:
    """(encrypted, TPL security mode or None) of a CRC-free telegram, read without a key."""
    pos = DLL_SIZE
    while pos < len(telegram) and telegram[pos] in _ELL_SIZES:
        ci = telegram[pos]
        end = pos + 1 + _ELL_SIZES[ci]
        if end > len(telegram):
            return False, None
        if ci in (0x8D, 0x8F) and int.from_bytes(telegram[end - 6 : end - 2], "little") >> 29:
            return True, None  # the ELL encrypts everything after it, the TPL too
        pos = end
    if pos + 1 < len(telegram) and telegram[pos] == _CI_AFL:
        pos += 2 + telegram[pos + 1]
    if pos >= len(telegram) or telegram[pos] not in _TPL_CONFIG_AT:
        return False, None
    at = pos + _TPL_CONFIG_AT[telegram[pos]]
    if at + 2 > len(telegram):
        return False, None
    mode = (int.from_bytes(telegram[at : at + 2], "little") >> 8) & 0x1F
    return mode != 0, mode


def hear(frame: ReceivedFrame, now: float) -> HeardTelegram:
    """The link header and security of one received telegram; FramingError/ChecksumError if it does not frame."""
    telegram = strip_crcs(frame.raw, crc=frame.crc)
    link = parse_link_header(telegram)
    encrypted, mode = security_of(telegram)
    return HeardTelegram(
        link=link,
        raw=frame.raw,
        crc=frame.crc,
        encrypted=encrypted,
        security_mode=mode,
        offset=frame.offset,
        received_at=now,
        rssi_raw=frame.rssi_raw,
        rssi_dbm=frame.rssi_dbm,
        timestamp=frame.timestamp,
    )


class ReceiverCore:
    """Listens on a receiver's feed; done while it holds telegrams or once the line went quiet (module doc)."""

    def __init__(
        self,
        framing: ReceiverFraming,
        *,
        now: float,
        idle_timeout: float,
        rssi: bool = True,
        on_skipped: Callable[[Skipped], None] | None = None,
    ) -> None:
        if not idle_timeout > 0:
            raise ConfigurationError(f"idle timeout must be positive, not {idle_timeout!r}")
        self.feed = ReceiverFeed(framing, rssi=rssi)
        self.idle_timeout = idle_timeout
        self.skipped: Counter[str] = Counter()
        self.error: GxError | None = None
        self._on_skipped = on_skipped
        self._last = now
        self._heard: list[HeardTelegram] = []

    @property
    def done(self) -> bool:
        return bool(self._heard) or self.error is not None

    def data_to_send(self) -> bytes:
        return b""

    def receive_data(self, data: bytes, now: float) -> None:
        self._last = now
        for event in self.feed.feed(data):
            if isinstance(event, Skipped):
                self._skip(event)
                continue
            try:
                self._heard.append(hear(event, now))
            except GxError as exc:
                exc.offset = event.offset  # where in the stream the frame began
                self._skip(Skipped(event.offset, len(event.raw), "garbage", exc, "no readable link header"))

    def next_deadline(self) -> float | None:
        return None if self.done else self._last + self.idle_timeout

    def handle_timeout(self, now: float) -> None:
        if self.done or now < self._last + self.idle_timeout:
            return
        self.error = MeterTimeoutError(f"wM-Bus receiver ({self.feed.framing}) quiet for {self.idle_timeout:g} s")

    def take(self) -> list[HeardTelegram]:
        """The telegrams heard since the last call, in stream order; the core listens on."""
        out, self._heard = self._heard, []
        return out

    def _skip(self, skipped: Skipped) -> None:
        self.skipped[skipped.kind] += 1
        if self._on_skipped is not None:
            self._on_skipped(skipped)


@dataclass(slots=True)
class MeterHeard:
    """One meter ID's tally: what its last telegram said, and how many were heard."""

    id: str
    manufacturer: str
    version: int
    device_type: int
    medium: str
    encrypted: bool
    security_mode: int | None
    count: int = 0
    last_rssi_raw: int | None = None
    last_rssi_dbm: float | None = None
    last_heard_at: float = 0.0

    def to_json_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "manufacturer": self.manufacturer,
            "version": self.version,
            "type": self.device_type,
            "medium": self.medium,
            "count": self.count,
            "encrypted": self.encrypted,
            "security_mode": self.security_mode,
            "last_rssi_dbm": self.last_rssi_dbm,
            "last_rssi_raw": self.last_rssi_raw,
        }


class HeardMeters:
    """Telegrams heard, tallied per link-layer meter ID in the order first heard; at most ``limit`` IDs kept."""

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self.meters: dict[str, MeterHeard] = {}
        self.dropped = 0  # telegrams of IDs beyond ``limit``: counted, not kept (a bounded table)

    def add(self, telegram: HeardTelegram) -> MeterHeard | None:
        """Count ``telegram``; its meter's tally, or None when the table is full and the ID is new."""
        link = telegram.link
        entry = self.meters.get(link.id)
        if entry is None:
            if len(self.meters) >= self.limit:
                self.dropped += 1
                return None
            entry = self.meters[link.id] = MeterHeard(
                link.id, link.manufacturer, link.version, link.device_type, link.medium, False, None
            )
        entry.manufacturer, entry.version, entry.device_type, entry.medium = (
            link.manufacturer, link.version, link.device_type, link.medium,
        )  # fmt: skip
        entry.encrypted, entry.security_mode = telegram.encrypted, telegram.security_mode
        entry.count += 1
        entry.last_rssi_raw, entry.last_rssi_dbm = telegram.rssi_raw, telegram.rssi_dbm
        entry.last_heard_at = telegram.received_at
        return entry

    @property
    def telegrams(self) -> int:
        return sum(m.count for m in self.meters.values()) + self.dropped
