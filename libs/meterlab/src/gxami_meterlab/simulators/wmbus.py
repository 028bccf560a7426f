"""Deterministic wireless M-Bus meters: a telegram generator and a receiver's TCP feed of their telegrams.

:class:`WMBusTelegramGenerator` builds SND_NR telegrams (C=0x44, CI 0x7A short
header) for ``count`` water meters. Every other meter (even index) encrypts with
security mode 5 under its own key; the odd ones send in the clear. Keys, IDs, values
and each meter's RSSI and send interval are pure functions of ``(seed, index, instant)``.

:class:`WMBusFeedServer` streams those telegrams over TCP, as a receiver would, in one
of the framings of :mod:`gxcore.protocols.wmbus.receivers`:

* ``"hex"`` (default): one telegram per line, upper-case hex of the raw telegram
  (L field first), ending in ``\\n``. Example: ``2E44...E2\\n``.
* ``"length"``: a 2-byte big-endian length, then the raw telegram bytes.
* ``"lfield"``: raw telegrams with their format A CRCs, delimited by their L fields.
* ``"im871a"``: IMST iM871A WMBUSMSG_IND frames with RSSI and frame check sequence.
* ``"amber"``: Amber AMB8465 CMD_DATA_IND frames with RSSI and XOR checksum.

Telegrams are sent without data-link CRCs unless ``with_crc=True`` (format A; hex and
length only: the dongles remove them, lfield always has them). Two schedules per connection:

* rounds (default): ``rounds`` rounds (None: until closed), one telegram per meter per
  round, instants ``start + n * period``, ``interval`` seconds apart;
* ``own_intervals=True``: each meter sends on its own, every
  :meth:`WMBusTelegramGenerator.interval_of` seconds (``interval`` on average), first
  after a part of it, ``per_meter`` telegrams each (None: until closed); the connection
  then stays open and quiet. Telegram n of meter i is stamped :meth:`WMBusFeedServer.instant_of`
  (``start + n * interval_of(i) * time_scale``): with ``time_scale`` 900, one real second is a
  quarter of an hour on the meters' clocks, so each telegram has a minute of its own (the
  clock record's resolution) even when meters send every second.

``junk=True`` puts something a real receiver also says between telegrams now and then
(comment and noise lines in hex, stray bytes and dongle status frames in the binary
framings), so a listener's resync is exercised.
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
from gxcore.protocols.wmbus.receivers import (
    encode_amber,
    encode_hex_line,
    encode_im871a,
    encode_length,
    encode_lfield,
    xor_checksum,
)
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

    def rssi_of(self, index: int) -> int:
        """The raw RSSI byte a dongle reports for meter ``index`` (Amber scale: about -120 .. -50 dBm)."""
        rng = random.Random(f"gxami-wmbus-rssi:{self.seed}:{index}")  # noqa: S311 - simulation, not security
        return rng.randrange(148, 255) if rng.random() < 0.5 else rng.randrange(0, 48)

    def interval_of(self, index: int, mean: float) -> float:
        """Seconds between two telegrams of meter ``index``: between 0.5 and 1.5 times ``mean``."""
        rng = random.Random(f"gxami-wmbus-interval:{self.seed}:{index}")  # noqa: S311 - simulation, not security
        return mean * rng.uniform(0.5, 1.5)

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


Framing = Literal["hex", "length", "lfield", "im871a", "amber"]
# What else a receiver says now and then: an rtl-wmbus-style comment, a noise line, stray bytes, a dongle's status.
_JUNK: dict[str, bytes] = {
    "hex": b"# receiver restarted\r\nnoise on the line\n",
    "length": b"\xee\xee\x05",
    "lfield": b"\x2e\x44\x13\x00",  # an L and a C field, and no CRC after them
    "im871a": b"\x00\x13\xa5\x01\x02\x00",  # stray bytes, then a ping response (DEVMGMT 0x02, no payload)
    "amber": b"\x17\x42" + bytes([0xFF, 0x8B, 0x00]) + bytes([xor_checksum(b"\xff\x8b\x00")]),
}


class WMBusFeedServer(SimulatorServer):
    """TCP feed of raw telegrams (see the module docstring for the framings and schedules)."""

    def __init__(
        self,
        generator: WMBusTelegramGenerator,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        framing: Framing = "hex",
        start: datetime = datetime(2024, 1, 15, 12, 0, tzinfo=UTC),
        period: timedelta = timedelta(minutes=15),
        interval: float = 1.0,
        rounds: int | None = None,
        with_crc: bool = False,
        own_intervals: bool = False,
        per_meter: int | None = None,
        junk: bool = False,
        time_scale: float = 1.0,
    ) -> None:
        super().__init__(host, port)
        if not time_scale > 0:
            raise ValueError("time_scale must be positive")
        if framing not in _JUNK:
            raise ValueError(f"framing must be one of {sorted(_JUNK)}")
        self.generator = generator
        self.framing = framing
        self.start_instant = start
        self.period = period
        self.interval = interval
        self.rounds = rounds
        self.with_crc = with_crc and framing in ("hex", "length")
        self.own_intervals = own_intervals
        self.per_meter = per_meter
        self.junk = junk
        self.time_scale = time_scale

    def instant_of(self, index: int, n: int) -> datetime:
        """The meter clock of telegram ``n`` (from 0) of meter ``index`` on the own-intervals schedule."""
        every = self.generator.interval_of(index, self.interval)
        return self.start_instant + timedelta(seconds=n * every * self.time_scale)

    def encode(self, telegram: bytes, index: int = 0) -> bytes:
        """One telegram of meter ``index`` in this feed's framing (the dongles add the meter's RSSI)."""
        if self.framing == "hex":
            return encode_hex_line(telegram)
        if self.framing == "length":
            return encode_length(telegram)
        if self.framing == "lfield":
            return encode_lfield(telegram)
        rssi = self.generator.rssi_of(index)
        if self.framing == "im871a":
            return encode_im871a(telegram, rssi=rssi)
        return encode_amber(telegram, rssi=rssi)

    def _frame(self, index: int, instant: datetime, sent: int) -> bytes:
        telegram = self.generator.telegram(index, instant, with_crc=self.with_crc)
        junk = _JUNK[self.framing] if self.junk and sent % 3 == 1 else b""
        return junk + self.encode(telegram, index)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Send this connection its telegrams on the configured schedule, then hang up (rounds) or idle."""
        if self.own_intervals:
            await self._each_on_its_own(reader, writer)
            return
        round_number = 0
        while self.rounds is None or round_number < self.rounds:
            instant = self.start_instant + round_number * self.period
            for index in range(len(self.generator.meters)):
                writer.write(self._frame(index, instant, round_number * len(self.generator.meters) + index))
            await writer.drain()
            round_number += 1
            if not await self.pause(reader, self.interval):
                return

    async def _each_on_its_own(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()
        count = len(self.generator.meters)
        every = [self.generator.interval_of(i, self.interval) for i in range(count)]
        due = [began + every[i] * ((i + 1) / (count + 1)) for i in range(count)]  # first sends spread out
        sent = [0] * count
        total = 0
        while True:
            waiting = [i for i in range(count) if self.per_meter is None or sent[i] < self.per_meter]
            if not waiting:
                break
            index = min(waiting, key=due.__getitem__)
            if not await self.pause(reader, max(due[index] - loop.time(), 0.0)):
                return
            instant = self.instant_of(index, sent[index])
            writer.write(self._frame(index, instant, total))
            await writer.drain()
            sent[index] += 1
            total += 1
            due[index] += every[index]
        while await self.pause(reader, 3600.0):
            pass  # everything sent: stay connected and quiet until the client or the server ends it
