"""Checks a reading batch must pass before it is stored; failures become dead letters.

The batch was validated once already, where it was read off the wire (``ReadingBatch.from_wire``:
types, bounds, canonical text); here only what needs ingest's knowledge (the meter registry, the
clock) is checked, and the series become the COPY rows as they are: a number goes to
``readings.value`` (an int is converted to double by the COPY itself), a text, bytes, bit-string or
boolean value to ``register_values``, which no numeric VEE rule reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from itertools import repeat

from gxami_contracts import ReadingBatch
from gxami_ingest.writer import ReadingRow, ValueRow


class BatchRejectedError(Exception):
    """A batch that cannot be stored, with the reason for the dead-letter topic."""


class CheckedRows(list[ReadingRow]):
    """The ``readings`` rows of a batch (the list itself) and its ``register_values`` rows (``values``)."""

    def __init__(self, rows: Iterable[ReadingRow] = (), values: Iterable[ValueRow] = ()) -> None:
        super().__init__(rows)
        self.values: list[ValueRow] = list(values)

    @property
    def total(self) -> int:
        """Rows of both tables."""
        return len(self) + len(self.values)


def _check_times(
    meter: str, k: int, quantity: str, ts: Sequence[datetime], latest: datetime, earliest: datetime
) -> None:
    # One min/max per series on the hot path; the per-reading walk only to name the culprit.
    if max(ts) > latest or min(ts) < earliest:
        for i, t in enumerate(ts):
            where = f"meter {meter}: series[{k}] ({quantity}) ts[{i}]"
            if t > latest:
                raise BatchRejectedError(f"{where} is stamped in the future: {t.isoformat()}")
            if t < earliest:
                raise BatchRejectedError(f"{where} is stamped too far back: {t.isoformat()}")


def check_batch(
    batch: ReadingBatch, *, known_meters: set[str], now: datetime, max_future: timedelta, max_past: timedelta
) -> CheckedRows:
    """Rows to store for ``batch``, or BatchRejectedError naming the meter and the offending reading."""
    meter = batch.meter_id
    if meter not in known_meters:
        raise BatchRejectedError(f"unknown meter {meter!r} (not in the meter registry)")
    latest, earliest = now + max_future, now - max_past
    job_id = batch.job_id or batch.batch_id  # readings.job_id
    rows = CheckedRows()
    for k, s in enumerate(batch.series):
        if not s.ts:
            continue
        _check_times(meter, k, s.quantity, s.ts, latest, earliest)
        q, unit = s.quantity, s.unit
        rows.extend(zip(repeat(meter), repeat(q), s.ts, s.values, repeat(unit), s.status or repeat(0), repeat(job_id)))
    for k, t in enumerate(batch.text_series):
        if not t.ts:
            continue
        _check_times(meter, k, t.quantity, t.ts, latest, earliest)
        rows.values.extend(
            zip(
                repeat(meter),
                repeat(t.quantity),
                t.ts,
                repeat(t.kind),
                t.values,
                repeat(t.unit),
                t.status or repeat(0),
                repeat(job_id),
            )
        )
    return rows
