"""SerialPort over a pseudo-terminal pair: the slave is the port, the master plays the meter."""

from __future__ import annotations

import asyncio
import termios
import time

import pytest

from gxcore.errors import ConfigurationError, MediaError, MeterTimeoutError
from gxcore.media import Medium, RS485Direction, SerialPort, SerialSettings, modbus_rtu_silence, open_medium

from .conftest import PtyPeer


def port_for(peer: PtyPeer, **kwargs: object) -> SerialPort:
    return SerialPort(SerialSettings(peer.path, **kwargs))  # type: ignore[arg-type]  # test shorthand


async def test_send_and_receive_at_2400_8e1(pty_peer: PtyPeer) -> None:
    medium = port_for(pty_peer, baudrate=2400, parity="E")
    assert isinstance(medium, Medium)
    assert medium.can_set_line
    assert medium.describe() == f"serial {pty_peer.path} 2400 8E1"
    async with medium:
        await medium.send(b"\x10\x40\x01\x41\x16")
        assert await pty_peer.read_exactly(5) == b"\x10\x40\x01\x41\x16"
        pty_peer.write(b"\xe5")
        assert await medium.receive(10, timeout=2) == b"\xe5"
        pty_peer.write(bytes(range(256)))
        assert await medium.receive_exactly(256, timeout=2) == bytes(range(256))


async def test_receive_timeout_then_late_bytes_arrive(pty_peer: PtyPeer) -> None:
    async with port_for(pty_peer) as medium:
        started = time.monotonic()
        with pytest.raises(MeterTimeoutError, match=r"no data within 0\.15 s"):
            await medium.receive(10, timeout=0.15)
        assert 0.14 <= time.monotonic() - started < 0.7
        pty_peer.write(b"late")
        assert await medium.receive_exactly(4, timeout=2) == b"late"


async def test_drain_input_discards_late_bytes(pty_peer: PtyPeer) -> None:
    async def straggler() -> None:
        for chunk in (b"\x68\x1f\x1f", b"\x68\x08\x01", b"\x72garbled"):
            await asyncio.sleep(0.03)
            pty_peer.write(chunk)

    async with port_for(pty_peer, baudrate=2400, parity="E") as medium:
        pty_peer.write(b"early")
        task = asyncio.create_task(straggler())
        assert await medium.drain_input(0.12) == 5 + 3 + 3 + 8
        await task
        pty_peer.write(b"\xe5")
        assert await medium.receive(10, timeout=2) == b"\xe5"


async def test_set_line_changes_baud_rate_mid_session(pty_peer: PtyPeer) -> None:
    # IEC 62056-21 mode C: sign on at 300 7E1, acknowledge with the new speed, switch to 9600.
    async with port_for(pty_peer, baudrate=300, bytesize=7, parity="E") as medium:
        await medium.send(b"/?!\r\n")
        assert await pty_peer.read_exactly(5) == b"/?!\r\n"
        await medium.send(b"\x06050\r\n")
        await medium.set_line(baudrate=9600)
        assert await pty_peer.read_exactly(6) == b"\x06050\r\n"  # sent before the switch
        assert medium.settings.baudrate == 9600
        assert medium.describe().endswith("9600 7E1")
        assert termios.tcgetattr(pty_peer.slave)[5] == termios.B9600  # the kernel's output speed
        pty_peer.write(b"\x02readout\x03")
        assert await medium.receive(100, timeout=2) == b"\x02readout\x03"
        await medium.set_line(baudrate=300)
        assert termios.tcgetattr(pty_peer.slave)[5] == termios.B300
        with pytest.raises(ConfigurationError, match="baudrate"):
            await medium.set_line(baudrate=0)
        with pytest.raises(ConfigurationError, match="parity"):
            await medium.set_line(parity="X")  # type: ignore[arg-type]  # a bad value on purpose
        assert medium.settings.baudrate == 300


