"""The in-memory medium pair keeps the Medium contract: timeouts, bounded buffers, close, hooks."""

from __future__ import annotations

import asyncio

import pytest

from gxcore.errors import ConfigurationError, MediaError, MeterTimeoutError
from gxcore.media import Direction, LineChange, Medium, MemoryMedium, memory_pair


def test_both_ends_are_media_named_after_the_pair() -> None:
    near, far = memory_pair("meter-7")
    assert isinstance(near, Medium)
    assert isinstance(far, Medium)
    assert near.describe() == "memory://meter-7"
    assert far.describe() == "memory://meter-7/peer"
    assert near.peer is far
    assert far.peer is near
    assert not near.can_set_line


async def test_bytes_cross_in_both_directions_and_reads_take_at_most_max_bytes() -> None:
    near, far = memory_pair()
    await near.send(b"\x10\x40\x01\x41\x16")
    assert await far.receive(3, timeout=1) == b"\x10\x40\x01"
    assert await far.receive(100, timeout=1) == b"\x41\x16"
    await far.send(b"\xe5")
    assert await near.receive_exactly(1, timeout=1) == b"\xe5"


async def test_a_read_waits_for_bytes_sent_later() -> None:
    near, far = memory_pair()

    async def answer_later() -> None:
        await asyncio.sleep(0.02)
        await far.send(b"late")

    task = asyncio.create_task(answer_later())
    assert await near.receive(10, timeout=1) == b"late"
    await task


async def test_a_quiet_line_times_out_and_consumes_nothing() -> None:
    near, far = memory_pair("m")
    with pytest.raises(MeterTimeoutError, match=r"memory://m: no data within 0\.02 s"):
        await near.receive(10, timeout=0.02)
    await far.send(b"ab")
    with pytest.raises(MeterTimeoutError, match="3 bytes not received"):
        await near.receive_exactly(3, timeout=0.02)
    assert await near.receive_exactly(2, timeout=0) == b"ab"  # nothing was lost to the timeouts


async def test_close_lets_the_peer_read_what_was_sent_then_fails_it() -> None:
    near, far = memory_pair()
    await far.send(b"bye")
    await far.close()
    await far.close()  # idempotent
    assert await near.receive(10, timeout=1) == b"bye"
    with pytest.raises(MediaError, match="closed by peer"):
        await near.receive(10, timeout=1)
    with pytest.raises(MediaError, match="closed by peer"):
        await near.send(b"x")
    with pytest.raises(MediaError, match="closed locally"):
        await far.receive(1, timeout=1)
    with pytest.raises(MediaError, match="does not reconnect"):
        await far.open()


async def test_close_wakes_a_waiting_reader_at_once() -> None:
    near, far = memory_pair()
    reader = asyncio.create_task(near.receive(10, timeout=5))
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await far.close()
    with pytest.raises(MediaError, match="closed by peer"):
        await reader
    assert loop.time() - started < 1


async def test_buffers_are_bounded_and_a_peer_that_does_not_read_times_the_send_out() -> None:
    near, far = memory_pair(buffer_limit=256)
    await near.send(bytes(200))
    with pytest.raises(MeterTimeoutError, match=r"not taken within 0\.02 s"):
        await near.send(bytes(100), timeout=0.02)
    assert len(await far.receive(1000, timeout=1)) == 256  # never more than the limit is held


async def test_a_send_larger_than_the_buffer_goes_as_the_peer_reads() -> None:
    near, far = memory_pair(buffer_limit=256)
    sender = asyncio.create_task(near.send(bytes(range(256)) * 3, timeout=1))
    got = bytearray()
    while len(got) < 768:
        got += await far.receive(100, timeout=1)
    await sender
    assert bytes(got) == bytes(range(256)) * 3


async def test_one_reader_at_a_time() -> None:
    near, _far = memory_pair()
    first = asyncio.create_task(near.receive(1, timeout=1))
    await asyncio.sleep(0)
    with pytest.raises(MediaError, match="one reader at a time"):
        await near.receive(1, timeout=1)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_drain_input_discards_until_quiet() -> None:
    traffic: list[tuple[Direction, bytes]] = []
    near, far = memory_pair(on_traffic=lambda d, b: traffic.append((d, b)))
    await far.send(b"noise")
    assert await near.drain_input(0.02) == 5
    assert traffic == [("discard", b"noise")]
    with pytest.raises(MeterTimeoutError):
        await near.receive(1, timeout=0.01)


async def test_traffic_hooks_see_each_end_and_can_count_bytes() -> None:
    seen: list[tuple[str, Direction, bytes]] = []
    near, far = memory_pair(
        on_traffic=lambda d, b: seen.append(("near", d, b)),
        peer_on_traffic=lambda d, b: seen.append(("far", d, b)),
    )
    await near.send(b"/?!\r\n")
    await far.receive(64, timeout=1)
    await far.send(b"/GXS5\r\n")
    await near.receive(64, timeout=1)
    assert seen == [
        ("near", "tx", b"/?!\r\n"),
        ("far", "rx", b"/?!\r\n"),
        ("far", "tx", b"/GXS5\r\n"),
        ("near", "rx", b"/GXS5\r\n"),
    ]


async def test_line_settings_only_on_a_serial_pair_and_recorded() -> None:
    tcp_like, _ = memory_pair()
    with pytest.raises(MediaError, match="cannot be changed"):
        await tcp_like.set_line(baudrate=9600)
    near, _ = memory_pair(serial=True)
    assert near.can_set_line
    await near.set_line(baudrate=9600)
    await near.set_line(parity="E", bytesize=7)
    assert near.line_changes == [LineChange(9600, None, None, None), LineChange(None, 7, "E", None)]


async def test_bad_arguments_are_configuration_errors() -> None:
    near, _ = memory_pair(buffer_limit=256)
    with pytest.raises(ConfigurationError):
        await near.receive(0, timeout=1)
    with pytest.raises(ConfigurationError):
        await near.receive_exactly(257, timeout=1)
    with pytest.raises(ConfigurationError):
        memory_pair(buffer_limit=10)


async def test_async_with_closes_the_end() -> None:
    near, far = memory_pair()
    async with near as opened:
        assert isinstance(opened, MemoryMedium)
        assert opened.is_open
    assert not near.is_open
    with pytest.raises(MediaError, match="closed by peer"):
        await far.receive(1, timeout=1)
