"""Invocation counters across stores and processes: atomic windows, the margin, meter locks, the nonce detector."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import sys
import textwrap
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gxami_meterlab.dlms.meter_security import MeterCounters
from gxami_meterlab.dlms.server import CosemMeterCore
from gxami_meterlab.simulators.dlms import (
    PROFILES,
    REGISTERS,
    DlmsFleetSimulator,
    NonceReuseError,
    _MeterValues,
    client_security,
    expected_register,
    meter_security,
)
from gxcore.drivers import MeterTarget, ReadRequest
from gxcore.drivers.dlms.counter_file import JsonInvocationCounters
from gxcore.drivers.dlms.driver import DlmsDriver
from gxcore.drivers.dlms.reader import DlmsSession
from gxcore.errors import AccessDeniedError, ConfigurationError
from gxcore.profiles.model import BUILTIN_DIR, load_profile
from gxcore.protocols.dlms import CosemValue, DlmsParameters
from gxcore.protocols.dlms.invocation import (
    COUNTER_WINDOW,
    MAX_COUNTER,
    METER_COUNTER_MARGIN,
    InvocationCounterStore,
    MemoryInvocationCounters,
    MeterBusyError,
    MeterHold,
    counter_key,
)
from gxcore.protocols.dlms.session import DlmsClientCore, Exchange
from gxcore.secrets import Secret

SEED = 5
NOW = datetime(2024, 9, 14, 8, 30, 12, tzinfo=UTC)
GXCORE_SRC = str(Path(__file__).resolve().parents[2] / "src")


def params(**kwargs: object) -> DlmsParameters:
    return DlmsParameters(
        client_address=1,
        authentication="high-gmac",
        security=client_security(SEED, 0),
        **kwargs,  # type: ignore[arg-type]
    )


async def read_energy(port: int, p: DlmsParameters, **session: Any) -> float:
    """One association over TCP, as the collector's read makes: the clock, then 1-0:1.8.0's value."""
    async with DlmsSession(f"tcp://127.0.0.1:{port}", p, **session) as s:
        await s.read_clock()
        return (await s.read_value(CosemValue("1.0.1.8.0.255")))[0]


def core(store: InvocationCounterStore) -> DlmsClientCore:
    return DlmsClientCore(params(), counters=store, meter_key="SIM-0")


def sent_counter(c: DlmsClientCore) -> int:
    """Build one protected APDU (the AARQ's ciphered InitiateRequest); the counter it carried."""
    c.associate()
    assert c.invocation_counter is not None
    return c.invocation_counter - 1


def secrets() -> list[str]:
    s = client_security(SEED, 0)
    return [s.block_cipher_key.reveal().hex(), s.authentication_key.reveal().hex()]


# -- the margin above the meter's counter --------------------------------------------------


def test_starting_from_the_meters_counter_jumps_the_margin() -> None:
    c = core(MemoryInvocationCounters())
    assert c.needs_meter_counter
    c.use_meter_counter(41)
    assert sent_counter(c) == 42 + METER_COUNTER_MARGIN


def test_a_meter_counter_below_ours_changes_nothing_and_one_above_jumps() -> None:
    store = MemoryInvocationCounters()
    store.advance(counter_key("SIM-0", 1, client_security(SEED, 0)), 500)
    c = core(store)
    assert not c.needs_meter_counter
    c.use_meter_counter(100)  # the meter is behind us (frames it never got): keep ours
    assert sent_counter(c) == 500
    again = core(store)
    again.use_meter_counter(10_000)  # someone else went past us: the margin above theirs
    assert sent_counter(again) == 10_001 + METER_COUNTER_MARGIN


def test_the_margin_never_runs_past_the_last_counter() -> None:
    c = core(MemoryInvocationCounters())
    with pytest.raises(AccessDeniedError, match="exhausted"):
        c.use_meter_counter(MAX_COUNTER - METER_COUNTER_MARGIN)


# -- atomic windows across stores and processes --------------------------------------------


def test_two_stores_on_one_file_never_hand_out_one_window(tmp_path: Path) -> None:
    """Two processes' stores on one state file, interleaved: every counter is used once."""
    path = tmp_path / "counters.json"
    first, second = core(JsonInvocationCounters(path)), core(JsonInvocationCounters(path))
    first.use_meter_counter(0)
    second.use_meter_counter(0)
    used = [sent_counter(c) for _ in range(COUNTER_WINDOW + 3) for c in (first, second)]
    assert len(used) == len(set(used))


def test_reservations_from_several_processes_at_once_are_disjoint(tmp_path: Path) -> None:
    path = tmp_path / "counters.json"
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {GXCORE_SRC!r})
        from gxcore.drivers.dlms.counter_file import JsonInvocationCounters
        store = JsonInvocationCounters(__import__("pathlib").Path({str(path)!r}))
        print(" ".join(str(store.reserve("m", 0, 10)) for _ in range(40)))
        """
    )
    workers = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) for _ in range(4)]
    starts = [int(s) for w in workers for s in w.communicate(timeout=60)[0].split()]
    assert all(w.returncode == 0 for w in workers)
    assert len(starts) == 160 and len(set(starts)) == 160
    assert all(s % 10 == 0 for s in starts)  # each a whole window of its own
    assert json.loads(path.read_text()) == {"m": 1600}


def test_a_store_refuses_bad_windows(tmp_path: Path) -> None:
    store = JsonInvocationCounters(tmp_path / "c.json")
    for floor, count in ((-1, 10), (MAX_COUNTER + 2, 10), (0, 0), (0, True)):
        with pytest.raises(ConfigurationError):
            store.reserve("m", floor, count)
    assert store.reserve("m", MAX_COUNTER, 10) == MAX_COUNTER
    with pytest.raises(AccessDeniedError, match="exhausted"):
        store.reserve("m", 0, 10)


# -- the meter lock ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "json"])
def test_a_meter_is_held_by_one_session_at_a_time(kind: str, tmp_path: Path) -> None:
    store: InvocationCounterStore = (
        MemoryInvocationCounters() if kind == "memory" else JsonInvocationCounters(tmp_path / "c.json")
    )
    held = store.try_hold("SIM-0")
    assert held is not None
    assert store.try_hold("SIM-0") is None
    other = store.try_hold("SIM-1")
    assert other is not None
    held.release()
    held.release()  # idempotent
    again = store.try_hold("SIM-0")
    assert again is not None
    again.release()
    other.release()


def test_a_meter_lock_dies_with_the_process_that_held_it(tmp_path: Path) -> None:
    path = tmp_path / "counters.json"
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {GXCORE_SRC!r})
        from gxcore.drivers.dlms.counter_file import JsonInvocationCounters
        hold = JsonInvocationCounters(__import__("pathlib").Path({str(path)!r})).try_hold("SIM-0")
        print("held" if hold is not None else "busy", flush=True)
        time.sleep(60)
        """
    )
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        store = JsonInvocationCounters(path)
        assert store.try_hold("SIM-0") is None  # another process holds it
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        hold = store.try_hold("SIM-0")
        assert hold is not None
        hold.release()
    finally:
        holder.kill()
        holder.wait(10)
        if holder.stdout is not None:
            holder.stdout.close()


