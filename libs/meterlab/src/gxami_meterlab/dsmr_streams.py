"""Thin asyncio adapter: read telegrams from a P1 stream (P1-to-TCP bridge or serial port)."""

from __future__ import annotations

import asyncio

from gxcore.errors import MediaError, MeterTimeoutError
from gxcore.protocols.dsmr.reader import P1Reader
from gxcore.protocols.dsmr.telegram import DsmrTelegram

_READ_CHUNK = 4096


async def read_telegram(reader: asyncio.StreamReader, *, timeout: float, p1: P1Reader | None = None) -> DsmrTelegram:
    """Return the newest telegram of the first chunk that completes one within ``timeout`` s; bad ones are skipped."""
    p1 = p1 if p1 is not None else P1Reader()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            detail = f"; last error: {p1.last_error.reason}" if p1.last_error is not None else ""
            raise MeterTimeoutError(f"no valid P1 telegram within {timeout:g} s{detail}")
        try:
            data = await asyncio.wait_for(reader.read(_READ_CHUNK), remaining)
        except TimeoutError:
            continue
        except OSError as exc:
            raise MediaError(f"reading the P1 stream failed: {exc.strerror or exc}") from None
        if not data:
            raise MediaError("the P1 stream closed before a telegram arrived")
        telegrams = p1.feed(data)
        if telegrams:
            return telegrams[-1]
