"""DSMR local timestamps against the tz database, including both DST switches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gxcore.protocols.dsmr.timestamps import (
    format_dsmr_timestamp,
    is_eu_summer_time,
    local_to_utc,
    parse_dsmr_timestamp,
)

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
instants = st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2099, 12, 30), timezones=st.just(UTC))


@given(instants)
@settings(max_examples=300)
def test_summer_time_rule_matches_tz_database(instant: datetime) -> None:
    assert is_eu_summer_time(instant) == bool(instant.astimezone(AMSTERDAM).dst())


@given(instants)
@settings(max_examples=300)
def test_format_then_parse_is_identity(instant: datetime) -> None:
    instant = instant.replace(microsecond=0)
    assert parse_dsmr_timestamp(format_dsmr_timestamp(instant)) == instant


@given(st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2099, 12, 30)))
@settings(max_examples=300)
def test_unflagged_wall_clock_matches_zoneinfo_fold_0(naive: datetime) -> None:
    assert local_to_utc(naive) == naive.replace(tzinfo=AMSTERDAM).astimezone(UTC)


def test_repeated_hour_is_settled_by_the_flag() -> None:
    # 27 Oct 2024: 02:30 local happens twice, first in CEST then in CET.
    assert parse_dsmr_timestamp("241027023000S") == datetime(2024, 10, 27, 0, 30, tzinfo=UTC)
    assert parse_dsmr_timestamp("241027023000W") == datetime(2024, 10, 27, 1, 30, tzinfo=UTC)


def test_every_quarter_across_both_switches_round_trips() -> None:
    for start in (datetime(2024, 3, 30, 22, tzinfo=UTC), datetime(2024, 10, 26, 22, tzinfo=UTC)):
        seen = set()
        for i in range(5 * 4):
            instant = start + timedelta(minutes=15 * i)
            text = format_dsmr_timestamp(instant)
            assert parse_dsmr_timestamp(text) == instant
            seen.add(text[-1])
        assert seen == {"S", "W"}


@pytest.mark.parametrize(
    "text", ["", "2401011200", "240101120000X", "241301120000W", "24010112000aW", "2401011200000W"]
)
def test_invalid_timestamps_raise_value_error(text: str) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        parse_dsmr_timestamp(text)


def test_not_specified_marker() -> None:
    assert parse_dsmr_timestamp("632525252525W") is None
