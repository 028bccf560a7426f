"""The site tree in the fleet file: node paths, main meters and submeters, into the registry."""

from __future__ import annotations

import asyncpg
import pytest

from gxami_scheduler.fleet import FleetFileError, parse_fleet
from gxami_scheduler.registry import hierarchy_nodes, import_fleet

from .conftest import T0

TREE = """meter_id,protocol,address,profile,schedule,node,submeter_of
m1,dlms,tcp://10.0.0.1:4059,generic-dlms,15m,site-a/building-1,
s1,dlms,tcp://10.0.0.2:4059,generic-dlms,15m,site-a/building-1/floor-2,m1
x1,dlms,tcp://10.0.0.3:4059,generic-dlms,15m,,
"""


def test_node_and_submeter_are_read_and_checked() -> None:
    meters = {m.meter_id: m for m in parse_fleet("f.csv", TREE)}
    assert (meters["s1"].node, meters["s1"].submeter_of) == ("site-a/building-1/floor-2", "m1")
    assert (meters["x1"].node, meters["x1"].submeter_of) == (None, None)
    with pytest.raises(FleetFileError) as info:
        parse_fleet("f.csv", TREE.replace(",m1\n", ",nope\n"))
    assert [(p.line, p.field) for p in info.value.problems] == [(3, "submeter_of")]
    assert "main meter 'nope' is not in the fleet file" in info.value.problems[0].reason
    with pytest.raises(FleetFileError) as info:
        parse_fleet("f.csv", TREE.replace(",m1\n", ",s1\n"))
    assert "cannot be a submeter of itself" in info.value.problems[0].reason
    with pytest.raises(FleetFileError) as info:
        parse_fleet("f.csv", TREE.replace("site-a/building-1,", "site-a//building-1,"))
    assert info.value.problems[0].field == "node"


def test_every_ancestor_becomes_a_node() -> None:
    assert hierarchy_nodes(["a/b/c", "a/d"]) == [
        ("a", None, "a", 1),
        ("a/b", "a", "b", 2),
        ("a/d", "a", "d", 2),
        ("a/b/c", "a/b", "c", 3),
    ]


async def test_import_writes_the_tree_and_follows_the_file(db: asyncpg.Connection) -> None:
    await import_fleet(db, parse_fleet("f.csv", TREE), T0)
    nodes = {r["node_path"]: r["parent_path"] for r in await db.fetch("SELECT * FROM hierarchy_nodes")}
    assert nodes == {"site-a": None, "site-a/building-1": "site-a", "site-a/building-1/floor-2": "site-a/building-1"}
    rows = {r["meter_id"]: (r["node_path"], r["submeter_of"]) for r in await db.fetch("SELECT * FROM meter_hierarchy")}
    assert rows == {"m1": ("site-a/building-1", None), "s1": ("site-a/building-1/floor-2", "m1"), "x1": (None, None)}
    # The file moves s1 and makes it a main meter of its own: the registry follows.
    moved = TREE.replace("site-a/building-1/floor-2,m1", "site-b,")
    await import_fleet(db, parse_fleet("f.csv", moved), T0)
    s1 = await db.fetchrow("SELECT node_path, submeter_of FROM meter_nodes WHERE meter_id = 's1'")
    assert s1 is not None and (s1["node_path"], s1["submeter_of"]) == ("site-b", None)
    assert await db.fetchval("SELECT parent_path FROM hierarchy_nodes WHERE node_path = 'site-b'") is None