# -- no ciphered session without a store ------------------------------------------------------


async def test_ciphered_sessions_need_a_store_and_say_so_without_secrets() -> None:
    with pytest.raises(ConfigurationError, match="invocation counter store") as missing:
        DlmsClientCore(params(), meter_key="SIM-0")
    with pytest.raises(ConfigurationError, match="invocation counter store"):
        DlmsSession("tcp://127.0.0.1:1", params(), timeout=1)
    profile = load_profile(Path(BUILTIN_DIR) / "generic-dlms.yaml")
    hgmac = profile.model_copy(
        update={"parameters": {**profile.parameters, "authentication": "high-gmac", "client_address": 1}}
    )
    keys = client_security(SEED, 0)
    target = MeterTarget(
        "SIM-0",
        "tcp://127.0.0.1:1",  # nothing listens: the store is missing before any connection
        {},
        {"key": keys.block_cipher_key, "auth_key": keys.authentication_key},
    )
    with pytest.raises(ConfigurationError, match="invocation counter store") as driver_missing:
        await DlmsDriver().read(target, hgmac, ReadRequest(), timeout=1)
    shown = (str(missing.value) + str(driver_missing.value)).lower()
    assert not [s for s in secrets() if s in shown]
    plain = DlmsClientCore(DlmsParameters(), meter_key="SIM-0")  # no security, no store needed
    assert plain.invocation_counter is None


