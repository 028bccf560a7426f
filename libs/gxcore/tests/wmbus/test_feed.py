"""MeterTelegram: waiting on a receiver feed for one meter, as a driver-loop core with a fake clock."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gxami_meterlab.simulators.wmbus import WMBusTelegramGenerator
from gxcore.errors import DecryptionError, MeterTimeoutError
from gxcore.protocols.wmbus.feed import MeterTelegram

AT = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)
GENERATOR = WMBusTelegramGenerator(seed=4, count=4)


def line(raw: bytes) -> bytes:
    return raw.hex().encode() + b"\n"


def test_other_meters_and_garbage_are_skipped_until_ours_comes() -> None:
    ours = GENERATOR.meters[3]
    core = MeterTelegram(ours.id, None, framing="hex", crc="auto", now=0.0, wait=5.0)
    core.receive_data(b"zz\n" + line(GENERATOR.telegram(1, AT)), now=1.0)
    assert not core.done
    assert core.feed.skipped == 1
    core.receive_data(line(GENERATOR.telegram(3, AT)), now=2.0)
    assert core.done
    assert core.result().id == ours.id


def test_a_wrong_key_ends_the_wait_at_once() -> None:
    encrypted = GENERATOR.meters[2]
    core = MeterTelegram(encrypted.id, bytes(16), framing="hex", crc="auto", now=0.0, wait=60.0)
    core.receive_data(line(GENERATOR.telegram(2, AT)), now=1.0)
    assert core.done
    with pytest.raises(DecryptionError):
        core.result()


def test_a_telegram_cut_short_in_its_records_gives_the_complete_records() -> None:
    ours = GENERATOR.meters[3]
    whole = GENERATOR.telegram(3, AT)
    damaged = bytearray(whole)
    del damaged[-3:]  # the last record cut short: the records before it are still the meter's
    damaged[0] = len(damaged) - 1
    core = MeterTelegram(ours.id, None, framing="hex", crc="absent", now=0.0, wait=3.0, meter_id="w")
    core.receive_data(line(bytes(damaged)), now=1.0)
    assert core.done
    got = core.result()
    full = MeterTelegram(ours.id, None, framing="hex", crc="auto", now=0.0, wait=3.0)
    full.receive_data(line(whole), now=1.0)
    expected = full.result().records
    assert got.records == expected[: len(got.records)] and len(got.records) == len(expected) - 1
    assert len(got.unparsed) == 1 and got.unparsed[0].offset == len(damaged) - len(got.unparsed[0].data)


def test_a_damaged_telegram_of_ours_is_named_in_the_timeout() -> None:
    ours = GENERATOR.meters[3]
    damaged = bytearray(GENERATOR.telegram(3, AT)[:13])  # the transport header cut short: nothing to read
    damaged[0] = len(damaged) - 1
    core = MeterTelegram(ours.id, None, framing="hex", crc="absent", now=0.0, wait=3.0, meter_id="w")
    core.receive_data(line(bytes(damaged)), now=1.0)
    assert not core.done
    core.handle_timeout(3.0)
    with pytest.raises(MeterTimeoutError, match=f"no telegram from wM-Bus meter {ours.id} within 3 s; last") as info:
        core.result()
    assert info.value.meter_id == "w"
