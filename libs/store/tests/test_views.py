"""The BI views and roll-ups with real data on plain PostgreSQL, and what bi_reader may see."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from gxami_store import PartitionKeeper, migrate, storage_kind
from gxami_store.aggregates import refresh_aggregates, refresh_aggregates_periodically

pytestmark = pytest.mark.integration

E = "1-0:1.8.0"
Q15 = timedelta(minutes=15)
Row = tuple[str, str, datetime, float, str, int]


def t(s: str) -> datetime:
    return datetime.fromisoformat(s).replace(tzinfo=UTC)


async def _db(dsn: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn)
    await migrate(conn)
    return conn


async def _meter(conn: asyncpg.Connection, meter_id: str, *, enabled: bool = True) -> None:
    await conn.execute(
        "INSERT INTO meters (meter_id, protocol, url, link_id, profile, interval_s, enabled)"
        " VALUES ($1, 'dlms', 'tcp://m:1', 'tcp://m:1', 'generic', 900, $2)",
        meter_id,
        enabled,
    )


async def _put(conn: asyncpg.Connection, rows: list[Row]) -> None:
    keeper = PartitionKeeper()
    await keeper.load(conn, await storage_kind(conn))
    await keeper.ensure(conn, [r[2] for r in rows])
    await conn.executemany(
        "INSERT INTO readings (meter_id, quantity, ts, value, unit, vee_flags) VALUES ($1, $2, $3, $4, $5, $6)", rows
    )


def _series(meter: str, start: datetime, values: list[float], step: timedelta = Q15, q: str = E) -> list[Row]:
    return [(meter, q, start + i * step, v, "kWh", 0) for i, v in enumerate(values)]


async def test_interval_and_daily_consumption_count_across_a_register_rollover(database_url: str) -> None:
    conn = await _db(database_url)
    try:
        await _meter(conn, "ROLL")
        # a 6-digit register (wraps after 999999.99) passing zero at 00:15
        values = [999998.75, 999999.0, 999999.25, 999999.5, 999999.75, 0.0, 0.25, 0.5, 0.75]
        await _put(conn, _series("ROLL", t("2026-03-01 23:00"), values))
        rows = await conn.fetch(
            "SELECT interval_start, interval_end, consumption, quality, vee_flags FROM interval_consumption"
            " WHERE meter_id = 'ROLL' ORDER BY interval_start"
        )
        assert len(rows) == 8
        assert [r["consumption"] for r in rows] == [0.25] * 8
        assert rows[0]["interval_start"] == t("2026-03-01 23:00")
        assert rows[0]["interval_end"] == t("2026-03-01 23:15")
        assert {r["quality"] for r in rows} == {"measured"}
        daily = await conn.fetch("SELECT * FROM daily_consumption WHERE meter_id = 'ROLL' ORDER BY day")
        # 2026-03-01 closes at 00:00 (999999.75); 2026-03-02 ends at 01:00 (0.75): 1.0 kWh in 4 readings
        assert [(r["day"], r["kwh"], r["readings"]) for r in daily] == [(date(2026, 3, 2), 1.0, 4)]
    finally:
        await conn.close()


async def test_daily_consumption_keeps_its_columns_and_the_midnight_convention_in_any_time_zone(
    database_url: str,
) -> None:
    conn = await _db(database_url)
    try:
        await _meter(conn, "DAY")
        await _put(
            conn,
            [
                ("DAY", E, t(s), v, "kWh", 0)
                for s, v in [
                    ("2026-03-01 00:00", 100.0),
                    ("2026-03-01 12:00", 105.0),
                    ("2026-03-02 00:00", 110.0),
                    ("2026-03-02 00:15", 111.0),
                    ("2026-03-03 00:00", 120.0),
                    ("2026-03-05 00:00", 130.0),
                ]
            ],
        )
        expected = [(date(2026, 3, 1), 10.0, 2), (date(2026, 3, 2), 10.0, 2)]
        for zone in ("UTC", "America/New_York", "Asia/Tokyo"):
            await conn.execute(f"SET TimeZone = '{zone}'")
            rows = await conn.fetch(
                "SELECT meter_id, day, kwh, readings FROM daily_consumption WHERE meter_id = 'DAY' ORDER BY day"
            )
            # 2026-02-28 is closed by the midnight reading but has no day before it; 2026-03-04
            # (closed at 03-05 00:00) follows 03-02, not 03-03 (no reading in it): no row
            assert [(r["day"], r["kwh"], r["readings"]) for r in rows] == expected, zone
        cols = [
            r["column_name"]
            for r in await conn.fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'daily_consumption'"
                " ORDER BY ordinal_position"
            )
        ]
        assert cols[:4] == ["meter_id", "day", "kwh", "readings"]
    finally:
        await conn.close()


async def test_monthly_consumption_gives_time_of_use_billing_determinants(database_url: str) -> None:
    conn = await _db(database_url)
    try:
        await _meter(conn, "TOU")
        stamps = ["2026-01-01 00:00", "2026-01-15 00:00", "2026-02-01 00:00", "2026-03-01 00:00"]
        registers = {
            "1-0:1.8.1": [100.0, 150.0, 220.0, 300.0],
            "1-0:1.8.2": [50.0, 60.0, 90.0, 95.0],
            "1-0:1.8.0": [150.0, 210.0, 310.0, 395.0],
            "1-0:2.8.0": [10.0, 10.0, 12.0, 20.0],
        }
        await _put(
            conn,
            [("TOU", q, t(s), v, "kWh", 0) for q, vs in registers.items() for s, v in zip(stamps, vs, strict=True)],
        )
        rows = await conn.fetch("SELECT * FROM monthly_consumption WHERE meter_id = 'TOU' ORDER BY month, quantity")
        got = {(r["month"], r["quantity"]): r for r in rows}
        # the reading at 2026-01-01 00:00 closes December: a partial first month
        dec = got[(date(2025, 12, 1), "1-0:1.8.1")]
        assert dec["partial"] and dec["consumption"] == 0.0
        jan = {q: got[(date(2026, 1, 1), q)] for q in registers}
        feb = {q: got[(date(2026, 2, 1), q)] for q in registers}
        assert {q: r["consumption"] for q, r in jan.items()} == {
            "1-0:1.8.1": 120.0,
            "1-0:1.8.2": 40.0,
            "1-0:1.8.0": 160.0,
            "1-0:2.8.0": 2.0,
        }
        assert {q: r["consumption"] for q, r in feb.items()} == {
            "1-0:1.8.1": 80.0,
            "1-0:1.8.2": 5.0,
            "1-0:1.8.0": 85.0,
            "1-0:2.8.0": 8.0,
        }
        assert (jan["1-0:1.8.1"]["tariff"], jan["1-0:1.8.2"]["tariff"], jan["1-0:1.8.0"]["tariff"]) == (1, 2, 0)
        assert (jan["1-0:1.8.1"]["direction"], jan["1-0:2.8.0"]["direction"]) == ("import", "export")
        r = jan["1-0:1.8.1"]
        assert (r["start_ts"], r["start_value"], r["end_ts"], r["end_value"]) == (
            t("2026-01-01 00:00"),
            100.0,
            t("2026-02-01 00:00"),
            220.0,
        )
        assert not r["partial"] and r["quality"] == "measured" and r["unit"] == "kWh"
        # time-of-use registers add up to the total register
        assert jan["1-0:1.8.1"]["consumption"] + jan["1-0:1.8.2"]["consumption"] == jan["1-0:1.8.0"]["consumption"]
    finally:
        await conn.close()


async def test_read_completeness_counts_expected_received_estimated_and_missing(database_url: str) -> None:
    conn = await _db(database_url)
    try:
        await _meter(conn, "RC", enabled=False)  # disabled: days end at its last reading
        day1 = t("2026-03-10 00:00")
        absent = {10, 11, 12, 40, 41}  # interval ends 02:30..03:00, 10:00, 10:15 are missing
        rows: list[Row] = [("RC", E, day1 + k * Q15, 100.0 + k, "kWh", 0) for k in range(1, 97) if k not in absent]
        rows.append(("RC", E, day1 + 40 * Q15, 140.0, "kWh", 1))  # an estimate for one of them
        rows.append(("RC", E, day1 + timedelta(hours=10, minutes=7), 139.5, "kWh", 0))  # off the grid
        day2 = day1 + timedelta(days=1)
        rows += [("RC", E, day2 + k * Q15, 200.0 + k, "kWh", 0) for k in range(1, 25)]  # until 06:00
        day4 = day1 + timedelta(days=3)
        rows += [("RC", E, day4 + k * Q15, 300.0 + k, "kWh", 0) for k in range(1, 5)]  # until 01:00
        await _put(conn, rows)
        got = await conn.fetch(
            "SELECT day, interval_s, expected, received, estimated, missing, completeness FROM read_completeness"
            " WHERE meter_id = 'RC' AND quantity = $1 ORDER BY day",
            E,
        )
        assert [(r["day"], r["expected"], r["received"], r["estimated"], r["missing"]) for r in got] == [
            (date(2026, 3, 10), 96, 91, 1, 4),
            (date(2026, 3, 11), 96, 24, 0, 72),
            (date(2026, 3, 12), 96, 0, 0, 96),
            (date(2026, 3, 13), 4, 4, 0, 0),
        ]
        assert got[0]["interval_s"] == 900
        assert float(got[0]["completeness"]) == round(91 / 96, 4)
        assert float(got[3]["completeness"]) == 1.0
    finally:
        await conn.close()


async def test_read_completeness_of_an_enabled_meter_runs_to_today(database_url: str) -> None:
    conn = await _db(database_url)
    try:
        await _meter(conn, "LIVE")
        now = datetime.now(UTC)
        start = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)
        await _put(conn, _series("LIVE", start + Q15, [1.0, 2.0]))
        got = await conn.fetch(
            "SELECT day, expected, received FROM read_completeness WHERE meter_id = 'LIVE' ORDER BY day"
        )
        assert [r["day"] for r in got] == [start.date() + timedelta(days=i) for i in range(3)]
        assert (got[0]["expected"], got[0]["received"]) == (96, 2)
        assert got[1]["received"] == 0 and got[1]["expected"] == 96
        # today: only the intervals that have ended so far are expected
        assert got[2]["expected"] <= (now - now.replace(hour=0, minute=0, second=0, microsecond=0)) // Q15
    finally:
        await conn.close()


async def test_rollups_use_interval_ending_buckets_and_refresh_on_plain_postgresql(database_url: str) -> None:
    conn = await _db(database_url)
    try:
        await _meter(conn, "AGG")
        await _put(conn, _series("AGG", t("2026-04-01 23:30"), [10.0, 11.0, 12.0, 13.0, 15.0]))  # until 00:30
        assert await conn.fetchval("SELECT count(*) FROM readings_15m WHERE meter_id = 'AGG'") == 0
        assert await refresh_aggregates(conn) == ["readings_15m", "readings_1h", "readings_1d"]
        r15 = await conn.fetch("SELECT * FROM readings_15m WHERE meter_id = 'AGG' ORDER BY interval_start")
        # the reading stamped 23:45 belongs to 23:30-23:45
        assert [(r["interval_start"], r["interval_end"], r["last_value"]) for r in r15] == [
            (t("2026-04-01 23:15"), t("2026-04-01 23:30"), 10.0),
            (t("2026-04-01 23:30"), t("2026-04-01 23:45"), 11.0),
            (t("2026-04-01 23:45"), t("2026-04-02 00:00"), 12.0),
            (t("2026-04-02 00:00"), t("2026-04-02 00:15"), 13.0),
            (t("2026-04-02 00:15"), t("2026-04-02 00:30"), 15.0),
        ]
        r1d = await conn.fetch("SELECT * FROM readings_1d WHERE meter_id = 'AGG' ORDER BY interval_start")
        assert [
            (r["interval_start"], r["readings"], r["first_value"], r["last_value"], r["max_value"]) for r in r1d
        ] == [(t("2026-04-01 00:00"), 3, 10.0, 12.0, 12.0), (t("2026-04-02 00:00"), 2, 13.0, 15.0, 15.0)]
        r1h = await conn.fetch(
            "SELECT interval_start, readings, avg_value FROM readings_1h WHERE meter_id = 'AGG' ORDER BY interval_start"
        )
        assert [(r["interval_start"], r["readings"], r["avg_value"]) for r in r1h] == [
            (t("2026-04-01 23:00"), 3, 11.0),
            (t("2026-04-02 00:00"), 2, 14.0),
        ]
    finally:
        await conn.close()


async def test_bi_reader_reads_the_views_and_no_table(database_url: str) -> None:
    conn = await _db(database_url)
    try:
        await _meter(conn, "BI")
        await _put(conn, _series("BI", t("2026-05-01 23:30"), [1.0, 2.0, 3.0, 4.0]))
        await conn.execute("SET ROLE bi_reader")
        for view in (
            "interval_consumption",
            "daily_consumption",
            "monthly_consumption",
            "read_completeness",
            "meter_last_seen",
            "readings_15m",
            "readings_1h",
            "readings_1d",
            "vee_flag_catalog",
            "register_values_typed",
            "meter_register_values",
        ):
            await conn.fetch(f"SELECT * FROM {view}")
        assert await conn.fetchval("SELECT count(*) FROM interval_consumption WHERE meter_id = 'BI'") == 3
        assert await conn.fetchval("SELECT vee_flag_names(4 | 256)") == ["SPIKE", "CLOCK_DRIFT"]
        for table in (
            "readings",
            "meters",
            "meter_schedule",
            "reading_revisions",
            "vee_rules",
            "meter_replacements",
            "command_audit",
            "schema_migrations",
            "register_values",
            "register_value_revisions",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
                await conn.fetch(f"SELECT 1 FROM {table} LIMIT 1")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("REFRESH MATERIALIZED VIEW readings_15m")
        await conn.execute("RESET ROLE")
        assert not await conn.fetchval("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'bi_reader'")
    finally:
        await conn.close()


async def test_the_periodic_refresh_fills_the_rollups_and_stops_when_asked(database_url: str) -> None:
    conn = await _db(database_url)
    try:
        await _meter(conn, "PER")
        await _put(conn, _series("PER", t("2026-04-01 10:00"), [1.0, 2.0]))
        stop = asyncio.Event()
        task = asyncio.create_task(refresh_aggregates_periodically(database_url, timedelta(seconds=0.05), stop))
        try:
            for _ in range(100):
                if await conn.fetchval("SELECT count(*) FROM readings_1d WHERE meter_id = 'PER'"):
                    break
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await asyncio.wait_for(task, 5)
        assert await conn.fetchval("SELECT readings FROM readings_1d WHERE meter_id = 'PER'") == 2
    finally:
        await conn.close()


async def test_text_bytes_bits_and_booleans_are_queryable_typed_beside_the_numbers(database_url: str) -> None:
    conn = await _db(database_url)
    try:
        at = t("2026-06-01 12:00")
        await _put(conn, [("TXT", E, at, 38296.251, "kWh", 0)])
        await conn.executemany(
            "INSERT INTO register_values (meter_id, quantity, ts, kind, value) VALUES ('TXT', $1, $2, $3, $4)",
            [
                ("0-0:42.0.0", at - timedelta(days=1), "text", "OLDNAME"),
                ("0-0:42.0.0", at, "text", "SIM00100000"),
                ("0-0:96.1.0", at, "bytes", "00ff10"),
                ("0-0:97.97.0", at, "bits", "0101"),
                ("0-0:96.3.10", at, "bool", "true"),
            ],
        )
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "INSERT INTO register_values (meter_id, quantity, ts, kind, value)"
                " VALUES ('TXT', 'x-x:1', $1, 'float', '1')",
                at,
            )
        await conn.execute("SET ROLE bi_reader")
        rows = await conn.fetch(
            "SELECT quantity, kind, number_value, text_value, bytes_value, bool_value, bits_value::text AS bits"
            " FROM register_values_typed WHERE meter_id = 'TXT' AND ts = $1 ORDER BY quantity",
            at,
        )
        assert [tuple(r) for r in rows] == [
            ("0-0:42.0.0", "text", None, "SIM00100000", None, None, None),
            ("0-0:96.1.0", "bytes", None, "00ff10", b"\x00\xff\x10", None, None),
            ("0-0:96.3.10", "bool", None, "true", None, True, None),
            ("0-0:97.97.0", "bits", None, "0101", None, None, "0101"),
            (E, "number", 38296.251, "38296.251", None, None, None),
        ]
        latest = await conn.fetchval(
            "SELECT text_value FROM meter_register_values WHERE meter_id = 'TXT' AND quantity = '0-0:42.0.0'"
        )
        assert latest == "SIM00100000"
        await conn.execute("RESET ROLE")
    finally:
        await conn.close()


DICTIONARY = Path(__file__).resolve().parents[3] / "docs" / "data-dictionary.md"


def _dictionary_sections() -> dict[str, set[str]]:
    """View name -> the columns the data dictionary section whose heading names the view describes:
    the `names` in the first cell of its column table, or in its text where it has no table."""
    sections: dict[str, set[str]] = {}
    for part in re.split(r"^## ", DICTIONARY.read_text(encoding="utf-8"), flags=re.MULTILINE)[1:]:
        heading, _, body = part.partition("\n")
        cells = [line.split("|")[1] for line in body.splitlines() if line.startswith("| `")]
        names = set(re.findall(r"`([a-z_0-9]+)`", " ".join(cells) if cells else body))
        for view in re.findall(r"[a-z_0-9]+", heading.split("(")[0]):
            sections[view] = names
    return sections


async def test_the_data_dictionary_names_every_column_of_every_documented_view(database_url: str) -> None:
    # What a BI tool sees (bi_reader's views) must be what the dictionary describes, renames included.
    conn = await _db(database_url)
    try:
        granted = {
            r["table_name"]
            for r in await conn.fetch(
                "SELECT DISTINCT table_name FROM information_schema.role_table_grants"
                " WHERE grantee = 'bi_reader' AND privilege_type = 'SELECT'"
            )
        }
        sections = _dictionary_sections()
        documented = granted & set(sections)
        assert granted - documented == {"vee_flag_catalog"}  # its columns: the VEE flags table
        for view in sorted(documented):
            cols = {
                r["attname"]
                for r in await conn.fetch(
                    "SELECT attname FROM pg_attribute WHERE attrelid = $1::text::regclass AND attnum > 0"
                    " AND NOT attisdropped",
                    view,
                )
            }
            assert cols - sections[view] == set(), f"{view}: columns missing from docs/data-dictionary.md"
        assert "status" in sections["register_values_typed"]
    finally:
        await conn.close()