# -- sessions over TCP in one process ---------------------------------------------------------


async def test_sessions_with_one_meter_wait_for_each_other(tmp_path: Path) -> None:
    store = JsonInvocationCounters(tmp_path / "counters.json")
    async with DlmsFleetSimulator(1, seed=SEED, clock=lambda: NOW, authentication="high-gmac") as sim:
        port = sim.meters[0].port
        # Two stores on one file (two processes' view), four sessions at once: all serialised.
        other = JsonInvocationCounters(tmp_path / "counters.json")
        results = await asyncio.gather(
            *(
                read_energy(port, params(), timeout=5, counters=s, meter_key="SIM-0")
                for s in (store, other, store, other)
            )
        )
        assert results == [expected_register(SEED, 0, "1.0.1.8.0.255", NOW)] * 4
        assert sim.repeats == []


async def test_a_second_session_gives_up_with_a_typed_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    store = JsonInvocationCounters(tmp_path / "counters.json")
    async with DlmsFleetSimulator(1, seed=SEED, clock=lambda: NOW, authentication="high-gmac") as sim:
        port = sim.meters[0].port
        url = f"tcp://127.0.0.1:{port}"
        async with DlmsSession(url, params(), timeout=5, counters=store, meter_key="SIM-0") as first:
            waiting = DlmsSession(url, params(), timeout=5, counters=store, meter_key="SIM-0", hold_timeout=0.3)
            started = asyncio.get_running_loop().time()
            with pytest.raises(MeterBusyError) as busy:
                await waiting.__aenter__()
            assert 0.3 <= asyncio.get_running_loop().time() - started < 3
            assert await first.get(3, "1.0.1.8.0.255", 2)  # the first session is untouched
        async with DlmsSession(url, params(), timeout=5, counters=store, meter_key="SIM-0") as after:
            assert await after.get(3, "1.0.1.8.0.255", 2)  # released on exit
    assert busy.value.kind == "meter-busy" and not busy.value.remote
    out, err = capsys.readouterr()
    shown = (str(busy.value) + caplog.text + out + err).lower()
    assert not [s for s in secrets() if s in shown]


# -- the nonce detector ------------------------------------------------------------------------


def run(exchange: Exchange, peer: CosemMeterCore) -> Exchange:
    for _ in range(100):
        if exchange.done:
            return exchange
        exchange.receive_data(peer.receive_data(exchange.data_to_send(), NOW), 0.0)
    raise AssertionError("exchange did not complete")


def test_the_meter_records_a_repeated_nonce() -> None:
    counters = MeterCounters()
    counters.record(b"GXC00001", 7)
    counters.record(b"GXC00002", 7)
    counters.record(b"GXC00001", 8)
    assert counters.repeats == []
    counters.record(b"GXC00001", 7)
    assert counters.repeats == [(b"GXC00001", 7)]


def test_a_client_that_lost_its_store_is_caught_reusing_a_nonce() -> None:
    """Two clients with their own memory stores start from one meter counter: the meter sees the repeat."""
    counters = MeterCounters()

    def meter() -> CosemMeterCore:
        security = meter_security(SEED, 0)
        return CosemMeterCore(
            _MeterValues(SEED, 0), REGISTERS, PROFILES, authentication="high-gmac", security=security, counters=counters
        )

    for _ in range(2):
        c = core(MemoryInvocationCounters())
        c.use_meter_counter(0)
        peer = meter()
        exchange = run(c.associate(), peer)
        if not counters.repeats:
            c.check_association(exchange)
            c.check_authentication(run(c.authenticate(), peer))
    title = client_security(SEED, 0).system_title
    assert counters.repeats == [(title, 1 + METER_COUNTER_MARGIN)]


