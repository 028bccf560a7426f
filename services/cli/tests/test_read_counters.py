"""`gxami read` never reuses a DLMS invocation counter across processes: lost frames, two at once, SIGKILL.

Each test runs real `gxami read` processes against the fleet simulator over real TCP,
sometimes through a wire tap that loses or slows the client's frames. The simulated
meter records every (system title, counter) pair it receives and the simulator fails on
leaving its ``async with`` if one came twice; the tests also check that a pair the tap
lost (sent, never received) is not sent again by the next process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gxami_cli.counters import default_counters_file
from gxami_meterlab.simulators.dlms import DlmsFleetSimulator, meter_secrets, meter_system_title
from gxami_meterlab.simulators.dlms_tap import DlmsWireTap, carried_nonces
from gxcore.drivers.dlms.counter_file import JsonInvocationCounters

SEED = 11
NOW = datetime(2024, 9, 14, 8, 30, 12, tzinfo=UTC)


def ciphered(apdu: bytes) -> bool:
    """A client frame that carries a nonce in the clear (the AARQ of a secured client, a ciphered request)."""
    return bool(carried_nonces(apdu, b"\x00" * 8)[1])


def nth_ciphered(n: int) -> Callable[[bytes], bool]:
    """True for the n-th ciphered client frame only (1: the AARQ, 2: the HLS pass, 3..: requests)."""
    seen = 0

    def lose(apdu: bytes) -> bool:
        nonlocal seen
        if not ciphered(apdu):
            return False
        seen += 1
        return seen == n

    return lose


async def gxami_read(port: int, counters: Path, *, timeout: float = 5.0) -> asyncio.subprocess.Process:
    """Start `gxami read` of simulated meter 0 (keys from the environment); the caller waits or kills."""
    keys = meter_secrets(SEED, 0)
    env = {**os.environ, "GX_K": keys["key"], "GX_A": keys["auth_key"]}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gxami_cli",
        "read",
        f"tcp://127.0.0.1:{port}",
        "--protocol",
        "dlms",
        "--meter-id",
        "SIM-0",  # the same meter through the tap or not: one counter key, one lock
        "--option",
        "authentication=high-gmac",
        "--option",
        "client=1",
        "--option",
        f"server_system_title={meter_system_title(SEED, 0).hex()}",
        "--key-env",
        "GX_K",
        "--secret-env",
        "auth_key=GX_A",
        "--timeout",
        str(timeout),
        "--counters-file",
        str(counters),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )


async def finished(process: asyncio.subprocess.Process) -> tuple[int, str, str]:
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def fleet() -> DlmsFleetSimulator:
    return DlmsFleetSimulator(1, seed=SEED, clock=lambda: NOW, authentication="high-gmac")


async def test_a_frame_lost_on_the_way_is_never_reused_by_the_next_process(tmp_path: Path) -> None:
    counters = tmp_path / "counters.json"
    async with fleet() as sim:
        async with DlmsWireTap(sim.meters[0].port, lose=nth_ciphered(1)) as tap:
            first = await finished(await gxami_read(tap.port, counters))
        assert first[0] != 0, first  # the link failed with the AARQ in flight
        assert len(tap.lost) == 1
        second = await finished(await gxami_read(sim.meters[0].port, counters))
        assert second[0] == 0, second
        seen = sim.states[0].counters.seen
        assert tap.lost[0] not in seen, "the next process sent the lost frame's counter again"
        assert sim.repeats == []
    assert meter_secrets(SEED, 0)["key"] not in first[2] + second[1] + second[2] + counters.read_text()


async def test_two_processes_reading_one_meter_at_once_never_share_a_nonce(tmp_path: Path) -> None:
    counters = tmp_path / "counters.json"
    async with fleet() as sim:
        # A slow link: each session takes seconds, so the two surely overlap.
        async with DlmsWireTap(sim.meters[0].port, delay=0.15) as tap:
            both = await asyncio.gather(*[gxami_read(tap.port, counters) for _ in range(2)])
            results = await asyncio.gather(*(finished(p) for p in both))
        assert [r[0] for r in results] == [0, 0], results
        assert len(tap.sent) == len(set(tap.sent)) > 4
        assert sim.repeats == []


async def test_a_client_killed_mid_session_leaves_no_counter_to_reuse(tmp_path: Path) -> None:
    counters = tmp_path / "counters.json"
    async with fleet() as sim:
        # The fourth ciphered frame (a GET after the association) is held in flight, never delivered.
        async with DlmsWireTap(sim.meters[0].port, lose=nth_ciphered(4), cut_on_loss=False) as tap:
            victim = await gxami_read(tap.port, counters, timeout=30)
            await asyncio.wait_for(tap.lost_event.wait(), 30)
            victim.send_signal(signal.SIGKILL)
            assert await victim.wait() == -signal.SIGKILL
        started = asyncio.get_running_loop().time()
        after = await finished(await gxami_read(sim.meters[0].port, counters))
        assert after[0] == 0, after
        # The dead process's meter lock went with it: no wait for a hold timeout.
        assert asyncio.get_running_loop().time() - started < 15  # the hold timeout would be 25 s
        assert tap.lost and tap.lost[0] not in sim.states[0].counters.seen
        assert sim.repeats == []


def test_the_default_state_file_is_under_the_users_state_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("GXAMI_INVOCATION_COUNTERS_FILE", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_counters_file() == tmp_path / "gxami" / "invocation-counters.json"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_counters_file() == tmp_path / ".local" / "state" / "gxami" / "invocation-counters.json"
    monkeypatch.setenv("GXAMI_INVOCATION_COUNTERS_FILE", str(tmp_path / "x.json"))
    assert default_counters_file() == tmp_path / "x.json"


async def test_read_keeps_counters_in_the_default_state_file(tmp_path: Path) -> None:
    """Without --counters-file the counters land in $XDG_STATE_HOME/gxami, not in memory."""
    keys = meter_secrets(SEED, 0)
    env = {k: v for k, v in os.environ.items() if k != "GXAMI_INVOCATION_COUNTERS_FILE"}
    env |= {"XDG_STATE_HOME": str(tmp_path), "GX_K": keys["key"], "GX_A": keys["auth_key"]}
    async with fleet() as sim:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gxami_cli",
            "read",
            f"tcp://127.0.0.1:{sim.meters[0].port}",
            "--protocol",
            "dlms",
            "--option",
            "authentication=high-gmac",
            "--option",
            "client=1",
            "--key-env",
            "GX_K",
            "--secret-env",
            "auth_key=GX_A",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        code, _out, err = await finished(process)
        port = sim.meters[0].port
    assert code == 0, err
    store = JsonInvocationCounters(tmp_path / "gxami" / "invocation-counters.json")
    assert [k for k in store._load() if k.startswith(f"tcp://127.0.0.1:{port}/1/")]


async def test_profile_discover_and_read_share_one_counter_sequence(tmp_path: Path) -> None:
    counters = tmp_path / "counters.json"
    keys = meter_secrets(SEED, 0)
    env = {**os.environ, "GX_K": keys["key"], "GX_A": keys["auth_key"]}
    async with fleet() as sim:
        url = f"tcp://127.0.0.1:{sim.meters[0].port}"
        discover = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "gxami_cli", "profile", "discover", url, "--client", "1"),
            *("--authentication", "high-gmac", "--key-env", "GX_K", "--auth-key-env", "GX_A"),
            *("--timeout", "5", "--counters-file", str(counters)),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        code, _out, err = await finished(discover)
        assert code == 0, err
        store = JsonInvocationCounters(counters)
        (key,) = store._load()
        assert key.startswith(f"{url}/1/")
        after_discover = store.get(key)
        read = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "gxami_cli", "read", url, "--protocol", "dlms", "--option"),
            *("authentication=high-gmac", "--option", "client=1", "--key-env", "GX_K"),
            *("--secret-env", "auth_key=GX_A", "--timeout", "5", "--counters-file", str(counters)),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        code, _out, err = await finished(read)
        assert code == 0, err
        assert list(store._load()) == [key]  # the same meter key: one sequence, one lock
        assert (store.get(key) or 0) > (after_discover or 0)
        assert sim.repeats == []
