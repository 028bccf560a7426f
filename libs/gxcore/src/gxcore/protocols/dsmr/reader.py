"""Sans-IO P1 port reader: bytes in, decoded telegrams out; a bad telegram never stops the stream."""

from __future__ import annotations

from collections.abc import Callable

from gxcore.errors import GxError
from gxcore.protocols.dsmr.framer import MAX_TELEGRAM_SIZE, next_telegram
from gxcore.protocols.dsmr.telegram import DsmrTelegram, decode_dsmr_telegram


class P1Reader:
    """Feed it whatever the P1 port (or its TCP bridge) delivers; get whole telegrams back.

    Telegrams that fail their CRC or do not decode are counted in ``rejected`` and
    passed to ``on_error``; noise between telegrams is counted in ``discarded_bytes``.
    The buffer never holds more than ``max_telegram_size`` bytes of an unfinished telegram.
    """

    def __init__(
        self,
        *,
        max_telegram_size: int = MAX_TELEGRAM_SIZE,
        on_error: Callable[[GxError], None] | None = None,
    ) -> None:
        self._buffer = bytearray()
        self._max = max_telegram_size
        self._on_error = on_error
        self.rejected = 0
        self.discarded_bytes = 0
        self.last_error: GxError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for the end of a telegram."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[DsmrTelegram]:
        """Add received bytes; return the telegrams they completed, in order."""
        self._buffer += data
        telegrams: list[DsmrTelegram] = []
        while True:
            consumed, raw = next_telegram(self._buffer, max_size=self._max)
            if raw is None:
                self.discarded_bytes += consumed
                del self._buffer[:consumed]
                if consumed == 0:
                    return telegrams
                continue
            del self._buffer[:consumed]
            try:
                telegrams.append(decode_dsmr_telegram(raw))
            except GxError as exc:
                self.rejected += 1
                self.last_error = exc
                if self._on_error is not None:
                    self._on_error(exc)
