"""DLMS/COSEM over the media layer: HDLC on a serial line (a pty pair) and the wrapper over UDP.

The meter is the simulator's sans-IO core; the fronts below pump bytes between it and the
far end of a pseudo-terminal or a local UDP socket (test code only).
"""

from __future__ import annotations

import asyncio
import os
import time
import tty
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import cast

import pytest

from gxami_meterlab.dlms.server import CosemMeterCore
from gxami_meterlab.simulators.dlms import (
    EVENT_LOGS,
    LOAD_PROFILE,
    OBJECTS,
    PROFILES,
    REGISTERS,
    DlmsFleetSimulator,
    _MeterValues,
    expected_profile,
    expected_register,
)
from gxami_meterlab.simulators.dlms_memory import memory_media
from gxcore.drivers import MeterTarget, ReadRequest
from gxcore.drivers.dlms.control import run_dlms_command
from gxcore.drivers.dlms.driver import DlmsDriver
from gxcore.drivers.dlms.reader import DlmsSession
from gxcore.errors import ConfigurationError, GxError, MediaError, MeterTimeoutError
from gxcore.profiles.model import BUILTIN_DIR, load_profile
from gxcore.protocols.dlms.parameters import CosemValue, DlmsParameters, Interface, ProfileRange

NOW = datetime(2025, 3, 4, 10, 17, 45, tzinfo=UTC)
SEED, INDEX = 5, 2
HDLC = DlmsParameters(interface="hdlc")
WRAPPER = DlmsParameters()
PROFILE = load_profile(Path(BUILTIN_DIR) / "generic-dlms.yaml")
START = NOW - timedelta(hours=2)


def meter_core(interface: Interface) -> CosemMeterCore:
    """The simulator's meter SEED/INDEX, as a sans-IO core speaking ``interface``."""
    return CosemMeterCore(
        _MeterValues(SEED, INDEX), REGISTERS, PROFILES + EVENT_LOGS, objects=OBJECTS, interface=interface
    )


class MeterFront:
    """What a meter does with the bytes a front hands it: answer through the core, or stay silent."""

    def __init__(self, interface: Interface, *, silent: bool = False) -> None:
        self.core = meter_core(interface)
        self.silent = silent
        self.received = 0

    def answer(self, data: bytes) -> bytes:
        self.received += len(data)
        if self.silent:
            return b""
        try:
            return self.core.receive_data(data, NOW)
        except GxError:
            return b""  # a real meter ignores what it cannot parse


@contextmanager
def serial_meter(front: MeterFront) -> Iterator[str]:
    """A meter on the master side of a pty; yields the ``serial://`` URL of the slave side (9600 8N1)."""
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    loop = asyncio.get_running_loop()

    def readable() -> None:
        try:
            data = os.read(master, 4096)
        except (BlockingIOError, OSError):
            return
        out = front.answer(data)
        view = memoryview(out)
        while view:  # replies are a few hundred bytes: the pty buffer takes them whole
            view = view[os.write(master, view) :]

    loop.add_reader(master, readable)
    try:
        yield f"serial://{os.ttyname(slave)}?baud=9600&bytesize=8&parity=N&stopbits=1"
    finally:
        loop.remove_reader(master)
        os.close(master)
        os.close(slave)


class _UdpMeter(asyncio.DatagramProtocol):
    def __init__(self, front: MeterFront) -> None:
        self.front = front
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's selector datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        out = self.front.answer(data)
        if out and self.transport is not None:
            self.transport.sendto(out, addr)


