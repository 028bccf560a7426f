"""Checks a reading batch must pass before it is stored; failures become dead letters."""

from __future__ import annotations

from datetime import datetime, timedelta

from gxami_contracts import ReadingBatch
from gxami_ingest.writer import ReadingRow


class BatchRejectedError(Exception):
    """A batch that cannot be stored, with the reason for the dead-letter topic."""


def check_batch(
    batch: ReadingBatch, *, known_meters: set[str], now: datetime, max_future: timedelta, max_past: timedelta
) -> list[ReadingRow]:
    """Rows to store for ``batch``, or BatchRejectedError naming the meter and the offending reading."""
    if batch.meter_id not in known_meters:
        raise BatchRejectedError(f"unknown meter {batch.meter_id!r} (not in the meter registry)")
    readings = batch.readings
    if not readings:
        return []
    # One min/max over the batch on the hot path; the per-reading walk only to name the culprit.
    stamps = [r.ts for r in readings]
    if max(stamps) > now + max_future or min(stamps) < now - max_past:
        for i, r in enumerate(readings):
            where = f"meter {batch.meter_id}: readings[{i}] ({r.quantity})"
            if r.ts > now + max_future:
                raise BatchRejectedError(f"{where} is stamped in the future: {r.ts.isoformat()}")
            if r.ts < now - max_past:
                raise BatchRejectedError(f"{where} is stamped too far back: {r.ts.isoformat()}")
    meter, source = batch.meter_id, batch.job_id or batch.batch_id
    return [(meter, r.quantity, r.ts, r.value, r.unit, r.status or 0, source) for r in readings]
