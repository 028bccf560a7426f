"""Extended and demand registers, event logs, profiles by entry, association view discovery."""

from __future__ import annotations

from contextlib import suppress
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gxami_meterlab.dlms.meter_objects import ListedObject, encode_object_list
from gxami_meterlab.simulators.dlms import (
    AVERAGE_DEMAND,
    EVENT_LOG,
    LOAD_PROFILE,
    MAXIMUM_DEMAND,
    DlmsFleetSimulator,
    client_security,
    expected_demand,
    expected_events,
    expected_maximum_demand,
    expected_profile,
    expected_register,
)
from gxcore.drivers import MeterTarget, ReadRequest
from gxcore.drivers.dlms.discovery import discover_profile, parse_object_list, point_unit, purpose_of, read_object_list
from gxcore.drivers.dlms.driver import DlmsDriver
from gxcore.drivers.dlms.event_log import read_event_log
from gxcore.drivers.dlms.reader import DlmsSession
from gxcore.errors import GxError
from gxcore.profiles.model import load_profile
from gxcore.protocols.dlms import CosemValue, DlmsParameters
from gxcore.protocols.dlms.invocation import MemoryInvocationCounters
from gxcore.protocols.dlms.parameters import ProfileEntries

SEED = 5
NOW = datetime(2024, 6, 1, 19, 41, 7, tzinfo=UTC)


def fleet(**kwargs: object) -> DlmsFleetSimulator:
    return DlmsFleetSimulator(2, seed=SEED, clock=lambda: NOW, **kwargs)  # type: ignore[arg-type]


async def test_extended_and_demand_registers_carry_status_and_capture_time() -> None:
    async with (
        fleet() as sim,
        DlmsSession(f"tcp://127.0.0.1:{sim.meters[1].port}", DlmsParameters(), timeout=2) as session,
    ):
        maximum = await session.read_register(CosemValue(MAXIMUM_DEMAND, 4))
        last = await session.read_register(CosemValue(AVERAGE_DEMAND, 5))
        current = await session.read_register(CosemValue(AVERAGE_DEMAND, 5, 2))
        plain = await session.read_register(CosemValue("1.0.1.8.0.255"))
    value, ended = expected_maximum_demand(SEED, 1, NOW)
    assert (maximum.value, maximum.unit, maximum.status, maximum.captured) == (value, "W", 0, ended)
    now_avg, last_avg, started = expected_demand(SEED, 1, NOW)
    assert (last.value, last.unit, last.captured) == (last_avg, "W", started)
    assert current.value == now_avg
    assert plain.status is None and plain.captured is None
    assert 100 < maximum.value < 5000 and ended.date() == NOW.date()


async def test_event_log_by_range_and_by_entry() -> None:
    start = NOW - timedelta(days=20)
    async with (
        fleet() as sim,
        DlmsSession(f"tcp://127.0.0.1:{sim.meters[0].port}", DlmsParameters(), timeout=2) as session,
    ):
        ranged = await read_event_log(session, start=start, end=NOW)
        newest = await read_event_log(session, newest=3)
        everything = await session.read_profile_entries(ProfileEntries(EVENT_LOG))
    expected = expected_events(SEED, 0, start, NOW)
    assert [(e.timestamp, e.code) for e in ranged] == expected
    assert expected and {e.name for e in ranged} == {"power-down", "power-up"}
    assert all(e.log == "0-0:99.98.0" for e in ranged)
    assert [(e.timestamp, e.code) for e in newest] == expected[-3:]
    assert len(everything) == 100  # the log keeps its newest 100 events
    assert [r.quantity for r in everything[:1]] == ["0-0:96.11.0"]
    record = ranged[0].record("m0")
    assert (record.source, record.code, record.kind) == ("0-0:99.98.0", ranged[0].code, ranged[0].name)


async def test_load_profile_by_entry_equals_the_model() -> None:
    async with (
        fleet() as sim,
        DlmsSession(f"tcp://127.0.0.1:{sim.meters[0].port}", DlmsParameters(), timeout=2) as session,
    ):
        newest = await session.read_profile_entries(ProfileEntries(LOAD_PROFILE, newest=4))
        oldest = await session.read_profile_entries(ProfileEntries(LOAD_PROFILE, first=1, last=2))
    rows = expected_profile(SEED, 0, NOW - timedelta(hours=1), NOW)
    got = sorted({r.timestamp for r in newest})
    assert got == [at for at, _ in rows][-4:]
    import_by_time = {r.timestamp: r.value for r in newest if r.quantity == "1-0:1.8.0"}
    assert [import_by_time[at] for at, _ in rows[-4:]] == [v["1-0:1.8.0"] for _, v in rows[-4:]]
    first_two = sorted({r.timestamp for r in oldest})
    assert first_two[1] - first_two[0] == timedelta(minutes=15)
    assert first_two[0] == got[-1] - timedelta(days=31) + timedelta(minutes=15)


