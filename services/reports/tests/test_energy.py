"""Periods, the roll-up with its residual, rounding, time of use, CSV and charts (no database)."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime

import pytest
from PIL import Image

from gxami_reports.energy import (
    Membership,
    Period,
    ReportInputError,
    counted_meters,
    node_totals,
    residuals,
    roll_up,
    rounded,
)
from gxami_reports.energy_reports import LOAD_CURVE_COLUMNS, Table
from gxami_reports.export import image_size, load_curve_chart, load_curve_figure, to_csv
from gxami_reports.tou import tariff_at
from gxcore.tariffs import parse_tariff

D = date(2026, 10, 5)
TREE = [
    Membership("MAIN", "s/b1", None),
    Membership("F1", "s/b1/f1", "MAIN"),
    Membership("F2", "s/b1/f2", "MAIN"),
    Membership("B2", "s/b2", None),
    Membership("LOOSE", None, None),
]


def test_periods_compare_with_the_step_before_and_last_year() -> None:
    p = Period(date(2026, 3, 1), date(2026, 3, 31))
    assert p.previous("month") == Period(date(2026, 2, 1), date(2026, 2, 28))
    assert p.previous("total") == Period(date(2026, 1, 29), date(2026, 2, 28))
    assert p.previous("day") == Period(date(2026, 2, 28), date(2026, 3, 30))
    assert Period(date(2028, 2, 29), date(2028, 2, 29)).last_year() == Period(date(2027, 2, 28), date(2027, 2, 28))
    assert p.buckets("month") == [date(2026, 3, 1)]
    assert len(p.buckets("day")) == 31
    assert p.start == datetime(2026, 3, 1, tzinfo=UTC) and p.end == datetime(2026, 4, 1, tzinfo=UTC)
    with pytest.raises(ReportInputError, match="before 'from'"):
        Period(D, date(2026, 10, 4))


def test_the_tree_counts_each_kwh_once_and_the_residual_is_its_own_line() -> None:
    assert counted_meters(TREE, "s") == ["B2", "MAIN"]
    assert counted_meters(TREE, "s/b1") == ["MAIN"]
    assert counted_meters(TREE, "s/b1/f1") == ["F1"]
    per = {
        ("MAIN", "electricity", D): 10.0,
        ("F1", "electricity", D): 3.25,
        ("F2", "electricity", D): 4.5,
        ("F1", "gas", D): 9.0,  # another medium: never subtracted from an electricity main
        ("B2", "electricity", D): 1.0,
    }
    assert node_totals(per, TREE, "s") == {("electricity", D): 11.0}
    assert node_totals(per, TREE, "s/b1/f1") == {("electricity", D): 3.25, ("gas", D): 9.0}
    assert residuals(per, TREE, ["MAIN"]) == {("MAIN", "electricity", D): 2.25}
    # A submeter in another building than its main: counted there, and not again at the site.
    far = [*TREE, Membership("X", "s/b2/f9", "MAIN")]
    totals, flagged = roll_up({**per, ("X", "electricity", D): 0.5}, far, [("X", "electricity", D)])
    assert totals[("s/b2/f9", "electricity", D)] == 0.5
    assert totals[("s/b2", "electricity", D)] == 1.5
    assert totals[("s", "electricity", D)] == 11.0
    assert flagged == {("s/b2/f9", "electricity", D), ("s/b2", "electricity", D)}


def test_values_are_rounded_to_the_units_resolution() -> None:
    assert rounded(32.03299999999581, "kWh") == 32.033
    assert rounded(0.0004, "m3") == 0.0
    assert str(rounded(-0.0001, "kWh")) == "0.0"
    assert rounded(None, "kWh") is None


def test_tariff_at_follows_seasons_weekdays_and_special_days() -> None:
    cal = parse_tariff(
        """
name: T
activate_now: true
seasons: [{name: winter, start: "10-01", week: w}, {name: summer, start: "04-01", week: s}]
weeks:
  - {name: w, monday: work, tuesday: work, wednesday: work, thursday: work, friday: work, saturday: rest, sunday: rest}
  - {name: s, monday: rest, tuesday: rest, wednesday: rest, thursday: rest, friday: rest, saturday: rest, sunday: rest}
days:
  - {name: work, id: 1, switches: [{at: "00:00", tariff: 2}, {at: "07:00", tariff: 1}, {at: "23:00", tariff: 2}]}
  - {name: rest, id: 2, switches: [{at: "00:00", tariff: 3}]}
special_days: [{index: 1, date: "12-25", day: rest}]
"""
    )
    assert tariff_at(cal, datetime(2026, 10, 5, 6, 59, tzinfo=UTC)) == 2  # a winter Monday before 07:00
    assert tariff_at(cal, datetime(2026, 10, 5, 7, 0, tzinfo=UTC)) == 1
    assert tariff_at(cal, datetime(2026, 10, 5, 23, 0, tzinfo=UTC)) == 2
    assert tariff_at(cal, datetime(2026, 10, 10, 12, tzinfo=UTC)) == 3  # Saturday
    assert tariff_at(cal, datetime(2026, 2, 2, 12, tzinfo=UTC)) == 1  # January: last year's winter still runs
    assert tariff_at(cal, datetime(2026, 6, 1, 12, tzinfo=UTC)) == 3  # summer
    assert tariff_at(cal, datetime(2026, 12, 25, 12, tzinfo=UTC)) == 3  # a Friday, but Christmas


def _curve() -> Table:
    rows = [
        {
            "interval_start": datetime(2026, 10, 5, h, tzinfo=UTC).isoformat(),
            "interval_end": datetime(2026, 10, 5, h + 1, tzinfo=UTC).isoformat(),
            "value": float(h % 5) + 0.125,
            "unit": "kWh",
            "kw": float(h % 5) + 0.125,
            "estimated": h == 3,
            "meters": 1,
        }
        for h in range(12)
    ]
    meta = {
        "meter": "M",
        "node": None,
        "medium": "electricity",
        "unit": "kWh",
        "from": "2026-10-05",
        "to": "2026-10-05",
    }
    return Table("load_curve", meta, LOAD_CURVE_COLUMNS, rows)  # type: ignore[arg-type]  # literal rows are Cells


def test_csv_holds_the_json_values() -> None:
    text = to_csv(_curve())
    lines = text.splitlines()
    assert lines[0] == ",".join(LOAD_CURVE_COLUMNS)
    assert lines[4] == "2026-10-05T03:00:00+00:00,2026-10-05T04:00:00+00:00,3.125,kWh,3.125,true,1"
    assert len(lines) == 13


def test_charts_draw_the_reports_numbers_at_the_asked_size() -> None:
    table = _curve()
    fig = load_curve_figure(table, "png", 300, 200)
    line = fig.axes[0].lines[0]
    assert list(line.get_ydata()) == [r["value"] for r in table.rows]  # type: ignore[call-overload]  # numbers
    marks = fig.axes[0].lines[1]
    assert list(marks.get_ydata()) == [3.125]  # type: ignore[call-overload]  # the estimated interval
    with Image.open(io.BytesIO(load_curve_chart(table, "png", 300, 200))) as img:
        assert img.size == (300, 200)
    svg = ET.fromstring(load_curve_chart(table, "svg", 300, 200))
    assert (svg.get("width"), svg.get("height"), svg.get("viewBox")) == ("300", "200", "0 0 300 200")
    assert image_size(None, None) == (800, 400)
    with pytest.raises(ReportInputError, match="'height' must be a whole number"):
        image_size("300", "tall")