@pytest.mark.parametrize(
    ("parity", "stopbits", "bytesize"), [("N", 1, 8), ("E", 1, 8), ("O", 1, 8), ("E", 1, 7), ("N", 2, 8), ("E", 2, 7)]
)
async def test_line_settings_are_accepted(pty_peer: PtyPeer, parity: str, stopbits: float, bytesize: int) -> None:
    async with port_for(pty_peer, baudrate=19200, parity=parity, stopbits=stopbits, bytesize=bytesize) as medium:
        assert medium.describe().endswith(f"19200 {bytesize}{parity}{stopbits:g}")
        cflag = termios.tcgetattr(pty_peer.slave)[2]
        assert bool(cflag & termios.CSTOPB) == (stopbits == 2)  # a pty keeps stop bits (parity it clears)
        await medium.send(b"ping")
        assert await pty_peer.read_exactly(4) == b"ping"


async def test_stop_bits_change_with_set_line(pty_peer: PtyPeer) -> None:
    async with port_for(pty_peer, baudrate=9600) as medium:
        await medium.set_line(stopbits=2)
        assert termios.tcgetattr(pty_peer.slave)[2] & termios.CSTOPB
        assert medium.settings.stopbits == 2


async def test_inter_frame_timeout_frames_by_silence(pty_peer: PtyPeer) -> None:
    async with port_for(pty_peer, baudrate=9600, inter_frame_timeout=0.08) as medium:
        pty_peer.write(b"\x01\x03\x04")
        reading = asyncio.create_task(medium.receive(256, timeout=2))
        await asyncio.sleep(0.02)  # shorter than the silence: the same frame
        pty_peer.write(b"\x00\x0a\x00\x0b\xcc\xdd")
        assert await reading == b"\x01\x03\x04\x00\x0a\x00\x0b\xcc\xdd"
        pty_peer.write(b"\x01\x83\x02\xc0\xf1")
        assert await medium.receive(256, timeout=2) == b"\x01\x83\x02\xc0\xf1"
        pty_peer.write(b"0123456789")
        assert await medium.receive(4, timeout=2) == b"0123"  # max_bytes bounds a frame too


async def test_exclusive_access(pty_peer: PtyPeer) -> None:
    async with port_for(pty_peer):
        with pytest.raises(MediaError, match="lock"):
            await port_for(pty_peer).open()


async def test_rs485_requested_on_a_port_without_it_fails_loudly(pty_peer: PtyPeer) -> None:
    medium = port_for(pty_peer, rs485=RS485Direction(delay_before_tx=0.001))
    assert medium.describe().endswith("rs485")
    with pytest.raises(MediaError, match="RS-485"):
        await medium.open()
    assert not medium.is_open
    settings = RS485Direction(rts_level_for_tx=False, rts_level_for_rx=True, delay_before_tx=0.002).to_pyserial()
    assert (settings.rts_level_for_tx, settings.rts_level_for_rx) == (False, True)
    assert (settings.delay_before_tx, settings.delay_before_rx) == (0.002, None)


async def test_missing_device_and_hang_up_are_media_errors(pty_peer: PtyPeer) -> None:
    with pytest.raises(MediaError, match="open: no such device"):
        await open_medium("serial:///dev/does-not-exist-gxami").open()
    async with port_for(pty_peer) as medium:
        pty_peer.hang_up()
        with pytest.raises(MediaError):
            await medium.receive(10, timeout=2)


def test_settings_validation_and_timing() -> None:
    with pytest.raises(ConfigurationError, match="bytesize"):
        SerialSettings("/dev/ttyS0", bytesize=9)
    with pytest.raises(ConfigurationError, match="stopbits"):
        SerialSettings("/dev/ttyS0", stopbits=3)
    with pytest.raises(ConfigurationError, match="delay_before_tx"):
        RS485Direction(delay_before_tx=5)
    assert SerialSettings("/dev/ttyS0", baudrate=2400, parity="E").char_time == pytest.approx(11 / 2400)
    assert SerialSettings("/dev/ttyS0", baudrate=9600).char_time == pytest.approx(10 / 9600)
    assert modbus_rtu_silence(9600) == pytest.approx(3.5 * 11 / 9600)  # ~4.01 ms
    assert modbus_rtu_silence(38400) == 0.00175  # fixed above 19200 Bd (Modbus over serial line, 2.5.1.1)
    assert modbus_rtu_silence(115200, floor=0.02) == 0.02