async def test_driver_reads_extended_demand_and_events() -> None:
    profile = yaml.safe_load(
        """
        name: rich-dlms
        protocol: dlms
        points:
          - {quantity: "1-0:1.6.0", unit: kW, source: "4/1.0.1.6.0.255", purpose: [billing]}
          - {quantity: "1-0:1.4.0", unit: kW, source: "5/1.0.1.4.0.255", purpose: [diagnostics]}
          - {quantity: "0-0:96.11.0", unit: "", source: "1/0.0.96.11.0.255", purpose: [events],
             options: {profile: "0.0.99.98.0.255", last_entries: 4}}
        """
    )
    from gxcore.profiles.model import DeviceProfile

    rich = DeviceProfile.model_validate(profile)
    request = ReadRequest(purposes=frozenset({"billing", "diagnostics", "events"}))
    async with fleet() as sim:
        result = await DlmsDriver().read(
            MeterTarget("m", f"tcp://127.0.0.1:{sim.meters[1].port}"), rich, request, timeout=2
        )
        ranged = await DlmsDriver().read(
            MeterTarget("m", f"tcp://127.0.0.1:{sim.meters[1].port}"),
            rich,
            ReadRequest(purposes=frozenset({"events"}), profile_from=NOW - timedelta(days=9)),
            timeout=2,
        )
    assert "0-0:96.11.0" not in {r.quantity for r in result.readings + ranged.readings}, "events are not readings"
    got = {r.quantity: r for r in result.readings}
    value, ended = expected_maximum_demand(SEED, 1, NOW)
    assert (got["1-0:1.6.0"].value, got["1-0:1.6.0"].timestamp, got["1-0:1.6.0"].status) == (
        Decimal(value) / 1000,
        ended,
        0,
    )
    _cur, last, started = expected_demand(SEED, 1, NOW)
    assert (got["1-0:1.4.0"].value, got["1-0:1.4.0"].timestamp) == (Decimal(last) / 1000, started)
    events = [(e.timestamp, e.code, e.kind) for e in result.events]
    expected = expected_events(SEED, 1, NOW - timedelta(days=400), NOW)[-4:]
    assert [(at, code) for at, code, _ in events] == expected
    assert {kind for _, _, kind in events} <= {"power-down", "power-up"}
    assert {(e.meter_id, e.source) for e in result.events} == {("m", "0-0:99.98.0")}
    assert [(e.timestamp, e.code) for e in ranged.events] == expected_events(SEED, 1, NOW - timedelta(days=9), NOW)
    assert ranged.readings == []


# -- discovery -------------------------------------------------------------------------------


async def test_the_association_view_lists_every_object_with_access_rights() -> None:
    async with (
        fleet() as sim,
        DlmsSession(f"tcp://127.0.0.1:{sim.meters[0].port}", DlmsParameters(), timeout=2) as session,
    ):
        objects = await read_object_list(session)
    by_obis = {o.obis: o for o in objects}
    assert {(o.class_id, o.obis) for o in objects} >= {
        (8, "0.0.1.0.0.255"),
        (3, "1.0.1.8.0.255"),
        (4, MAXIMUM_DEMAND),
        (5, AVERAGE_DEMAND),
        (7, LOAD_PROFILE),
        (7, EVENT_LOG),
        (1, "0.0.96.11.0.255"),
        (70, "0.0.96.3.10.255"),
        (15, "0.0.40.0.0.255"),
    }
    assert by_obis["0.0.1.0.0.255"].writable == {2}
    assert by_obis["0.0.96.3.10.255"].methods == {1, 2}
    assert by_obis["1.0.1.8.0.255"].readable == {1, 2, 3} and not by_obis["1.0.1.8.0.255"].writable


