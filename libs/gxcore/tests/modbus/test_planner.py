"""Read planning: fewest requests within the device's count and gap limits."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gxcore.errors import ProtocolError
from gxcore.profiles import DeviceProfile, ProfilePoint
from gxcore.protocols.modbus.planner import plan_reads, split_block
from gxcore.protocols.modbus.profile import (
    ModbusParameters,
    RegisterPoint,
    Table,
    modbus_parameters,
    register_point,
    register_points,
)


def rp(source: str, type_: str = "uint16", **options: Any) -> RegisterPoint:
    opts: dict[str, Any] = {} if source.startswith(("coil", "discrete")) else {"type": type_, **options}
    return register_point(ProfilePoint(quantity="1-0:1.8.0", unit="kWh", source=source, options=opts))


def shape(blocks: list[Any]) -> list[tuple[str, int, int]]:
    return [(b.table.label, b.address, b.count) for b in blocks]


def test_sdm630_billing_needs_two_requests(sdm630: DeviceProfile) -> None:
    points = register_points(sdm630, sdm630.points_for(frozenset({"billing"})))
    blocks = plan_reads(points, modbus_parameters(sdm630))
    assert shape(blocks) == [("input", 0x48, 8), ("input", 0x156, 2)]
    assert [len(b.points) for b in blocks] == [4, 1]
    assert [b.function for b in blocks] == [4, 4]


def test_adjacent_points_merge_and_gaps_split_by_default() -> None:
    points = [rp("input:0", "float32"), rp("input:2", "float32"), rp("input:5")]
    assert shape(plan_reads(points, ModbusParameters())) == [("input", 0, 4), ("input", 5, 1)]
    assert shape(plan_reads(points, ModbusParameters(max_gap=1))) == [("input", 0, 6)]


def test_max_count_splits_requests() -> None:
    points = [rp(f"holding:{a}", "float32") for a in range(0, 20, 2)]
    blocks = plan_reads(points, ModbusParameters(max_registers_per_request=8))
    assert shape(blocks) == [("holding", 0, 8), ("holding", 8, 8), ("holding", 16, 4)]


def test_tables_never_share_a_request_and_bits_use_their_own_limit() -> None:
    points = [rp("holding:0"), rp("input:1"), rp("coil:0"), rp("coil:1"), rp("discrete:0"), rp("coil:2999")]
    blocks = plan_reads(points, ModbusParameters(max_gap=5000, max_bits_per_request=2000))
    assert shape(blocks) == [
        ("coil", 0, 2),
        ("coil", 2999, 1),
        ("discrete", 0, 1),
        ("holding", 0, 1),
        ("input", 1, 1),
    ]
    assert [b.function for b in blocks] == [1, 1, 2, 3, 4]


def test_overlapping_points_share_a_request() -> None:
    whole, low = rp("input:10", "uint32"), rp("input:11")
    blocks = plan_reads([low, whole], ModbusParameters())
    assert shape(blocks) == [("input", 10, 2)]
    values = {p.point.source: v for p, v in split_block(blocks[0], [0x0001, 0x0002])}
    assert values == {"input:10": 0x00010002, "input:11": 2}


def test_split_block_rejects_a_reply_of_the_wrong_size() -> None:
    (block,) = plan_reads([rp("input:0", "float32")], ModbusParameters())
    with pytest.raises(ProtocolError):
        split_block(block, [0x4366])


# -- minimality against brute force ----------------------------------------------------


def _feasible(group: list[tuple[int, int]], limit: int, max_gap: int) -> bool:
    spans = sorted(group)
    start, end = spans[0][0], spans[0][1]
    for a, e in spans[1:]:
        if a - end > max_gap:
            return False
        end = max(end, e)
    return end - start <= limit


def _fewest_requests(spans: list[tuple[int, int]], limit: int, max_gap: int) -> int:
    """Smallest partition of ``spans`` into feasible requests, by trying every partition.

    Feasibility is checked only on complete groups: a point added later can close a gap.
    """
    best = len(spans)

    def place(i: int, groups: list[list[tuple[int, int]]]) -> None:
        nonlocal best
        if len(groups) >= best:
            return
        if i == len(spans):
            if all(_feasible(g, limit, max_gap) for g in groups):
                best = len(groups)
            return
        for g in groups:
            g.append(spans[i])
            place(i + 1, groups)
            g.pop()
        groups.append([spans[i]])
        place(i + 1, groups)
        groups.pop()

    place(0, [])
    return best


@settings(max_examples=300, deadline=None)
@given(
    layout=st.lists(
        st.tuples(st.integers(0, 60), st.sampled_from(["uint16", "float32", "uint64"])), min_size=1, max_size=6
    ),
    limit=st.integers(4, 20),
    max_gap=st.integers(0, 8),
)
def test_plan_is_valid_and_minimal(layout: list[tuple[int, str]], limit: int, max_gap: int) -> None:
    points = [rp(f"input:{a}", t) for a, t in layout]
    blocks = plan_reads(points, ModbusParameters(max_registers_per_request=limit, max_gap=max_gap))
    covered = [p for b in blocks for p in b.points]
    assert sorted(map(id, covered)) == sorted(map(id, points))  # every point exactly once
    for b in blocks:
        assert b.table is Table.INPUT
        assert 1 <= b.count <= limit
        assert all(b.address <= p.address and p.end <= b.end for p in b.points)
        assert min(p.address for p in b.points) == b.address
        assert max(p.end for p in b.points) == b.end
        assert _feasible([(p.address, p.end) for p in b.points], limit, max_gap)
    assert len(blocks) == _fewest_requests([(p.address, p.end) for p in points], limit, max_gap)
