"""Read planning: which requests fetch a set of points, and which words belong to which point.

Pure functions. Points of one table are sorted by address and packed greedily: a
request grows to take the next point while the request stays within the device's
``max count`` and the unrequested stretch before that point is at most ``max_gap``.
For intervals on a line under these two limits greedy packing gives the fewest
requests (any optimal plan can be shifted, request by request, to the greedy one),
which the tests check against a brute-force search. Overlapping points (two views of
the same registers) share a request.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from gxcore.errors import ProtocolError
from gxcore.protocols.modbus.codec import RawValue, decode_value
from gxcore.protocols.modbus.profile import ModbusParameters, RegisterPoint, Table


@dataclass(frozen=True, slots=True, eq=False)
class ReadBlock:
    """One read request: ``count`` registers (bits) of ``table`` from ``address``."""

    table: Table
    address: int
    count: int
    points: tuple[RegisterPoint, ...] = field(default=())

    @property
    def end(self) -> int:
        return self.address + self.count

    @property
    def function(self) -> int:
        return self.table.read_function

    def describe(self) -> str:
        return f"function {self.function:#04x} ({self.table.label}) address {self.address:#06x} count {self.count}"


def plan_reads(points: Iterable[RegisterPoint], parameters: ModbusParameters) -> list[ReadBlock]:
    """Fewest requests covering ``points``, per table in table order, by address within a table."""
    by_table: dict[Table, list[RegisterPoint]] = {}
    for rp in points:
        by_table.setdefault(rp.table, []).append(rp)
    blocks: list[ReadBlock] = []
    for table in Table:
        members = sorted(by_table.get(table, ()), key=lambda rp: (rp.address, rp.end))
        if not members:
            continue
        limit = parameters.max_count(table)
        current = [members[0]]
        start, end = members[0].address, members[0].end
        for rp in members[1:]:
            new_end = max(end, rp.end)
            if rp.address - end <= parameters.max_gap and new_end - start <= limit:
                current.append(rp)
                end = new_end
                continue
            blocks.append(ReadBlock(table, start, end - start, tuple(current)))
            current, start, end = [rp], rp.address, rp.end
        blocks.append(ReadBlock(table, start, end - start, tuple(current)))
    return blocks


def split_block(block: ReadBlock, words: Sequence[int]) -> list[tuple[RegisterPoint, RawValue]]:
    """Raw value of every point of ``block`` from the block's reply (bits as 0/1 ints)."""
    if len(words) != block.count:
        raise ProtocolError(f"{block.describe()}: reply carries {len(words)} values, not {block.count}")
    values: list[tuple[RegisterPoint, RawValue]] = []
    for rp in block.points:
        start = rp.address - block.address
        values.append((rp, decode_value(rp, words[start : start + rp.count])))
    return values
