"""A report Table as CSV, and the load-curve and comparison charts as PNG or SVG (matplotlib, Agg, no pyplot)."""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime
from typing import Any, Final, Literal, cast

import matplotlib

matplotlib.use("Agg")  # never a display: the server renders to bytes

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from gxami_reports.energy import ReportInputError
from gxami_reports.energy_reports import Cell, Table

ImageFormat = Literal["png", "svg"]
MIN_SIDE: Final = 100
MAX_SIDE: Final = 4000
_DPI: Final = 100
_SVG_SIZE = re.compile(r'<svg([^>]*?) width="[0-9.]+pt" height="[0-9.]+pt"')


def _cell(value: Cell) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _number(value: Cell) -> float:
    """A chart height: the number, or 0 where the report has none."""
    return float(value) if isinstance(value, int | float) else 0.0


def to_csv(table: Table) -> str:
    """The rows under a header of the columns; empty cell for none, true/false, numbers as in the JSON."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(table.columns)
    for row in table.rows:
        writer.writerow([_cell(row.get(c)) for c in table.columns])
    return buf.getvalue()


def image_size(width: str | None, height: str | None) -> tuple[int, int]:
    """Width and height in pixels from the query (default 800 x 400), each within 100 .. 4000."""
    out: list[int] = []
    for name, raw, default in (("width", width, 800), ("height", height, 400)):
        if raw is None:
            out.append(default)
            continue
        try:
            value = int(raw)
        except ValueError:
            raise ReportInputError(f"query parameter {name!r} must be a whole number of pixels") from None
        if not MIN_SIDE <= value <= MAX_SIDE:
            raise ReportInputError(f"query parameter {name!r} must be between {MIN_SIDE} and {MAX_SIDE}")
        out.append(value)
    return out[0], out[1]


def _figure(fmt: ImageFormat, width: int, height: int) -> Figure:
    # SVG user units are points at 72 per inch: a figure of width/72 inches is `width` units wide.
    dpi = 72 if fmt == "svg" else _DPI
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _render(fig: Figure, fmt: ImageFormat, width: int, height: int) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=fig.dpi, metadata={"Date": None} if fmt == "svg" else None)
    data = buf.getvalue()
    if fmt == "svg":
        # Pixel sizes, as asked, rather than points (the viewBox is the same numbers).
        text = _SVG_SIZE.sub(rf'<svg\1 width="{width}" height="{height}"', data.decode("utf-8"), count=1)
        data = text.encode("utf-8")
    return data


def load_curve_chart(table: Table, fmt: ImageFormat, width: int, height: int) -> bytes:
    """The load curve as steps over time; estimated intervals drawn as orange markers."""
    return _render(load_curve_figure(table, fmt, width, height), fmt, width, height)


def load_curve_figure(table: Table, fmt: ImageFormat, width: int, height: int) -> Figure:
    """The load-curve figure: line 0 the values, line 1 (if any) the estimated ones."""
    fig = _figure(fmt, width, height)
    ax = fig.add_subplot()
    # matplotlib converts datetimes itself; its stubs only admit arrays of numbers.
    ends = cast("Any", [datetime.fromisoformat(str(r["interval_end"])) for r in table.rows])
    values = [_number(r["value"]) for r in table.rows]
    ax.step(ends, values, where="pre", color="#1f77b4", linewidth=1.2, label="measured")
    est = [(e, v) for e, v, r in zip(ends, values, table.rows, strict=True) if r["estimated"]]
    if est:
        ax.plot(
            cast("Any", [e for e, _ in est]), [v for _, v in est], "o", color="#ff7f0e", markersize=3, label="estimated"
        )
    who = table.meta.get("meter") or table.meta.get("node")
    ax.set_title(f"{who}: {table.meta.get('medium')} per interval, {table.meta['from']} .. {table.meta['to']}")
    ax.set_ylabel(str(table.meta.get("unit")))
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right")
    fig.autofmt_xdate()
    return fig


def comparison_chart(table: Table, medium: str, fmt: ImageFormat, width: int, height: int) -> bytes:
    """Bars per node line (and residual): this period, the previous one, the same one last year."""
    fig = _figure(fmt, width, height)
    ax = fig.add_subplot()
    rows = [r for r in table.rows if r["medium"] == medium]
    labels = [f"{r['node']}{' residual' if r['line'] == 'residual' else ''} {r['bucket']}" for r in rows]
    x = list(range(len(rows)))
    for i, (column, colour) in enumerate((("value", "#1f77b4"), ("previous", "#aec7e8"), ("last_year", "#c7c7c7"))):
        heights = [_number(r[column]) for r in rows]
        ax.bar([p + (i - 1) * 0.27 for p in x], heights, width=0.27, color=colour, label=column.replace("_", " "))
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
    unit = rows[0]["unit"] if rows else ""
    ax.set_ylabel(str(unit))
    ax.set_title(f"{table.meta['node']}: {medium}, {table.meta['from']} .. {table.meta['to']}")
    ax.legend(loc="upper right")
    ax.grid(True, axis="y", alpha=0.3)
    return _render(fig, fmt, width, height)
