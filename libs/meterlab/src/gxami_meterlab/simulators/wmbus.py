"""Deterministic wireless M-Bus meters: a telegram generator and a TCP feed of raw telegrams.

:class:`WMBusTelegramGenerator` builds SND_NR telegrams (C=0x44, CI 0x7A short
header) for ``count`` water meters. Every other meter (even index) encrypts with
security mode 5 under its own key; the odd ones send in the clear. Keys, IDs and
values are pure functions of ``(seed, index, instant)``.

:class:`WMBusFeedServer` streams those telegrams over TCP, as a receiver bridge
would. Two documented framings:

* ``"hex"`` (default): one telegram per line, upper-case hex of the raw telegram
  (L field first), ending in ``\\n``. Example: ``2E44...E2\\n``.
* ``"length"``: a 2-byte big-endian length, then the raw telegram bytes.

Telegrams are sent without data-link CRCs unless ``with_crc=True`` (format A).
Each connection gets ``rounds`` rounds (None: until closed), one telegram per meter
per round, instants ``start + n * period``, ``interval`` seconds apart.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from gxami_meterlab.simulators.tcp import SimulatorServer
from gxcore.protocols.mbus.frame import manufacturer_value
from gxcore.protocols.mbus.values import encode_datetime_f
from gxcore.protocols.wmbus.frame import add_crcs
from gxcore.protocols.wmbus.security import encrypt_mode5, mode5_iv

MANUFACTURER = "GXW"
WATER = 0x07
EPOCH = datetime(2020, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class WMBusMeter:
    """Identity of one simulated wM-Bus meter; ``key`` is None for a meter that sends in clear."""

    index: int
    id: str
    version: int
    device_type: int
    key: bytes | None = field(repr=False)


def volume_litres(seed: int, index: int, instant: datetime) -> int:
    """Total volume register of meter ``index`` at ``instant`` in litres: a pure function."""
    rng = random.Random(f"gxami-wmbus:{seed}:{index}")  # noqa: S311 - simulation, not security
    base, rate = rng.uniform(10_000, 900_000), rng.uniform(1.0, 40.0)
    hours = max((instant - EPOCH).total_seconds() / 3600, 0.0)
    return int(base + rate * hours)


class WMBusTelegramGenerator:
    """Telegrams of ``count`` simulated water meters; even indexes encrypted (mode 5)."""

    def __init__(self, seed: int, count: int) -> None:
        if not 0 < count <= 10_000:
            raise ValueError("count must be 1..10000")
        self.seed = seed
        rng = random.Random(f"gxami-wmbus-ids:{seed}")  # noqa: S311 - simulation, not security
        ids = rng.sample(range(10_000_000, 99_999_999), count)
        self.meters = tuple(
            WMBusMeter(
                index,
                f"{ids[index]:08d}",
                0x01,
                WATER,
                hashlib.sha256(f"gxami-wmbus-key:{seed}:{index}".encode()).digest()[:16] if index % 2 == 0 else None,
            )
            for index in range(count)
        )

    def keys(self) -> dict[str, bytes]:
        """Meter ID -> AES key, for the meters that encrypt."""
        return {meter.id: meter.key for meter in self.meters if meter.key is not None}

    def telegram(self, index: int, instant: datetime, *, with_crc: bool = False) -> bytes:
        """The raw telegram meter ``index`` sends at ``instant`` (L field first)."""
        meter = self.meters[index]
        access = int((instant - EPOCH).total_seconds() // 60) & 0xFF
        local = instant.astimezone(UTC).replace(tzinfo=None)
        records = (
            b"\x04\x13" + volume_litres(self.seed, index, instant).to_bytes(4, "little")
            + b"\x04\x6d" + encode_datetime_f(local)
            + b"\x02\xfd\x17\x00\x00"
        )  # fmt: skip
        man = manufacturer_value(MANUFACTURER).to_bytes(2, "little")
        address = bytes.fromhex(meter.id)[::-1] + bytes([meter.version, meter.device_type])
        if meter.key is None:
            config = 0
            payload = records
        else:
            plain = b"\x2f\x2f" + records
            payload = encrypt_mode5(meter.key, mode5_iv(man, address, access), plain)
            config = 0x0500 | ((len(payload) // 16) << 4)
        body = b"\x44" + man + address + bytes([0x7A, access, 0x00]) + config.to_bytes(2, "little") + payload
        telegram = bytes([len(body)]) + body
        return add_crcs(telegram, "A") if with_crc else telegram

    def telegrams(self, instant: datetime, *, with_crc: bool = False) -> list[bytes]:
        """One telegram per meter at ``instant``."""
        return [self.telegram(index, instant, with_crc=with_crc) for index in range(len(self.meters))]


class WMBusFeedServer(SimulatorServer):
    """TCP feed of raw telegrams (see the module docstring for the framing)."""

    def __init__(
        self,
        generator: WMBusTelegramGenerator,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        framing: Literal["hex", "length"] = "hex",
        start: datetime = datetime(2024, 1, 15, 12, 0, tzinfo=UTC),
        period: timedelta = timedelta(minutes=15),
        interval: float = 1.0,
        rounds: int | None = None,
        with_crc: bool = False,
    ) -> None:
        super().__init__(host, port)
        self.generator = generator
        self.framing = framing
        self.start_instant = start
        self.period = period
        self.interval = interval
        self.rounds = rounds
        self.with_crc = with_crc

    def encode(self, telegram: bytes) -> bytes:
        """One telegram in this feed's framing."""
        if self.framing == "hex":
            return telegram.hex().upper().encode() + b"\n"
        return len(telegram).to_bytes(2, "big") + telegram

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Send ``rounds`` rounds of one telegram per meter, ``interval`` s apart, then hang up."""
        round_number = 0
        while self.rounds is None or round_number < self.rounds:
            instant = self.start_instant + round_number * self.period
            for telegram in self.generator.telegrams(instant, with_crc=self.with_crc):
                writer.write(self.encode(telegram))
            await writer.drain()
            round_number += 1
            if not await self.pause(reader, self.interval):
                return
