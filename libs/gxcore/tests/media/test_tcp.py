"""TcpClient against a local asyncio server: echo, timeouts, peer close, refused, drain, send bound."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from gxcore.errors import ConfigurationError, MediaError, MeterTimeoutError
from gxcore.media import Direction, Medium, TcpClient, TcpSettings

from .conftest import TcpPeer, echo


def client(port: int, **kwargs: float) -> TcpClient:
    return TcpClient(TcpSettings("127.0.0.1", port, **kwargs))  # type: ignore[arg-type]  # test shorthand


def free_port() -> int:
    """A port nobody listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_echo_round_trip_with_trace(tcp_peer: TcpPeer) -> None:
    port = await tcp_peer.start(echo)
    trace: list[tuple[Direction, bytes]] = []
    medium = TcpClient(TcpSettings("127.0.0.1", port), on_traffic=lambda d, b: trace.append((d, b)))
    assert isinstance(medium, Medium)
    async with medium:
        await medium.send(b"\x00\x01\x00\x10")
        assert await medium.receive_exactly(4, timeout=2) == b"\x00\x01\x00\x10"
        await medium.send(b"hello")
        assert await medium.receive(100, timeout=2) == b"hello"
    assert trace == [("tx", b"\x00\x01\x00\x10"), ("rx", b"\x00\x01\x00\x10"), ("tx", b"hello"), ("rx", b"hello")]
    assert medium.describe() == f"tcp 127.0.0.1:{port}"
    assert not medium.can_set_line


async def test_receive_timeout_is_bounded_and_loses_nothing(tcp_peer: TcpPeer) -> None:
    async def late(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(10)
        await asyncio.sleep(0.4)
        writer.write(b"late reply")
        await writer.drain()
        await reader.read(10)

    port = await tcp_peer.start(late)
    async with client(port) as medium:
        await medium.send(b"?")
        started = time.monotonic()
        with pytest.raises(MeterTimeoutError, match=r"no data within 0\.2 s"):
            await medium.receive(100, timeout=0.2)
        assert 0.19 <= time.monotonic() - started < 0.7
        assert await medium.receive(100, timeout=2) == b"late reply"


async def test_receive_exactly_timeout_consumes_nothing(tcp_peer: TcpPeer) -> None:
    gate = asyncio.Event()

    async def halves(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"abc")
        await gate.wait()
        writer.write(b"de")
        await reader.read(10)

    port = await tcp_peer.start(halves)
    async with client(port) as medium:
        with pytest.raises(MeterTimeoutError, match="5 bytes not received"):
            await medium.receive_exactly(5, timeout=0.15)
        gate.set()
        assert await medium.receive_exactly(5, timeout=2) == b"abcde"


async def test_peer_close_returns_pending_bytes_then_media_error(tcp_peer: TcpPeer) -> None:
    async def say_and_go(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"bye")
        await writer.drain()

    port = await tcp_peer.start(say_and_go)
    async with client(port) as medium:
        assert await medium.receive(100, timeout=2) == b"bye"
        with pytest.raises(MediaError, match="closed by peer"):
            await medium.receive(100, timeout=2)
        with pytest.raises(MediaError, match="closed by peer"):
            await medium.receive(100, timeout=2)  # and again: never b""


async def test_peer_close_mid_exact_read_reports_partial(tcp_peer: TcpPeer) -> None:
    async def short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"\x68\x05")
        await writer.drain()

    port = await tcp_peer.start(short)
    async with client(port) as medium:
        with pytest.raises(MediaError, match="after 2 of 8 bytes") as caught:
            await medium.receive_exactly(8, timeout=2)
        assert caught.value.frame == b"\x68\x05"


async def test_connection_refused_is_media_error_quickly() -> None:
    medium = client(free_port())
    started = time.monotonic()
    with pytest.raises(MediaError, match="connect: connection refused"):
        await medium.open()
    assert time.monotonic() - started < 1.0
    assert not medium.is_open


async def test_an_unknown_host_name_is_named_as_such() -> None:
    medium = TcpClient(TcpSettings("meter.invalid", 4059))  # .invalid never resolves (RFC 6761)
    with pytest.raises(MediaError, match="connect: host name not resolved"):
        await medium.open()


async def test_connect_timeout_is_meter_timeout() -> None:
    # A listening socket whose accept queue is full drops further SYNs: connect hangs.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        fillers = []
        try:
            for _ in range(4):
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", port))
                fillers.append(filler)
            await asyncio.sleep(0.05)
            started = time.monotonic()
            with pytest.raises((MeterTimeoutError, MediaError)) as caught:
                await client(port, connect_timeout=0.3).open()
            if isinstance(caught.value, MeterTimeoutError):
                assert 0.29 <= time.monotonic() - started < 0.9
                assert "no answer within 0.3 s" in str(caught.value)
        finally:
            for filler in fillers:
                filler.close()


