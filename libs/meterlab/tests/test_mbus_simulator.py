"""The wired M-Bus simulator: determinism, slave behaviour, and the TCP gateway with a real master."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from gxami_meterlab.simulators.mbus import MBusBus, MBusTcpGateway, register_value
from gxcore.errors import MediaError
from gxcore.protocols.mbus import decode_mbus_telegram
from gxcore.protocols.mbus.frame import LongFrame, decode_frame, req_ud2, select_secondary, snd_nke, snd_ud
from gxcore.protocols.mbus.master import Event, MasterConfig, MBusMaster, ReadComplete


def test_same_seed_same_bus_and_bytes() -> None:
    first, second = MBusBus(seed=3, count=8), MBusBus(seed=3, count=8)
    assert first.meters == second.meters
    assert first.respond(req_ud2(1, True)) == second.respond(req_ud2(1, True))
    assert MBusBus(seed=4, count=8).meters != first.meters
    assert len({m.secondary for m in first.meters}) == 8


def test_values_are_pure_functions_of_seed_index_and_instant() -> None:
    noon = datetime(2024, 1, 15, 12, tzinfo=UTC)
    assert register_value(1, 2, noon) == register_value(1, 2, noon)
    assert register_value(1, 2, noon) < register_value(1, 2, noon.replace(hour=13))
    clock_values = iter([noon, noon.replace(hour=18)])
    bus = MBusBus(seed=1, count=3, clock=lambda: next(clock_values))
    early = decode_mbus_telegram(bus.respond(req_ud2(2, True)) or b"")
    late = decode_mbus_telegram(bus.respond(req_ud2(2, False)) or b"")
    assert late.records[0].value > early.records[0].value


def test_slave_link_rules() -> None:
    bus = MBusBus(seed=5, count=4)
    assert bus.respond(snd_nke(1)) == b"\xe5"
    assert bus.respond(snd_nke(99)) is None
    assert bus.respond(snd_nke(0xFF)) is None  # broadcast: nobody answers
    assert bus.respond(b"\x00\x01garbage") is None
    assert bus.respond(snd_ud(0xFD, 0x52, bytes.fromhex("A0000000FFFFFFFF"))) is None  # ID not BCD
    # selection by full secondary address acknowledges once; REQ_UD2 to 0xFD then reaches it
    assert bus.respond(select_secondary(bus.meters[2].secondary)) == b"\xe5"
    reply = bus.respond(req_ud2(0xFD, True))
    assert reply is not None
    assert decode_mbus_telegram(reply).secondary_address == str(bus.meters[2].secondary)
    # two slaves answering at once: their E5s merge, their long frames collide into garbage
    assert bus.respond(select_secondary(bus.meters[0].secondary.id_digits[:7] + "F" + "F" * 8)) == b"\xe5"
    collided = bus.respond(req_ud2(0xFD, True)) or b""
    consumed, frame = decode_frame(collided)
    assert len(collided) > 1
    assert not (isinstance(frame, LongFrame) and consumed == len(collided))


async def read_over_tcp(
    host: str, port: int, start: Callable[[MBusMaster, float], None], config: MasterConfig
) -> Event:
    """How a collector drives the sans-IO master over an M-Bus TCP gateway."""
    reader, writer = await asyncio.open_connection(host, port)
    clock = asyncio.get_running_loop().time
    master = MBusMaster(config)
    start(master, clock())
    try:
        while (event := master.next_event()) is None:
            if out := master.data_to_send():
                writer.write(out)
                await writer.drain()
            deadline = master.next_deadline()
            assert deadline is not None
            try:
                data = await asyncio.wait_for(reader.read(512), max(0.0, deadline - clock()))
            except TimeoutError:
                master.handle_timeout(clock())
                continue
            if not data:
                raise MediaError("gateway closed the connection")
            master.receive_data(data, clock())
        return event
    finally:
        writer.close()
        await writer.wait_closed()


async def test_tcp_gateway_serves_primary_and_secondary_reads() -> None:
    bus = MBusBus(seed=11, count=6)
    config = MasterConfig(reply_timeout=1.0)
    async with MBusTcpGateway(bus, port=0) as gateway:
        assert gateway.port > 0
        event = await asyncio.wait_for(
            read_over_tcp("127.0.0.1", gateway.port, lambda m, now: m.read_primary(4, now), config), 10
        )
        assert isinstance(event, ReadComplete)
        assert len(event.telegrams) == 3
        target = bus.meters[1].secondary
        event = await asyncio.wait_for(
            read_over_tcp("127.0.0.1", gateway.port, lambda m, now: m.read_secondary(target, now), config), 10
        )
        assert isinstance(event, ReadComplete)
        assert event.telegrams[0].secondary_address == str(target)
        assert gateway.requests >= 6
    with pytest.raises(RuntimeError):
        _ = gateway.port


async def test_tcp_gateway_ignores_garbage_and_keeps_serving() -> None:
    bus = MBusBus(seed=11, count=2)
    async with MBusTcpGateway(bus) as gateway:
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(b"\x00\x42\x99" + snd_nke(1))
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(1), 5) == b"\xe5"
        writer.close()
        await writer.wait_closed()
