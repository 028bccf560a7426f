"""Wait for the first good telegram of a P1 port, in the driver loop's shape (sans-IO).

A P1 port talks on its own, so the core sends nothing: it feeds what arrives to a
:class:`~gxcore.protocols.dsmr.reader.P1Reader` (or a Smarty reader) and is done at the
first telegram that decodes with a good CRC, at the deadline (MeterTimeoutError naming
the last damage seen), or at the second frame that fails authentication (the key is
wrong; one bad frame may be one cut at connect).
"""

from __future__ import annotations

from typing import Protocol

from gxcore.errors import DecryptionError, GxError, MeterTimeoutError, ProtocolError
from gxcore.protocols.dsmr.telegram import DsmrTelegram


class TelegramReader(Protocol):
    """What P1Reader and SmartyReader have in common."""

    last_error: GxError | None
    rejected: int

    def feed(self, data: bytes) -> list[DsmrTelegram]: ...


class FirstTelegram:
    """Done at the first good telegram received by ``now + wait`` (see the module doc)."""

    def __init__(self, reader: TelegramReader, *, now: float, wait: float, meter_id: str | None = None) -> None:
        self.reader = reader
        self.wait = wait
        self.meter_id = meter_id
        self._deadline = now + wait
        self.telegram: DsmrTelegram | None = None
        self.error: GxError | None = None

    @property
    def done(self) -> bool:
        return self.telegram is not None or self.error is not None

    def data_to_send(self) -> bytes:
        return b""

    def receive_data(self, data: bytes, now: float) -> None:
        if self.done:
            return
        telegrams = self.reader.feed(data)
        if telegrams:
            self.telegram = telegrams[0]
        elif isinstance(self.reader.last_error, DecryptionError) and self.reader.rejected >= 2:
            self.error = self.reader.last_error
        elif now >= self._deadline:
            self.handle_timeout(now)

    def next_deadline(self) -> float | None:
        return None if self.done else self._deadline

    def handle_timeout(self, now: float) -> None:
        if self.done or now < self._deadline:
            return
        last = self.reader.last_error
        detail = f"; last error: {last.reason}" if last is not None else ""
        self.error = MeterTimeoutError(f"no valid P1 telegram within {self.wait:g} s{detail}", meter_id=self.meter_id)

    def result(self) -> DsmrTelegram:
        """The telegram, or the error that ended the wait (ProtocolError if not done)."""
        if self.error is not None:
            raise self.error
        if self.telegram is None:
            raise ProtocolError("P1 wait not finished", meter_id=self.meter_id)
        return self.telegram
