"""Invocation counter stores: monotonic, atomic on disk, never handing a counter out twice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gxami_meterlab.simulators.dlms import client_security
from gxcore.drivers.dlms.counter_file import JsonInvocationCounters
from gxcore.errors import ConfigurationError
from gxcore.protocols.dlms.invocation import (
    COUNTER_WINDOW,
    MAX_COUNTER,
    METER_COUNTER_MARGIN,
    InvocationCounterStore,
    MemoryInvocationCounters,
)
from gxcore.protocols.dlms.parameters import DlmsParameters
from gxcore.protocols.dlms.session import DlmsClientCore


def test_memory_store_only_moves_forward() -> None:
    store = MemoryInvocationCounters()
    assert isinstance(store, InvocationCounterStore)
    assert store.get("m") is None
    store.advance("m", 10)
    store.advance("m", 3)
    assert store.get("m") == 10
    with pytest.raises(ConfigurationError):
        store.advance("m", MAX_COUNTER + 2)
    with pytest.raises(ConfigurationError):
        store.advance("m", -1)


def test_json_store_survives_a_restart_and_writes_atomically(tmp_path: Path) -> None:
    path = tmp_path / "counters.json"
    store = JsonInvocationCounters(path)
    assert store.get("SIM1/1/aa") is None
    store.advance("SIM1/1/aa", 65)
    store.advance("SIM2/1/aa", 7)
    store.advance("SIM1/1/aa", 2)
    assert json.loads(path.read_text()) == {"SIM1/1/aa": 65, "SIM2/1/aa": 7}
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temporary left behind
    again = JsonInvocationCounters(path)
    assert (again.get("SIM1/1/aa"), again.get("SIM2/1/aa")) == (65, 7)


def test_json_store_refuses_a_damaged_file(tmp_path: Path) -> None:
    path = tmp_path / "counters.json"
    path.write_text('{"m": "seven"}')
    with pytest.raises(ConfigurationError, match="not a map"):
        JsonInvocationCounters(path)
    path.write_text("{not json")
    with pytest.raises(ConfigurationError, match="not valid JSON"):
        JsonInvocationCounters(path)


def test_a_failed_write_leaves_the_store_unchanged(tmp_path: Path) -> None:
    store = JsonInvocationCounters(tmp_path / "gone" / "counters.json")
    with pytest.raises(ConfigurationError, match=r"cannot (lock|write)"):
        store.advance("m", 5)
    assert store.get("m") is None  # nothing was recorded, so nothing may be used


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 10_000)), max_size=30))
def test_store_value_is_the_highest_advance(steps: list[tuple[str, int]]) -> None:
    store = MemoryInvocationCounters()
    for key, to in steps:
        store.advance(key, to)
    for key in "abc":
        seen = [to for k, to in steps if k == key]
        assert store.get(key) == (max(seen) if seen else None)


def _core(store: InvocationCounterStore) -> DlmsClientCore:
    params = DlmsParameters(client_address=1, authentication="high-gmac", security=client_security(1, 0))
    return DlmsClientCore(params, counters=store, meter_key="SIM1")


def test_two_cores_of_one_process_never_share_a_window() -> None:
    """Sessions to one meter interleave: each reservation starts at the store's mark."""
    store = MemoryInvocationCounters()
    first, second = _core(store), _core(store)
    first.use_meter_counter(0)
    second.use_meter_counter(0)
    used: list[int] = []
    for core in (first, second, first, second):
        for _ in range(3):
            core.associate()  # builds one protected APDU (the ciphered InitiateRequest)
            counter = core.invocation_counter
            assert counter is not None
            used.append(counter - 1)
    m = 1 + METER_COUNTER_MARGIN  # both started from the meter's counter 0, a margin above it
    assert used == [m + n for n in (0, 1, 2, 64, 65, 66, 3, 4, 5, 67, 68, 69)]
    assert store.get(first.counter_key) == m + 2 * COUNTER_WINDOW


def test_counter_is_reserved_before_it_is_used(tmp_path: Path) -> None:
    """After any build, the store already holds a mark above every counter that went out."""
    store = JsonInvocationCounters(tmp_path / "c.json")
    core = _core(store)
    core.use_meter_counter(41)
    for _ in range(COUNTER_WINDOW + 5):
        core.associate()
        sent = (core.invocation_counter or 0) - 1
        mark = JsonInvocationCounters(tmp_path / "c.json").get(core.counter_key)  # what a restart would see
        assert mark is not None and mark > sent >= 42 + METER_COUNTER_MARGIN
    restarted = _core(JsonInvocationCounters(tmp_path / "c.json"))
    assert restarted.invocation_counter is not None and restarted.invocation_counter > sent
