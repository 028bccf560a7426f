"""The one driver loop: what it sends, when it waits, what ``between`` sees, over a memory pair."""

from __future__ import annotations

import asyncio

import pytest

from gxcore.drivers.loop import drive
from gxcore.errors import ConfigurationError, MediaError, ProtocolError
from gxcore.media import memory_pair
from gxcore.protocols.iec62056_21 import Iec62056Session, SessionCore
from gxcore.protocols.mbus.master import MasterOperation, MBusMaster


class EchoUntil:
    """A scripted core: sends ``hello``, is done once ``want`` bytes came back; counts timeouts."""

    def __init__(self, want: int, now: float, *, wait: float = 0.05) -> None:
        self.want, self.wait = want, wait
        self.out = [b"hello"]
        self.got = bytearray()
        self.timeouts = 0
        self.deadline: float | None = now + wait

    @property
    def done(self) -> bool:
        return len(self.got) >= self.want or self.timeouts >= 2

    def data_to_send(self) -> bytes:
        return self.out.pop(0) if self.out else b""

    def receive_data(self, data: bytes, now: float) -> None:
        self.got += data

    def next_deadline(self) -> float | None:
        return self.deadline

    def handle_timeout(self, now: float) -> None:
        self.timeouts += 1
        self.deadline = now + self.wait


async def test_sends_then_feeds_received_bytes_until_done() -> None:
    near, far = memory_pair()
    clock = asyncio.get_running_loop().time
    core = EchoUntil(5, clock())

    async def echo() -> None:
        await far.send(await far.receive_exactly(5, timeout=1))

    peer = asyncio.create_task(echo())
    await drive(core, near, idle_timeout=1.0, clock=clock)
    await peer
    assert bytes(core.got) == b"hello"
    assert core.timeouts == 0


async def test_a_quiet_line_is_the_cores_timeout_not_an_exception() -> None:
    near, _far = memory_pair()
    clock = asyncio.get_running_loop().time
    core = EchoUntil(5, clock(), wait=0.01)
    await drive(core, near, idle_timeout=1.0, clock=clock)
    assert core.timeouts == 2


async def test_bytes_queued_behind_between_go_out_before_the_next_wait() -> None:
    near, far = memory_pair(serial=True)
    clock = asyncio.get_running_loop().time
    core = SessionCore(Iec62056Session(address="1"), clock())
    order: list[object] = []

    async def between() -> None:
        while (baud := core.take_baud()) is not None:
            order.append(baud)
            await near.set_line(baudrate=baud)

    async def meter() -> None:
        order.append(await far.receive(64, timeout=1))
        await far.close()  # a meter that hangs up after the sign-on

    peer = asyncio.create_task(meter())
    with pytest.raises(MediaError, match="closed by peer"):
        await drive(core, near, idle_timeout=1.0, clock=clock, between=between)
    await peer
    assert order == [300, b"/?1!\r\n"]  # 300 Bd set before the sign-on request is sent


async def test_a_core_that_stalls_is_a_protocol_error_not_a_hang() -> None:
    near, _far = memory_pair()
    operation = MasterOperation(MBusMaster())  # never started: awaits nothing
    await drive(operation, near, idle_timeout=1.0)
    with pytest.raises(ProtocolError, match="stalled in state idle"):
        operation.result()


async def test_idle_timeout_must_be_positive() -> None:
    near, _far = memory_pair()
    with pytest.raises(ConfigurationError, match="idle timeout"):
        await drive(EchoUntil(1, 0.0), near, idle_timeout=0)
