"""WMBusDriver against the simulated receiver feed, and the feed splitter on hostile input."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gxami_meterlab.simulators.wmbus import WMBusFeedServer, WMBusTelegramGenerator, volume_litres
from gxcore.drivers import Driver, MeterTarget, ReadRequest
from gxcore.drivers.common import aes_key
from gxcore.drivers.wmbus import WMBusDriver
from gxcore.errors import ConfigurationError, DecryptionError, KeyMissingError, MeterTimeoutError
from gxcore.profiles import ProfileCatalog
from gxcore.protocols.wmbus.feed import TelegramFeed, telegram_ids
from gxcore.protocols.wmbus.frame import MAX_TELEGRAM
from gxcore.secrets import Secret

START = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)  # the feed's first instant
READ_AT = datetime(2024, 1, 15, 12, 0, 5, tzinfo=UTC)
WATER = ProfileCatalog().get("generic-wmbus-water")
EVERYTHING = ReadRequest(purposes=frozenset({"billing", "instantaneous", "diagnostics"}))


@pytest.fixture
def driver() -> WMBusDriver:
    return WMBusDriver(clock=lambda: READ_AT)


def feed(generator: WMBusTelegramGenerator, **kwargs: Any) -> WMBusFeedServer:
    kwargs.setdefault("interval", 0.05)
    return WMBusFeedServer(generator, start=START, period=timedelta(minutes=15), **kwargs)


def test_driver_satisfies_the_protocol() -> None:
    assert isinstance(WMBusDriver(), Driver)
    assert WMBusDriver.name == "wmbus"


async def test_encrypted_meter_with_hex_text_key_equals_the_simulator(driver: WMBusDriver) -> None:
    generator = WMBusTelegramGenerator(seed=4, count=6)
    meter = generator.meters[2]  # even index: mode 5 encrypted
    assert meter.key is not None
    async with feed(generator) as server:
        # A secrets file holds the key as 32 hex digits; the driver takes that as well as raw bytes.
        target = MeterTarget(meter.id, f"tcp://127.0.0.1:{server.port}", secrets={"key": Secret(meter.key.hex())})
        result = await driver.read(target, WATER, EVERYTHING, timeout=2.0)
    assert [(r.quantity, float(r.value), r.unit) for r in result.readings] == [
        ("8-0:1.0.0", pytest.approx(volume_litres(4, 2, START) / 1000), "m3"),
        ("8-0:97.97.0", 0.0, ""),
    ]
    assert all(r.timestamp == READ_AT for r in result.readings)
    assert result.meter_time == START
    assert result.readings[0].extra["meter"] == meter.id
    missing = {p.quantity for p in WATER.points_for(EVERYTHING.purposes)} - {r.quantity for r in result.readings}
    assert sorted(p.quantity for p in result.problems) == sorted(missing)


async def test_clear_meter_by_wmbus_id_option_with_length_framing_and_crcs(driver: WMBusDriver) -> None:
    generator = WMBusTelegramGenerator(seed=4, count=6)
    meter = generator.meters[5]
    assert meter.key is None
    async with feed(generator, framing="length", with_crc=True) as server:
        url = f"tcp://127.0.0.1:{server.port}?framing=length&crc=present"
        target = MeterTarget("water-at-the-school", url, {"wmbus_id": meter.id})
        result = await driver.read(target, WATER, ReadRequest(), timeout=2.0)
    assert [(r.quantity, float(r.value)) for r in result.readings] == [
        ("8-0:1.0.0", pytest.approx(volume_litres(4, 5, START) / 1000))
    ]


async def test_wrong_key_fails_at_once_and_never_shows_the_key(driver: WMBusDriver) -> None:
    generator = WMBusTelegramGenerator(seed=4, count=2)
    wrong = bytes(range(16))
    async with feed(generator) as server:
        target = MeterTarget(generator.meters[0].id, f"tcp://127.0.0.1:{server.port}", secrets={"key": Secret(wrong)})
        started = asyncio.get_running_loop().time()
        with pytest.raises(DecryptionError) as caught:
            await driver.read(target, WATER, ReadRequest(), timeout=3.0)
        assert asyncio.get_running_loop().time() - started < 1.0
    text = f"{caught.value} {caught.value!r}"
    assert wrong.hex() not in text.lower()
    assert wrong.hex(" ") not in text.lower()


async def test_missing_key_for_an_encrypted_meter(driver: WMBusDriver) -> None:
    generator = WMBusTelegramGenerator(seed=4, count=2)
    async with feed(generator) as server:
        target = MeterTarget(generator.meters[0].id, f"tcp://127.0.0.1:{server.port}")
        with pytest.raises(KeyMissingError):
            await driver.read(target, WATER, ReadRequest(), timeout=2.0)


async def test_a_meter_the_receiver_never_hears_times_out(driver: WMBusDriver) -> None:
    generator = WMBusTelegramGenerator(seed=4, count=3)
    async with feed(generator) as server:
        target = MeterTarget("12345678", f"tcp://127.0.0.1:{server.port}")
        started = asyncio.get_running_loop().time()
        with pytest.raises(MeterTimeoutError, match="12345678"):
            await driver.read(target, WATER, ReadRequest(), timeout=0.3)
        assert asyncio.get_running_loop().time() - started < 1.5


async def test_garbage_on_the_feed_is_skipped(driver: WMBusDriver) -> None:
    generator = WMBusTelegramGenerator(seed=8, count=2)
    meter = generator.meters[1]
    telegram = generator.telegram(1, START)
    noise = b"not hex at all\n" + b"F" * 5000 + b"\n" + b"2E44\n" + b"\xff\xfe\n"
    tail = b"\n" + telegram[:-1].hex().encode()  # the same telegram cut short: does not frame

    async def bridge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(noise + tail + b"\n" + telegram.hex().upper().encode() + b"\r\n")
        await writer.drain()
        await reader.read()
        writer.close()

    server = await asyncio.start_server(bridge, "127.0.0.1", 0)
    try:
        target = MeterTarget(meter.id, f"tcp://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        result = await driver.read(target, WATER, ReadRequest(), timeout=1.0)
    finally:
        server.close()
        await server.wait_closed()
    assert float(result.readings[0].value) == pytest.approx(volume_litres(8, 1, START) / 1000)


@pytest.mark.parametrize(
    ("url", "options", "secrets", "message"),
    [
        ("tcp://127.0.0.1:1?framing=json", {}, {}, "framing=hex"),
        ("tcp://127.0.0.1:1", {"wmbus_id": "1234"}, {}, "8 digits"),
        ("tcp://127.0.0.1:1", {"wmbus_id": "12345678"}, {"key": Secret(b"short")}, "16 bytes"),
        ("udp://127.0.0.1:1", {"wmbus_id": "12345678"}, {}, "not supported"),
    ],
)
async def test_bad_targets_are_configuration_errors(
    driver: WMBusDriver, url: str, options: dict[str, str], secrets: dict[str, Secret], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        await driver.read(MeterTarget("m", url, options, secrets), WATER, ReadRequest(), timeout=0.5)


def test_aes_key_takes_raw_bytes_or_hex_text_and_never_echoes() -> None:
    raw = bytes(range(16))
    assert aes_key(Secret(raw), "m") == raw
    assert aes_key(Secret(raw.hex().upper()), "m") == raw
    assert aes_key(None, "m") is None
    bad = "zz" * 16
    with pytest.raises(ConfigurationError) as caught:
        aes_key(Secret(bad), "m")
    assert bad not in str(caught.value)


def test_telegram_ids_include_a_long_transport_header() -> None:
    # lvogt/wireless-mbus-parser "Long Header - Encrypted Mode 5": link ID 57000044, TPL ID 57000044 (AMB).
    amb = bytes.fromhex(
        "4644A205440000570C377244000057A2050C37A3003005D898C64FD0C9BD2634365084E4DF946736C71A2103E45A190CAA1A49"
        "B602E46C9F45FCEE79AFBE34F0C167FD857F659E"
    )
    assert "57000044" in telegram_ids(amb, "auto")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=400), max_size=20), st.sampled_from(["hex", "length"]))
def test_feed_splitter_never_raises_and_stays_bounded(chunks: list[bytes], framing: Any) -> None:
    splitter = TelegramFeed(framing)
    for chunk in chunks:
        for telegram in splitter.feed(chunk):
            assert len(telegram) <= MAX_TELEGRAM * 2
        assert len(splitter._buffer) <= 2 * MAX_TELEGRAM + 8 + 400


def test_feed_splitter_finds_telegrams_split_anywhere() -> None:
    generator = WMBusTelegramGenerator(seed=2, count=3)
    telegrams = generator.telegrams(START)
    stream = b"".join(t.hex().encode() + b"\n" for t in telegrams)
    splitter = TelegramFeed("hex")
    out = [t for i in range(0, len(stream), 7) for t in splitter.feed(stream[i : i + 7])]
    assert out == telegrams