async def test_the_public_client_of_a_secured_meter_sees_only_public_objects() -> None:
    async with (
        fleet(authentication="high-gmac") as sim,
        DlmsSession(f"tcp://127.0.0.1:{sim.meters[0].port}", DlmsParameters(), timeout=2) as session,
    ):
        public = {o.obis for o in await read_object_list(session)}
    assert public == {"0.0.1.0.0.255", "0.0.40.0.0.255", "0.0.42.0.0.255", "0.0.43.1.0.255"}


async def test_discovered_profile_validates_and_reads_the_model(tmp_path: Path) -> None:
    params = DlmsParameters(client_address=1, authentication="high-gmac", security=client_security(SEED, 0))
    async with fleet(authentication="high-gmac") as sim:
        port = sim.meters[0].port
        counters = MemoryInvocationCounters()
        async with DlmsSession(
            f"tcp://127.0.0.1:{port}", params, timeout=2, counters=counters, meter_key="m0"
        ) as session:
            found = await discover_profile(session, parameters={"client_address": 1, "authentication": "high-gmac"})
        path = tmp_path / "found.yaml"
        path.write_text(yaml.safe_dump(found.profile.model_dump(mode="json")))
        profile = load_profile(path)
        DlmsDriver().validate_profile(profile)
        assert profile.name == "discovered-sim00500000" and found.notes == ()
        security = client_security(SEED, 0)
        secrets = {"key": security.block_cipher_key, "auth_key": security.authentication_key}
        target = MeterTarget("m0", f"tcp://127.0.0.1:{port}", {}, secrets)
        request = ReadRequest(purposes=frozenset({"billing", "instantaneous"}))
        result = await DlmsDriver(counters).read(target, profile, request, timeout=2)
    kinds = {(p.source, tuple(p.purpose)) for p in profile.points}
    assert ("3/1.0.1.8.0.255", ("load-profile",)) in kinds and ("1/0.0.96.11.0.255", ("events",)) in kinds
    got = {r.quantity: r for r in result.readings}
    assert got["1-0:1.8.0"].unit == "kWh"
    assert float(got["1-0:1.8.0"].value) == pytest.approx(expected_register(SEED, 0, "1.0.1.8.0.255", NOW) / 1000)
    assert got["1-0:32.7.0"].value == expected_register(SEED, 0, "1.0.32.7.0.255", NOW)


def test_purposes_and_units_of_discovered_points() -> None:
    assert purpose_of("1.0.1.8.0.255") == ["billing"]
    assert purpose_of("1.0.1.6.0.255") == ["billing"]
    assert purpose_of("1.0.32.7.0.255") == ["instantaneous", "diagnostics"]
    assert purpose_of("1.0.1.4.0.255") == ["diagnostics"]
    assert [point_unit(u) for u in ("Wh", "W", "var", "m³", "°C", "V", "unit-77")] == [
        "kWh",
        "kW",
        "kvar",
        "m3",
        "degC",
        "V",
        "unit-77",
    ]


LISTED = st.builds(
    ListedObject,
    class_id=st.integers(1, 0xFFFF),
    version=st.integers(0, 255),
    obis=st.tuples(*[st.integers(0, 255)] * 6).map(lambda g: ".".join(map(str, g))),
    attributes=st.integers(1, 20),
    readable=st.lists(st.integers(1, 20), max_size=5).map(tuple),
    writable=st.lists(st.integers(1, 20), max_size=3).map(tuple),
    methods=st.integers(0, 10),
    callable_methods=st.lists(st.integers(1, 10), max_size=3).map(tuple),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(LISTED, max_size=6))
def test_object_list_encoding_round_trips(items: list[ListedObject]) -> None:
    from gxcore.protocols.dlms import axdr

    parsed = parse_object_list(axdr.decode_all(encode_object_list(items)))
    assert [(o.class_id, o.version, o.obis) for o in parsed] == [(i.class_id, i.version, i.obis) for i in items]
    for o, i in zip(parsed, items, strict=True):
        assert o.readable == {a for a in i.readable if a <= i.attributes}
        assert o.writable == {a for a in i.writable if a <= i.attributes}
        assert o.methods == {m for m in i.callable_methods if m <= i.methods}


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(st.none() | st.integers() | st.binary(max_size=8), lambda x: st.lists(x, max_size=5), max_leaves=30)
)
def test_any_object_list_value_parses_or_raises_a_gxcore_error(value: object) -> None:
    with suppress(GxError):
        parse_object_list(value)