async def test_the_simulator_fails_a_test_that_reuses_a_nonce() -> None:
    no_floor = params(frame_counter_obis=None)  # both start from counter 0, as a lost store would
    sim = DlmsFleetSimulator(1, seed=SEED, clock=lambda: NOW, authentication="high-gmac")
    await sim.__aenter__()
    try:
        port = sim.meters[0].port
        await read_energy(port, no_floor, timeout=5, counters=MemoryInvocationCounters())
        with pytest.raises(AccessDeniedError):  # refused as a replay, but the nonce went out again
            await read_energy(port, no_floor, timeout=5, counters=MemoryInvocationCounters())
        assert [r.invocation_counter for r in sim.repeats] == [0]
    finally:
        with pytest.raises(NonceReuseError, match="used twice") as reused:
            await sim.__aexit__(None, None, None)
    assert not [s for s in secrets() if s in str(reused.value).lower()]


def test_keys_are_not_in_the_state_file(tmp_path: Path) -> None:
    store = JsonInvocationCounters(tmp_path / "counters.json")
    c = core(store)
    c.use_meter_counter(3)
    sent_counter(c)
    text = (tmp_path / "counters.json").read_text().lower()
    assert not [s for s in secrets() if s in text]
    assert Secret(bytes(16)) != client_security(SEED, 0).block_cipher_key  # the keys above are real ones


async def test_commands_reserve_counters_in_the_store_they_are_given(tmp_path: Path) -> None:
    from gxcore.drivers.dlms.control import run_dlms_command

    store = JsonInvocationCounters(tmp_path / "counters.json")
    async with DlmsFleetSimulator(1, seed=SEED, clock=lambda: NOW, authentication="high-gmac") as sim:
        url = f"tcp://127.0.0.1:{sim.meters[0].port}"
        with pytest.raises(ConfigurationError, match="invocation counter store"):
            await run_dlms_command(url, params(), "read-supply", timeout=5, meter_key="SIM-0")
        for command in ("disconnect", "reconnect"):
            await run_dlms_command(url, params(), command, timeout=5, counters=store, meter_key="SIM-0")
        assert sim.repeats == []
    key = counter_key("SIM-0", 1, client_security(SEED, 0))
    mark = store.get(key)
    assert mark is not None and mark > METER_COUNTER_MARGIN


class _ThreadRecordingStore(JsonInvocationCounters):
    """The file store, noting which thread each store call ran on."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.threads: list[tuple[str, int]] = []

    def get(self, key: str) -> int | None:
        self.threads.append(("get", threading.get_ident()))
        return super().get(key)

    def reserve(self, key: str, floor: int, count: int) -> int:
        self.threads.append(("reserve", threading.get_ident()))
        return super().reserve(key, floor, count)

    def try_hold(self, meter: str) -> MeterHold | None:
        self.threads.append(("try_hold", threading.get_ident()))
        return super().try_hold(meter)


async def test_a_session_never_does_the_file_stores_io_on_the_event_loop(tmp_path: Path) -> None:
    """File reads, flock and fsync of the counter file run in worker threads, not in the loop's thread."""
    store = _ThreadRecordingStore(tmp_path / "c.json")
    loop_thread = threading.get_ident()
    async with DlmsFleetSimulator(1, seed=SEED, clock=lambda: NOW, authentication="high-gmac") as sim:
        url = f"tcp://127.0.0.1:{sim.meters[0].port}"
        for _ in range(2):  # the first session reads the meter's frame counter, the second starts from the store
            async with DlmsSession(url, params(), timeout=5, counters=store, meter_key="SIM-0") as s:
                for _ in range(COUNTER_WINDOW):  # past one reserved window
                    await s.read_clock()
    calls = {name for name, _ in store.threads}
    assert {"get", "reserve", "try_hold"} <= calls
    assert [name for name, thread in store.threads if thread == loop_thread] == []
