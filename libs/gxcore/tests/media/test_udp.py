"""UdpEndpoint against a local datagram peer: round trip, datagram boundaries, timeouts, refusal."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import cast

import pytest

from gxcore.errors import MediaError, MeterTimeoutError
from gxcore.media import Medium, UdpEndpoint, UdpSettings


class DatagramPeer(asyncio.DatagramProtocol):
    """Records what it gets; echoes unless told to answer with scripted datagrams."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.received: list[bytes] = []
        self.script: list[bytes] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # the selector's class is not a subclass

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append(data)
        assert self.transport is not None
        for reply in self.script if self.script is not None else [data]:
            self.transport.sendto(reply, addr)


@pytest.fixture
async def peer() -> AsyncIterator[tuple[DatagramPeer, int]]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(DatagramPeer, local_addr=("127.0.0.1", 0))
    yield protocol, transport.get_extra_info("sockname")[1]
    transport.close()
    await asyncio.sleep(0)


async def test_round_trip(peer: tuple[DatagramPeer, int]) -> None:
    protocol, port = peer
    medium = UdpEndpoint(UdpSettings("127.0.0.1", port))
    assert isinstance(medium, Medium)
    async with medium:
        await medium.send(b"\x00\x01\x00\x01\x00\x10\x00\x02\xc0\x01")
        assert await medium.receive(1024, timeout=2) == b"\x00\x01\x00\x01\x00\x10\x00\x02\xc0\x01"
    assert protocol.received == [b"\x00\x01\x00\x01\x00\x10\x00\x02\xc0\x01"]
    assert medium.describe() == f"udp 127.0.0.1:{port}"


async def test_receive_never_mixes_datagrams_and_loses_nothing(peer: tuple[DatagramPeer, int]) -> None:
    protocol, port = peer
    protocol.script = [b"first-datagram", b"", b"second"]
    async with UdpEndpoint(UdpSettings("127.0.0.1", port)) as medium:
        await medium.send(b"go")
        assert await medium.receive(5, timeout=2) == b"first"
        assert await medium.receive(100, timeout=2) == b"-datagram"  # the rest, not merged with the next
        assert await medium.receive(100, timeout=2) == b"second"  # the empty datagram was skipped
        await medium.send(b"go")
        assert await medium.receive_exactly(20, timeout=2) == b"first-datagramsecond"


async def test_timeout_and_exact_timeout_consume_nothing(peer: tuple[DatagramPeer, int]) -> None:
    protocol, port = peer
    protocol.script = [b"abc"]
    async with UdpEndpoint(UdpSettings("127.0.0.1", port)) as medium:
        started = time.monotonic()
        with pytest.raises(MeterTimeoutError, match=r"no datagram within 0\.15 s"):
            await medium.receive(10, timeout=0.15)
        assert 0.14 <= time.monotonic() - started < 0.7
        await medium.send(b"go")
        with pytest.raises(MeterTimeoutError):
            await medium.receive_exactly(6, timeout=0.15)
        await medium.send(b"go")
        assert await medium.receive_exactly(6, timeout=2) == b"abcabc"


async def test_port_unreachable_is_media_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with UdpEndpoint(UdpSettings("127.0.0.1", port)) as medium:
        await medium.send(b"anyone?")
        started = time.monotonic()
        with pytest.raises(MediaError, match="refused"):
            await medium.receive(10, timeout=2)
        assert time.monotonic() - started < 1.0


async def test_queue_is_bounded_and_drain_discards(peer: tuple[DatagramPeer, int]) -> None:
    protocol, port = peer
    protocol.script = [bytes([n]) * 10 for n in range(10)]
    async with UdpEndpoint(UdpSettings("127.0.0.1", port, max_datagrams=4)) as medium:
        await medium.send(b"flood")
        await asyncio.sleep(0.1)
        assert medium.dropped == 6
        assert await medium.drain_input(0.05) == 40
        protocol.script = [b"fresh"]
        await medium.send(b"again")
        assert await medium.receive(100, timeout=2) == b"fresh"


async def test_oversized_datagram_and_closed_endpoint(peer: tuple[DatagramPeer, int]) -> None:
    _, port = peer
    medium = UdpEndpoint(UdpSettings("127.0.0.1", port))
    with pytest.raises(MediaError, match="not open"):
        await medium.send(b"x")
    async with medium:
        with pytest.raises(MediaError, match="at most 65507"):
            await medium.send(b"\x00" * 70_000)
    with pytest.raises(MediaError, match="not open"):
        await medium.receive(1, timeout=1)