@asynccontextmanager
async def udp_meter(front: MeterFront) -> AsyncIterator[str]:
    """A meter on a local UDP port; yields its ``udp://`` URL."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: _UdpMeter(front), local_addr=("127.0.0.1", 0))
    try:
        yield f"udp://127.0.0.1:{transport.get_extra_info('sockname')[1]}"
    finally:
        transport.close()


@asynccontextmanager
async def meter(kind: str, *, silent: bool = False) -> AsyncIterator[tuple[str, MeterFront]]:
    """A meter on a serial line (HDLC) or on UDP (wrapper); yields its URL and front."""
    if kind == "serial":
        front = MeterFront("hdlc", silent=silent)
        with serial_meter(front) as url:
            yield url, front
    else:
        front = MeterFront("wrapper", silent=silent)
        async with udp_meter(front) as url:
            yield url, front


def check_result_values(registers: dict[str, float], profile_rows: dict[datetime, dict[str, float]]) -> None:
    assert registers == {q: expected_register(SEED, INDEX, q, NOW) for q in registers}
    assert len(registers) == len(REGISTERS)
    assert sorted(profile_rows.items()) == expected_profile(SEED, INDEX, START, NOW)
    assert len(profile_rows) == 8  # two hours of 15-minute rows, the ends included


@pytest.mark.parametrize("kind", ["serial", "udp"])
async def test_registers_clock_and_load_profile(kind: str) -> None:
    async with (
        meter(kind) as (url, _front),
        DlmsSession(url, HDLC if kind == "serial" else WRAPPER, timeout=2) as session,
    ):
        meter_time = await session.read_clock()
        registers = {CosemValue(r.obis).quantity: (await session.read_value(CosemValue(r.obis)))[0] for r in REGISTERS}
        profile = await session.read_profile(ProfileRange(LOAD_PROFILE, START, NOW))
    assert meter_time == NOW
    rows: dict[datetime, dict[str, float]] = {}
    for r in profile:
        rows.setdefault(r.timestamp, {})[r.quantity] = r.value
    check_result_values(registers, rows)


@pytest.mark.parametrize("kind", ["serial", "udp"])
async def test_silent_meter_times_out_within_the_timeout(kind: str) -> None:
    async with meter(kind, silent=True) as (url, front):
        began = time.monotonic()
        with pytest.raises(MeterTimeoutError, match=r"no reply within 0\.3 s"):
            async with DlmsSession(url, HDLC if kind == "serial" else WRAPPER, timeout=0.3):
                pass
        elapsed = time.monotonic() - began
    assert front.received > 0  # the request went out over the medium
    assert 0.25 <= elapsed < 1.5


@pytest.mark.parametrize("kind", ["serial", "udp"])
async def test_a_timeout_breaks_the_session(kind: str) -> None:
    async with meter(kind) as (url, front):
        params = HDLC if kind == "serial" else WRAPPER
        async with DlmsSession(url, params, timeout=0.3) as session:
            assert await session.read_clock() == NOW
            front.silent = True
            with pytest.raises(MeterTimeoutError):
                await session.read_clock()
            assert session.broken
            front.silent = False
            # A broken link is never reused, not even for the release on exit.
            with pytest.raises(GxError):
                await session.read_clock()
            sent = front.received
        assert front.received == sent  # no RLRQ/DISC went out over the broken link


async def test_driver_reads_the_generic_profile_over_serial_and_udp() -> None:
    request = ReadRequest(purposes=frozenset({"billing", "load-profile"}), profile_from=START, profile_to=NOW)
    for kind in ("serial", "udp"):
        async with meter(kind) as (url, _front):
            # generic-dlms says interface: wrapper; on a serial line the medium makes it HDLC.
            result = await DlmsDriver().read(MeterTarget(f"M-{kind}", url), PROFILE, request, timeout=2)
        assert result.meter_time == NOW
        billing = {r.quantity: r.value for r in result.readings if "profile" not in r.extra}
        assert billing["1-0:1.8.0"] == Decimal(expected_register(SEED, INDEX, "1-0:1.8.0", NOW)) / 1000
        stamps = {r.timestamp for r in result.readings if "profile" in r.extra}
        assert sorted(stamps) == [at for at, _ in expected_profile(SEED, INDEX, START, NOW)]


async def test_driver_still_reads_tcp_urls() -> None:
    request = ReadRequest(purposes=frozenset({"billing"}))
    async with DlmsFleetSimulator(3, seed=SEED, clock=lambda: NOW) as sim:
        url = f"tcp://127.0.0.1:{sim.meters[INDEX].port}"
        result = await DlmsDriver().read(MeterTarget("M-tcp", url), PROFILE, request, timeout=2)
        async with DlmsSession(url, WRAPPER, timeout=2) as session:
            energy, unit = await session.read_value(CosemValue("1.0.1.8.0.255"))
    got = {r.quantity: r.value for r in result.readings}
    assert got["1-0:1.8.0"] == Decimal(expected_register(SEED, INDEX, "1-0:1.8.0", NOW)) / 1000
    assert (energy, unit) == (expected_register(SEED, INDEX, "1-0:1.8.0", NOW), "Wh")


async def test_clock_sync_over_serial() -> None:
    later = NOW + timedelta(minutes=3)
    async with meter("serial") as (url, _front):
        result = await run_dlms_command(url, HDLC, "clock-sync", timeout=2, clock=lambda: later)
    assert result.meter_time_before == NOW
    assert result.meter_time_after == later


async def test_read_supply_over_udp() -> None:
    async with meter("udp") as (url, _front):
        result = await run_dlms_command(url, WRAPPER, "read-supply", timeout=2)
    assert result.supply is not None and result.supply.output_state


@pytest.mark.parametrize(
    ("url", "params", "match"),
    [
        ("serial:///dev/ttyUSB0", WRAPPER, "serial:// uses interface 'hdlc'"),
        ("udp://127.0.0.1:4059", HDLC, "udp:// uses interface 'wrapper'"),
        ("listen://0.0.0.0:4059", WRAPPER, "tcp://, udp:// or serial://"),
        ("http://meter:80", WRAPPER, "scheme must be one of"),
    ],
)
def test_unusable_url_or_framing_fails_before_any_io(url: str, params: DlmsParameters, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        DlmsSession(url, params, timeout=1)


async def test_driver_rejects_a_meter_option_contradicting_the_medium() -> None:
    target = MeterTarget("M-1", "serial:///dev/does-not-exist", {"interface": "wrapper"})
    with pytest.raises(ConfigurationError, match=r"M-1.*interface 'hdlc'"):
        await DlmsDriver().read(target, PROFILE, ReadRequest(), timeout=1)
    with pytest.raises(ConfigurationError, match="M-2"):
        await DlmsDriver().read(MeterTarget("M-2", "listen://0.0.0.0:1"), PROFILE, ReadRequest(), timeout=1)


async def test_missing_serial_device_is_a_media_error() -> None:
    with pytest.raises(MediaError):
        async with DlmsSession("serial:///dev/gxami-no-such-port", HDLC, timeout=1):
            pass


def test_meter_keys_name_the_medium() -> None:
    # TCP keys by host:port, as sessions always have, so stored invocation counters keep their meter.
    assert DlmsSession("tcp://10.0.0.5:4059", WRAPPER, timeout=1).meter_key == "10.0.0.5:4059"
    serial = DlmsSession("serial:///dev/ttyUSB0?baud=9600", HDLC, timeout=1)
    assert serial.meter_key == "serial:///dev/ttyUSB0"
    assert DlmsSession("udp://h:4059", WRAPPER, timeout=1, meter_key="SIM-1").meter_key == "SIM-1"


async def test_driver_and_commands_run_over_a_handed_in_medium() -> None:
    """The ``media`` seam: the driver and commands reach an in-process meter core, no sockets."""
    urls: list[str] = []

    def meter_for(url: str) -> CosemMeterCore:
        urls.append(url)
        return meter_core("wrapper")

    media = memory_media(meter_for, clock=lambda: NOW)
    request = ReadRequest(purposes=frozenset({"billing", "load-profile"}), profile_from=START, profile_to=NOW)
    url = "tcp://meter.invalid:4059"  # never resolved: the medium is in memory
    result = await DlmsDriver(media=media).read(MeterTarget("M-mem", url), PROFILE, request, timeout=2)
    assert result.meter_time == NOW
    billing = {r.quantity: r.value for r in result.readings if "profile" not in r.extra}
    assert billing["1-0:1.8.0"] == Decimal(expected_register(SEED, INDEX, "1-0:1.8.0", NOW)) / 1000
    stamps = {r.timestamp for r in result.readings if "profile" in r.extra}
    assert sorted(stamps) == [at for at, _ in expected_profile(SEED, INDEX, START, NOW)]
    supply = await run_dlms_command(url, WRAPPER, "read-supply", timeout=2, media=media)
    assert supply.supply is not None and supply.supply.output_state
    assert urls == [url, url]  # one medium opened per association, for the meter's URL


async def test_a_silent_in_memory_meter_times_out() -> None:
    class Silent:
        def receive_data(self, data: bytes, now: datetime) -> bytes:
            return b""

    with pytest.raises(MeterTimeoutError, match="no reply"):
        async with DlmsSession("tcp://m:1", WRAPPER, timeout=0.5, media=memory_media(lambda url: Silent())):
            pass


def test_one_read_path_and_one_url_form() -> None:
    """Issue 7: the second read API, the host/port twins and TcpLink stay gone."""
    import gxcore.protocols.dlms
    from gxcore.drivers.dlms import control, reader, transport
    from gxcore.protocols.dlms import parameters

    gone = {
        gxcore.protocols.dlms: (
            "read_dlms",
            "read_dlms_url",
            "DlmsReadRequest",
            "DlmsReadResult",
            "run_dlms_command_url",
        ),
        reader: ("read_dlms", "read_dlms_url"),
        control: ("run_dlms_command_url",),
        parameters: ("DlmsReadRequest", "DlmsReadResult", "ReadFailure"),
        transport: ("TcpLink",),
    }
    assert {m.__name__: [n for n in names if hasattr(m, n)] for m, names in gone.items()} == {
        m.__name__: [] for m in gone
    }
    assert not hasattr(DlmsSession, "for_url")
    with pytest.raises(ConfigurationError, match="scheme must be one of"):
        DlmsSession("127.0.0.1", WRAPPER, timeout=1)  # a host is not a meter URL
