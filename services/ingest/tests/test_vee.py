"""VEE against a real PostgreSQL: each rule with real data, estimation, and estimates replaced by measured values."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from gxami_ingest import vee_sql as f
from gxami_ingest.vee import Gap, VeeSettings, find_gaps, flag_names, record_meter_replacement, run_vee
from gxami_ingest.vee_merge import MERGE_REPLACING_ESTIMATES
from gxami_ingest.writer import _CREATE_STAGING, STAGING_COLUMNS
from gxami_store import PartitionKeeper, migrate, storage_kind

pytestmark = pytest.mark.integration

E = "1-0:1.8.0"
P = "1-0:1.7.0"
CLOCK = "0-0:1.0.0"
Q15 = timedelta(minutes=15)
SETTINGS = VeeSettings()
# Recent enough to be looked at (lookback 60 days) and not TIME_PAST (31 days).
T0 = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=5)


async def _db(dsn: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn)
    await migrate(conn)
    return conn


async def _put(
    conn: asyncpg.Connection,
    meter: str,
    quantity: str,
    points: list[tuple[datetime, float]],
    unit: str = "kWh",
    received_at: datetime | None = None,
) -> None:
    keeper = PartitionKeeper()
    await keeper.load(conn, await storage_kind(conn))
    await keeper.ensure(conn, [ts for ts, _ in points])
    await conn.executemany(
        "INSERT INTO readings (meter_id, quantity, ts, value, unit, received_at)"
        " VALUES ($1, $2, $3, $4, $5, COALESCE($6, now()))",
        [(meter, quantity, ts, v, unit, received_at) for ts, v in points],
    )


async def _merge(
    conn: asyncpg.Connection, meter: str, quantity: str, points: list[tuple[datetime, float]], job: str = "job-late"
) -> asyncpg.Record:
    """What ingest does with MERGE_REPLACING_ESTIMATES in place of its merge."""
    async with conn.transaction():
        await conn.execute(_CREATE_STAGING)
        await conn.copy_records_to_table(
            "ingest_staging",
            records=[(meter, quantity, ts, v, "kWh", 0, job) for ts, v in points],
            columns=STAGING_COLUMNS,
        )
        rec = await conn.fetchrow(MERGE_REPLACING_ESTIMATES)
    assert rec is not None
    return rec


async def _flags(conn: asyncpg.Connection, meter: str, quantity: str = E) -> dict[datetime, int]:
    rows = await conn.fetch("SELECT ts, vee_flags FROM readings WHERE meter_id = $1 AND quantity = $2", meter, quantity)
    return {r["ts"]: r["vee_flags"] for r in rows}


def _steady(start: datetime, n: int, first: float = 100.0, step: float = 0.25) -> list[tuple[datetime, float]]:
    return [(start + k * Q15, first + k * step) for k in range(n)]


async def test_a_gap_is_flagged_and_filled_exactly_and_a_late_real_value_replaces_its_estimate(
    database_url: str,
) -> None:
    conn = await _db(database_url)
    try:
        values = {0: 100.0, 1: 100.5, 2: 101.0, 3: 101.5, 7: 104.5, 8: 105.0, 9: 105.5}
        await _put(conn, "G", E, [(T0 + k * Q15, v) for k, v in values.items()])
        # a second meter whose 3-hour gap is longer than the 2 hours interpolation may bridge
        await _put(conn, "G2", E, [(T0, 1.0), (T0 + Q15, 1.5), (T0 + 13 * Q15, 7.5)])

        stats = await run_vee(conn, settings=SETTINGS)
        assert (stats.skipped, stats.channels, stats.estimates_written) == (False, 2, 3)
        flags = await _flags(conn, "G")
        assert flags[T0 + 7 * Q15] == f.GAP_BEFORE
        assert {ts: v for ts, v in flags.items() if ts != T0 + 7 * Q15 and v & f.ESTIMATED == 0} == {
            T0 + k * Q15: 0 for k in values if k != 7
        }
        est = await conn.fetch(
            "SELECT ts, value, vee_flags, job_id FROM readings WHERE meter_id = 'G' AND vee_flags & 1 <> 0 ORDER BY ts"
        )
        assert [(r["ts"], r["value"]) for r in est] == [
            (T0 + 4 * Q15, 102.25),
            (T0 + 5 * Q15, 103.0),
            (T0 + 6 * Q15, 103.75),
        ]
        assert {(r["vee_flags"], r["job_id"]) for r in est} == {(f.ESTIMATED, f.ESTIMATE_SOURCE)}
        assert await find_gaps(conn, "G", E, T0, T0 + timedelta(days=1)) == [Gap(T0 + 3 * Q15, T0 + 7 * Q15, 3)]
        assert await find_gaps(conn, "G2", E, T0, T0 + timedelta(days=1)) == [Gap(T0 + Q15, T0 + 13 * Q15, 11)]
        assert (await _flags(conn, "G2"))[T0 + 13 * Q15] == f.GAP_BEFORE
        assert await conn.fetchval("SELECT count(*) FROM readings WHERE meter_id = 'G2'") == 3  # not estimated
        intervals = await conn.fetch(
            "SELECT interval_start, consumption, quality FROM interval_consumption"
            " WHERE meter_id = 'G' ORDER BY interval_start"
        )
        assert [(r["consumption"], r["quality"]) for r in intervals] == [(0.5, "measured")] * 3 + [
            (0.75, "estimated")
        ] * 4 + [(0.5, "measured")] * 2

        # the real value for 01:15 arrives late: it replaces the estimate, not kept as a revision
        merged = await _merge(conn, "G", E, [(T0 + 5 * Q15, 103.5)])
        assert (merged["inserted"], merged["replaced_estimates"], merged["revisions"]) == (0, 1, 0)
        real = await conn.fetchrow(
            "SELECT value, vee_flags, job_id FROM readings WHERE meter_id = 'G' AND ts = $1", T0 + 5 * Q15
        )
        assert tuple(real) == (103.5, 0, "job-late")
        assert await conn.fetchval("SELECT count(*) FROM reading_revisions") == 0

        again = await run_vee(conn, settings=SETTINGS)
        assert again.estimates_updated == 2
        est = await conn.fetch("SELECT ts, value FROM readings WHERE meter_id = 'G' AND vee_flags & 1 <> 0 ORDER BY ts")
        assert [(r["ts"], r["value"]) for r in est] == [(T0 + 4 * Q15, 102.5), (T0 + 6 * Q15, 104.0)]
        flags = await _flags(conn, "G")
        assert (flags[T0 + 5 * Q15], flags[T0 + 7 * Q15]) == (f.GAP_BEFORE, f.GAP_BEFORE)

        # the same real value redelivered is a no-op; a measured value never overwrites a measured one
        merged = await _merge(conn, "G", E, [(T0 + 5 * Q15, 103.5), (T0 + 6 * Q15, 104.25)])
        assert (merged["inserted"], merged["replaced_estimates"], merged["revisions"]) == (0, 1, 0)
        merged = await _merge(conn, "G", E, [(T0 + 6 * Q15, 104.4)])
        assert (merged["replaced_estimates"], merged["revisions"]) == (0, 1)

        # a pass with nothing new changes nothing
        await run_vee(conn, settings=SETTINGS)
        idle = await run_vee(conn, settings=SETTINGS)
        assert (
            idle.flags_changed,
            idle.clock_flags_changed,
            idle.estimates_written,
            idle.estimates_updated,
            idle.estimates_removed,
        ) == (0, 0, 0, 0, 0)
    finally:
        await conn.close()


async def test_spikes_are_flagged_against_recent_history_and_small_rises_are_not(database_url: str) -> None:
    conn = await _db(database_url)
    try:
        register = _steady(T0, 30)  # 0.25 kWh per 15 minutes
        jump_at = T0 + 30 * Q15
        register += [(jump_at, register[-1][1] + 30.0), (jump_at + Q15, register[-1][1] + 30.25)]
        await _put(conn, "S", E, register)
        power = [(T0 + k * Q15, 1.0 + 0.01 * k) for k in range(10)] + [(T0 + 10 * Q15, 80.0), (T0 + 11 * Q15, 1.2)]
        await _put(conn, "S", P, power, unit="kW")
        quiet = [(T0 + k * Q15, 0.01) for k in range(12)] + [(T0 + 12 * Q15, 0.5)]  # 50 x, but below the floor
        await _put(conn, "S", P + ".quiet", quiet, unit="kW")
        await conn.execute(
            "INSERT INTO vee_rules (quantity, kind, unit, spike_factor, spike_floor)"
            " VALUES ($1, 'instant', 'kW', 10, 1)",
            P + ".quiet",
        )
        await run_vee(conn, settings=SETTINGS)
        energy = await _flags(conn, "S")
        assert {ts for ts, v in energy.items() if v} == {jump_at}
        assert flag_names(energy[jump_at]) == ["SPIKE"]
        watts = await _flags(conn, "S", P)
        assert {ts for ts, v in watts.items() if v} == {T0 + 10 * Q15}
        assert not any((await _flags(conn, "S", P + ".quiet")).values())
        q = await conn.fetchval(
            "SELECT quality FROM interval_consumption WHERE meter_id = 'S' AND interval_end = $1", jump_at
        )
        assert q == "suspect"
    finally:
        await conn.close()


async def test_rollover_is_not_negative_and_a_recorded_replacement_clears_the_negative_flag(database_url: str) -> None:
    conn = await _db(database_url)
    try:
        # a 6-digit register wrapping after 999999.99
        await _put(conn, "R", E, [(T0 + k * Q15, v) for k, v in enumerate([999999.5, 999999.75, 0.0, 0.25])])
        # a meter exchanged between 00:30 and 00:45: the new one starts near zero
        x = [(T0 + k * Q15, v) for k, v in enumerate([5000.0, 5000.25, 5000.5, 0.25, 0.5])]
        await _put(conn, "X", E, x)
        # a binary counter in Wh shown in kWh wraps at 2**32 / 1000, not at a power of ten: configured
        await conn.execute(
            "INSERT INTO meter_channels (meter_id, quantity, register_modulus) VALUES ('R32', $1, $2)", E, 2**32 / 1000
        )
        await _put(conn, "R32", E, [(T0, 4294967.0), (T0 + Q15, 0.2)])
        await run_vee(conn, settings=SETTINGS)

        rolled = await _flags(conn, "R")
        assert rolled[T0 + 2 * Q15] == f.ROLLOVER
        assert not rolled[T0 + 3 * Q15]
        assert (await _flags(conn, "R32"))[T0 + Q15] == f.ROLLOVER
        r = await conn.fetch(
            "SELECT consumption, quality FROM interval_consumption WHERE meter_id = 'R' ORDER BY interval_start"
        )
        assert [(row["consumption"], row["quality"]) for row in r] == [(0.25, "measured")] * 3
        assert await conn.fetchval(
            "SELECT consumption FROM interval_consumption WHERE meter_id = 'R32'"
        ) == pytest.approx(0.496)

        swapped = T0 + 3 * Q15
        assert (await _flags(conn, "X"))[swapped] == f.NEGATIVE_CONSUMPTION
        await record_meter_replacement(
            conn, "X", swapped - timedelta(minutes=5), old_final=5000.6, new_initial=0.0, note="meter exchanged"
        )
        await run_vee(conn, settings=SETTINGS)
        flags = await _flags(conn, "X")
        assert flags[swapped] == f.METER_REPLACED
        assert not flags[swapped + Q15]
        c = await conn.fetchrow(
            "SELECT consumption, quality FROM interval_consumption WHERE meter_id = 'X' AND interval_end = $1", swapped
        )
        assert c["consumption"] == pytest.approx(0.1 + 0.25)
        assert c["quality"] == "measured"
    finally:
        await conn.close()


async def test_readings_stamped_far_from_their_arrival_are_flagged(database_url: str) -> None:
    conn = await _db(database_url)
    try:
        now = datetime.now(UTC)
        v = "1-0:32.7.0"  # voltage: no rule, only the checks every reading gets
        await _put(conn, "T", v, [(now + timedelta(hours=1), 230.0)], unit="V", received_at=now)
        await _put(conn, "T", v, [(now - timedelta(days=40), 231.0)], unit="V", received_at=now)
        await _put(conn, "T", v, [(now - timedelta(days=10), 229.0)], unit="V", received_at=now)
        await _put(conn, "T", v, [(now + timedelta(minutes=2), 232.0)], unit="V", received_at=now)  # within 5 min
        await run_vee(conn, settings=SETTINGS)
        flags = await _flags(conn, "T", v)
        assert sorted(flags.values()) == [0, 0, f.TIME_FUTURE, f.TIME_PAST]
        assert flags[now + timedelta(hours=1)] == f.TIME_FUTURE
    finally:
        await conn.close()


async def test_clock_drift_flags_the_readings_since_the_last_good_clock_check(database_url: str) -> None:
    conn = await _db(database_url)
    try:
        await _put(conn, "C", E, _steady(T0 + Q15, 32))  # 00:15 .. 08:00
        await _put(conn, "C", CLOCK, [(T0 + timedelta(hours=1), 3.0), (T0 + timedelta(hours=5), 95.0)], unit="s")
        unix = (T0 + timedelta(hours=7)).timestamp() + 1.0  # the meter's own clock, 1 s ahead
        await _put(conn, "C", CLOCK, [(T0 + timedelta(hours=7), unix)], unit="unix_s")
        await run_vee(conn, settings=SETTINGS)
        energy = await _flags(conn, "C")
        drifted = {ts for ts, v in energy.items() if v & f.CLOCK_DRIFT}
        assert drifted == {T0 + timedelta(hours=1) + k * Q15 for k in range(1, 17)}  # (01:00, 05:00]
        assert not any(v for ts, v in energy.items() if ts not in drifted)
        clocks = await _flags(conn, "C", CLOCK)
        assert (clocks[T0 + timedelta(hours=1)], clocks[T0 + timedelta(hours=5)], clocks[T0 + timedelta(hours=7)]) == (
            0,
            f.CLOCK_DRIFT,
            0,
        )
        q = await conn.fetch(
            "SELECT DISTINCT quality FROM interval_consumption WHERE meter_id = 'C'"
            " AND interval_end > $1 AND interval_end <= $2",
            T0 + timedelta(hours=1),
            T0 + timedelta(hours=5),
        )
        assert [r["quality"] for r in q] == ["suspect"]
    finally:
        await conn.close()


async def test_a_duplicate_timestamp_with_another_value_is_flagged(database_url: str) -> None:
    conn = await _db(database_url)
    try:
        keeper = PartitionKeeper()
        await keeper.load(conn, await storage_kind(conn))
        await keeper.ensure(conn, [T0])
        await _merge(conn, "D", E, [(T0, 10.0), (T0 + Q15, 10.25)], job="j1")
        merged = await _merge(conn, "D", E, [(T0 + Q15, 11.0)], job="j2")
        assert merged["revisions"] == 1
        await run_vee(conn, settings=SETTINGS)
        flags = await _flags(conn, "D")
        assert (flags[T0], flags[T0 + Q15]) == (0, f.CONFLICTING_DUPLICATE)
        assert await conn.fetchval("SELECT value FROM readings WHERE meter_id = 'D' AND ts = $1", T0 + Q15) == 10.25
    finally:
        await conn.close()


async def test_one_pass_at_a_time_across_pods(database_url: str) -> None:
    a = await _db(database_url)
    b = await asyncpg.connect(database_url)
    try:
        async with a.transaction():
            await a.execute("SELECT pg_advisory_xact_lock($1)", 0x67_78_76_65_65)
            assert (await run_vee(b, settings=SETTINGS)).skipped
        assert not (await run_vee(b, settings=SETTINGS)).skipped
        # the watermark moves: a pass right after looks only at the last moments
        stored = await b.fetchval("SELECT validated_to FROM vee_state")
        assert datetime.now(UTC) - stored < SETTINGS.commit_margin + timedelta(seconds=30)
    finally:
        await a.close()
        await b.close()


async def test_the_periodic_runner_stops_when_asked(database_url: str) -> None:
    from gxami_ingest.vee import run_vee_periodically

    conn = await _db(database_url)
    await _put(conn, "P", E, _steady(T0, 3))
    await conn.close()
    stop = asyncio.Event()
    task = asyncio.create_task(run_vee_periodically(database_url, VeeSettings(every=timedelta(seconds=0.05)), stop))
    conn = await asyncpg.connect(database_url)
    try:
        for _ in range(100):
            if await conn.fetchval("SELECT count(*) FROM vee_state"):
                break
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 5)
        assert await conn.fetchval("SELECT count(*) FROM vee_state") == 1
    finally:
        await conn.close()


def test_settings_refuse_gaps_that_could_leave_a_month_without_partition() -> None:
    with pytest.raises(ValueError, match="max_interpolated_gap"):
        VeeSettings(max_interpolated_gap=timedelta(days=40))
