"""The simulator's value model: deterministic, plausible, and self-consistent."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gxami_meterlab.simulators.dlms import (
    EXPORT,
    IMPORT,
    DlmsFleetSimulator,
    Household,
    expected_profile,
    expected_register,
    meter_id,
)
from gxcore.errors import ConfigurationError

instants = st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2090, 1, 1), timezones=st.just(UTC))


@given(instants, st.integers(1, 10_000), st.integers(0, 20), st.integers(0, 99))
def test_energy_registers_never_decrease(at: datetime, step: int, seed: int, index: int) -> None:
    later = at + timedelta(seconds=step)
    for obis in (IMPORT, EXPORT):
        assert expected_register(seed, index, obis, later) >= expected_register(seed, index, obis, at)


@given(instants, st.integers(0, 20), st.integers(0, 99))
def test_values_are_integers_in_plausible_ranges(at: datetime, seed: int, index: int) -> None:
    energy = expected_register(seed, index, IMPORT, at)
    assert energy == int(energy)
    assert 0 < energy < 2**32
    assert 150 <= expected_register(seed, index, "1-0:1.7.0", at) <= 2550
    assert 220 <= expected_register(seed, index, "1-0:32.7.0", at) <= 240
    assert 0 < expected_register(seed, index, "1-0:31.7.0", at) < 11


def test_import_tracks_the_power_curve() -> None:
    """Energy over one hour is the mean power over that hour (closed form vs numeric integral)."""
    house = Household.of(3, 7)
    t0 = 24 * 365 * 3600 * 20 + 17 * 3600
    numeric = sum(house.power(t0 + s) for s in range(0, 3600, 10)) * 10 / 3600
    assert abs((house.imported_wh(t0 + 3600) - house.imported_wh(t0)) - numeric) < 2


def test_export_only_while_the_sun_is_up() -> None:
    night = datetime(2024, 6, 1, 2, 0, tzinfo=UTC)
    assert expected_register(1, 0, EXPORT, night) == expected_register(1, 0, EXPORT, night + timedelta(hours=3))
    noon = datetime(2024, 6, 1, 11, 0, tzinfo=UTC)
    assert expected_register(1, 0, EXPORT, noon + timedelta(hours=1)) > expected_register(1, 0, EXPORT, noon)


def test_meters_differ_and_seeds_reproduce() -> None:
    at = datetime(2024, 1, 1, tzinfo=UTC)
    assert expected_register(1, 0, IMPORT, at) != expected_register(1, 1, IMPORT, at)
    assert expected_register(1, 0, IMPORT, at) != expected_register(2, 0, IMPORT, at)
    assert Household.of(9, 9) == Household.of(9, 9)
    assert meter_id(7, 42) == "SIM00700042"


def test_profile_rows_are_register_values_at_quarter_hours() -> None:
    start = datetime(2024, 2, 28, 23, 50, tzinfo=UTC)
    rows = expected_profile(4, 3, start, start + timedelta(hours=1))
    assert [at.strftime("%H:%M") for at, _ in rows] == ["00:00", "00:15", "00:30", "00:45"]
    for at, values in rows:
        assert values == {
            "1-0:1.8.0": expected_register(4, 3, IMPORT, at),
            "1-0:2.8.0": expected_register(4, 3, EXPORT, at),
        }


def test_profile_is_bounded_by_now_and_by_31_days() -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    assert expected_profile(1, 0, start, start + timedelta(days=1), now=start + timedelta(minutes=31))[-1][0] == (
        start + timedelta(minutes=30)
    )
    assert len(expected_profile(1, 0, start, start + timedelta(days=90))) == 31 * 96
    assert expected_profile(1, 0, start + timedelta(minutes=1), start + timedelta(minutes=14)) == []


def test_register_instants_are_truncated_to_whole_seconds() -> None:
    at = datetime(2024, 1, 1, 10, 0, 0, tzinfo=UTC)
    assert expected_register(1, 0, IMPORT, at.replace(microsecond=999_999)) == expected_register(1, 0, IMPORT, at)


def test_naive_instants_are_refused() -> None:
    with pytest.raises(ConfigurationError):
        expected_register(1, 0, IMPORT, datetime(2024, 1, 1))


async def test_base_port_assigns_consecutive_ports() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        base = probe.getsockname()[1]
    try:
        async with DlmsFleetSimulator(2, base_port=base) as sim:
            assert [p for _, p in sim.endpoints()] == [base, base + 1]
            assert [m for m, _ in sim.endpoints()] == ["SIM00100000", "SIM00100001"]
    except ConfigurationError:
        pytest.skip("the probed port range was taken meanwhile")


def test_low_authentication_needs_a_password() -> None:
    with pytest.raises(ConfigurationError):
        DlmsFleetSimulator(1, authentication="low")