async def test_send_to_a_peer_that_does_not_read_times_out(tcp_peer: TcpPeer) -> None:
    stop = asyncio.Event()

    async def deaf(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await stop.wait()

    port = await tcp_peer.start(deaf)
    async with client(port) as medium:
        started = time.monotonic()
        with pytest.raises(MeterTimeoutError, match=r"not taken within 0\.3 s"):
            await medium.send(b"\x00" * (64 << 20), timeout=0.3)
        assert time.monotonic() - started < 1.5
    stop.set()


async def test_drain_input_discards_late_bytes(tcp_peer: TcpPeer) -> None:
    async def late_burst(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(3):
            await asyncio.sleep(0.03)
            writer.write(b"stale")
        await reader.read(10)
        writer.write(b"fresh")
        await reader.read(10)

    port = await tcp_peer.start(late_burst)
    seen: list[tuple[Direction, bytes]] = []
    async with TcpClient(TcpSettings("127.0.0.1", port), on_traffic=lambda d, b: seen.append((d, b))) as medium:
        assert await medium.drain_input(0.15) == 15
        await medium.send(b"?")
        assert await medium.receive(100, timeout=2) == b"fresh"
    assert b"".join(data for direction, data in seen if direction == "discard") == b"stale" * 3


async def test_drain_input_gives_up_on_a_line_that_never_goes_quiet(tcp_peer: TcpPeer) -> None:
    async def chatter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            writer.write(b".")
            await writer.drain()
            await asyncio.sleep(0.02)

    port = await tcp_peer.start(chatter)
    async with client(port) as medium:
        started = time.monotonic()
        with pytest.raises(MediaError, match=r"not quiet for 0\.1 s within 0\.4 s"):
            await medium.drain_input(0.1, within=0.4)
        assert time.monotonic() - started < 0.7


async def test_reopen_is_a_new_connection_and_closed_medium_refuses_io(tcp_peer: TcpPeer) -> None:
    port = await tcp_peer.start(echo)
    medium = client(port)
    with pytest.raises(MediaError, match="not open"):
        await medium.receive(1, timeout=1)
    await medium.open()
    await medium.open()  # idempotent
    await medium.close()
    await medium.close()  # idempotent
    with pytest.raises(MediaError, match="not open"):
        await medium.send(b"x")
    async with medium:
        await medium.send(b"again")
        assert await medium.receive(10, timeout=2) == b"again"
    assert len(tcp_peer.writers) == 2


async def test_one_reader_at_a_time_and_bad_sizes(tcp_peer: TcpPeer) -> None:
    port = await tcp_peer.start(echo)
    async with client(port) as medium:
        first = asyncio.create_task(medium.receive(10, timeout=2))
        await asyncio.sleep(0.01)
        with pytest.raises(MediaError, match="one reader at a time"):
            await medium.receive(10, timeout=1)
        await medium.send(b"x")
        assert await first == b"x"
        with pytest.raises(ConfigurationError, match="max_bytes"):
            await medium.receive(0, timeout=1)
        with pytest.raises(ConfigurationError, match="buffer_limit"):
            await medium.receive_exactly(1 << 20, timeout=1)
        with pytest.raises(MediaError, match="cannot be changed"):
            await medium.set_line(baudrate=9600)


async def test_local_close_wakes_a_waiting_reader(tcp_peer: TcpPeer) -> None:
    port = await tcp_peer.start(echo)
    medium = client(port)
    await medium.open()
    waiting = asyncio.create_task(medium.receive(10, timeout=5))
    await asyncio.sleep(0.01)
    await medium.close()
    with pytest.raises(MediaError, match="closed locally"):
        await waiting


def test_settings_are_validated() -> None:
    with pytest.raises(ConfigurationError, match="port"):
        TcpSettings("127.0.0.1", 0)
    with pytest.raises(ConfigurationError, match="connect_timeout"):
        TcpSettings("127.0.0.1", 1, connect_timeout=0)
    with pytest.raises(ConfigurationError, match="buffer_limit"):
        TcpSettings("127.0.0.1", 1, buffer_limit=10)


async def test_close_with_output_stuck_is_bounded(tcp_peer: TcpPeer, monkeypatch: pytest.MonkeyPatch) -> None:
    stop = asyncio.Event()

    async def deaf(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await stop.wait()

    monkeypatch.setattr("gxcore.media.stream.CLOSE_TIMEOUT", 0.2)
    port = await tcp_peer.start(deaf)
    medium = client(port)
    await medium.open()
    assert medium._writer is not None
    medium._writer.write(b"\x00" * (32 << 20))  # queued beyond what the deaf peer's socket takes
    started = time.monotonic()
    await medium.close()
    assert time.monotonic() - started < 1.0
    stop.set()
