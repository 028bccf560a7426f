"""The wM-Bus simulator: deterministic telegrams that decode, and the TCP feed in both framings."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from gxami_meterlab.simulators.wmbus import WMBusFeedServer, WMBusTelegramGenerator, volume_litres
from gxcore.errors import DecryptionError, KeyMissingError
from gxcore.protocols.wmbus import decode_wmbus_telegram

NOON = datetime(2024, 1, 15, 12, tzinfo=UTC)


def test_generator_is_deterministic_and_keys_are_per_meter() -> None:
    first, second = WMBusTelegramGenerator(seed=9, count=6), WMBusTelegramGenerator(seed=9, count=6)
    assert first.telegrams(NOON) == second.telegrams(NOON)
    assert first.keys() == second.keys()
    assert len(set(first.keys().values())) == 3  # even indexes encrypt, each with its own key
    assert WMBusTelegramGenerator(seed=10, count=6).telegrams(NOON) != first.telegrams(NOON)
    assert "key" not in repr(first.meters[0]).lower()


def test_every_telegram_decodes_to_the_simulated_value() -> None:
    generator = WMBusTelegramGenerator(seed=9, count=6)
    keys = generator.keys()
    for meter in generator.meters:
        for with_crc in (False, True):
            raw = generator.telegram(meter.index, NOON, with_crc=with_crc)
            telegram = decode_wmbus_telegram(raw, keys.get(meter.id))
            assert telegram.id == meter.id
            assert telegram.security_mode == (5 if meter.key else 0)
            volume = telegram.records[0]
            assert volume.quantity == "8-0:1.0.0"
            assert volume.value == Decimal(volume_litres(9, meter.index, NOON)) / 1000
            assert telegram.meter_time() == datetime(2024, 1, 15, 12, 0)


def test_encrypted_meters_need_their_own_key() -> None:
    generator = WMBusTelegramGenerator(seed=9, count=4)
    encrypted = generator.telegram(0, NOON)
    with pytest.raises(KeyMissingError):
        decode_wmbus_telegram(encrypted)
    with pytest.raises(DecryptionError, match="2F 2F"):
        decode_wmbus_telegram(encrypted, generator.meters[2].key)


async def test_feed_streams_hex_lines() -> None:
    generator = WMBusTelegramGenerator(seed=2, count=3)
    feed = WMBusFeedServer(generator, interval=0.0, rounds=2, period=timedelta(minutes=15))
    async with feed:
        reader, writer = await asyncio.open_connection("127.0.0.1", feed.port)
        lines = [await asyncio.wait_for(reader.readline(), 5) for _ in range(6)]
        assert await asyncio.wait_for(reader.read(), 5) == b""  # the feed closes after its rounds
        writer.close()
        await writer.wait_closed()
    telegrams = [bytes.fromhex(line.decode().strip()) for line in lines]
    assert telegrams[:3] == generator.telegrams(NOON)
    assert telegrams[3:] == generator.telegrams(NOON + timedelta(minutes=15))
    later = decode_wmbus_telegram(telegrams[4])
    earlier = decode_wmbus_telegram(telegrams[1])
    assert later.records[0].value > earlier.records[0].value


async def test_feed_streams_length_prefixed_frames_with_crcs() -> None:
    generator = WMBusTelegramGenerator(seed=2, count=2)
    async with WMBusFeedServer(generator, framing="length", interval=0.0, rounds=1, with_crc=True) as feed:
        reader, writer = await asyncio.open_connection("127.0.0.1", feed.port)
        frames = []
        for _ in range(2):
            size = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), 5), "big")
            frames.append(await asyncio.wait_for(reader.readexactly(size), 5))
        writer.close()
        await writer.wait_closed()
    assert frames == generator.telegrams(NOON, with_crc=True)
    keys = generator.keys()
    assert decode_wmbus_telegram(frames[0], keys[generator.meters[0].id], crc="present").id == generator.meters[0].id
