"""Checks a reading batch must pass before it is stored; failures become dead letters."""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import repeat

from gxami_contracts import ReadingBatch
from gxami_ingest.writer import ReadingRow


class BatchRejectedError(Exception):
    """A batch that cannot be stored, with the reason for the dead-letter topic."""


def check_batch(
    batch: ReadingBatch, *, known_meters: set[str], now: datetime, max_future: timedelta, max_past: timedelta
) -> list[ReadingRow]:
    """Rows to store for ``batch``, or BatchRejectedError naming the meter and the offending reading."""
    meter = batch.meter_id
    if meter not in known_meters:
        raise BatchRejectedError(f"unknown meter {meter!r} (not in the meter registry)")
    latest, earliest = now + max_future, now - max_past
    source = batch.job_id or batch.batch_id
    rows: list[ReadingRow] = []
    for k, s in enumerate(batch.series):
        if not s.ts:
            continue
        # One min/max per series on the hot path; the per-reading walk only to name the culprit.
        if max(s.ts) > latest or min(s.ts) < earliest:
            for i, ts in enumerate(s.ts):
                where = f"meter {meter}: series[{k}] ({s.quantity}) ts[{i}]"
                if ts > latest:
                    raise BatchRejectedError(f"{where} is stamped in the future: {ts.isoformat()}")
                if ts < earliest:
                    raise BatchRejectedError(f"{where} is stamped too far back: {ts.isoformat()}")
        q, unit = s.quantity, s.unit
        rows.extend(zip(repeat(meter), repeat(q), s.ts, s.values, repeat(unit), s.status or repeat(0), repeat(source)))
    return rows
