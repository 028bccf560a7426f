"""A receiver's feed of wM-Bus telegrams: split it, and wait on it for one meter's telegram (sans-IO).

Feed framing: ``hex`` is one telegram per line in hex, L field first; ``length`` is a
2-byte big-endian length before each raw telegram (:mod:`gxcore.protocols.wmbus.receivers`
splits both, and the USB dongles' framings, and documents how each resynchronises).
Lines that are not hex, and sizes no telegram can have, are counted and skipped.

:class:`MeterTelegram` is the driver loop's core for one read: it sends nothing, feeds
what arrives to a :class:`TelegramFeed`, skips telegrams that do not frame or belong to
other meters, and is done at the first telegram of its meter that decodes. A telegram
of the meter that cannot be decrypted ends the wait at once (a wrong or missing key does
not get better); one that is damaged is skipped and named in the timeout error.
"""

from __future__ import annotations

from typing import Literal

from gxcore.errors import ConfigurationError, DecryptionError, GxError, MeterTimeoutError, ProtocolError
from gxcore.protocols.mbus.telegram import MBusTelegram, bcd_id
from gxcore.protocols.wmbus.frame import DLL_SIZE, CrcMode, parse_link_header, strip_crcs
from gxcore.protocols.wmbus.receivers import ReceivedFrame, ReceiverFeed
from gxcore.protocols.wmbus.telegram import CI_TPL_LONG, decode_wmbus_telegram

Framing = Literal["hex", "length"]


class TelegramFeed:
    """Sans-IO splitter of a ``hex`` or ``length`` feed into raw telegrams; the buffer stays bounded.

    A thin view of :class:`~gxcore.protocols.wmbus.receivers.ReceiverFeed` (where the
    framings and their resync are described) that keeps only the telegrams and counts
    what was skipped.
    """

    def __init__(self, framing: Framing) -> None:
        self.framing = framing
        self.receiver = ReceiverFeed(framing)
        self.skipped = 0

    @property
    def _buffer(self) -> bytearray:
        return self.receiver._buffer  # one splitter, two views of it (tests bound its size)

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the telegrams they completed."""
        out: list[bytes] = []
        for event in self.receiver.feed(data):
            if isinstance(event, ReceivedFrame):
                out.append(event.raw)
            elif event.kind != "comment":
                self.skipped += 1
        return out


def telegram_ids(raw: bytes, crc: CrcMode) -> set[str]:
    """IDs a raw telegram speaks for (link layer, and a long transport header); FramingError if it does not frame."""
    telegram = strip_crcs(raw, crc=crc)
    ids = {parse_link_header(telegram).id}
    if len(telegram) >= DLL_SIZE + 5 and telegram[DLL_SIZE] == CI_TPL_LONG:
        ids.add(bcd_id(telegram[DLL_SIZE + 1 : DLL_SIZE + 5]))
    return ids


class MeterTelegram:
    """Done at the first decoded telegram of meter ``ident`` received by ``now + wait`` (module doc)."""

    def __init__(
        self,
        ident: str,
        key: bytes | None,
        *,
        framing: Framing,
        crc: CrcMode,
        now: float,
        wait: float,
        meter_id: str | None = None,
    ) -> None:
        self.ident = ident
        self.feed = TelegramFeed(framing)
        self.wait = wait
        self.meter_id = meter_id
        self._key = key
        self._crc: CrcMode = crc
        self._deadline = now + wait
        self._last_error: GxError | None = None
        self.telegram: MBusTelegram | None = None
        self.error: GxError | None = None

    @property
    def done(self) -> bool:
        return self.telegram is not None or self.error is not None

    def data_to_send(self) -> bytes:
        return b""

    def receive_data(self, data: bytes, now: float) -> None:
        for raw in self.feed.feed(data):
            if self.done:
                return
            self._consider(raw)
        if not self.done and now >= self._deadline:
            self.handle_timeout(now)

    def next_deadline(self) -> float | None:
        return None if self.done else self._deadline

    def handle_timeout(self, now: float) -> None:
        if self.done or now < self._deadline:
            return
        last = self._last_error
        detail = f"; last telegram of it failed: {last.reason}" if last is not None else ""
        self.error = MeterTimeoutError(
            f"no telegram from wM-Bus meter {self.ident} within {self.wait:g} s{detail}", meter_id=self.meter_id
        )

    def result(self) -> MBusTelegram:
        """The telegram, or the error that ended the wait (ProtocolError if not done)."""
        if self.error is not None:
            raise self.error
        if self.telegram is None:
            raise ProtocolError(f"wait for wM-Bus meter {self.ident} not finished", meter_id=self.meter_id)
        return self.telegram

    def _consider(self, raw: bytes) -> None:
        try:
            ids = telegram_ids(raw, self._crc)
        except GxError:
            self.feed.skipped += 1  # does not frame: nobody's telegram
            return
        if self.ident not in ids:
            return
        try:
            self.telegram = decode_wmbus_telegram(raw, self._key, crc=self._crc)
        except (DecryptionError, ConfigurationError) as exc:
            self.error = exc  # the key is missing or wrong: waiting longer will not help
        except GxError as exc:
            self._last_error = exc  # damaged on the air; the next one may be fine
