"""Reading batches: a driver's readings turned into the contract once, and cut to fit the broker.

:func:`reading_batch` makes the columnar series straight from :class:`gxcore.readings.Reading`
(one validation per series, in pydantic-core; no per-reading model in between). Each value is
put into its wire form exactly once (:func:`wire_value`): an int stays an int, a Decimal or float
becomes the double nearest to it (its shortest repr is the meter's digits), text, bytes, bits and
booleans go to ``text_series`` as canonical text. A reading the contract refuses (a NaN, a
malformed quantity from a plug-in driver) is left out and returned, the others kept.

A long back-fill must reach ingest, not the dead-letter topic. One job's readings travel as one
:class:`~gxami_contracts.ReadingBatch`. A meter asked for weeks
of 1-minute load profile returns more than the producer may send in one request (1 MiB) and more
than a consumer reads as one message, so the batch is halved, series by series, until every part
encodes below the bound. Ingest stores readings on their natural key, so how a job's readings are
cut into messages changes nothing in the database.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal

from pydantic import ValidationError

from gxami_contracts import ReadingBatch, ReadingSeries, TextSeries
from gxami_contracts.messages import INT8_MAX, INT8_MIN
from gxami_runtime.kafka import describe_validation_error
from gxcore.readings import BitString, MeterValue, Reading

WireValue = int | float | str


def wire_value(value: MeterValue) -> tuple[str, WireValue]:
    """The kind (``number``, ``text``, ``bytes``, ``bits``, ``bool``) and wire form of one value."""
    if isinstance(value, bool):
        return "bool", "true" if value else "false"
    if isinstance(value, int):
        return "number", value if INT8_MIN <= value <= INT8_MAX else float(value)
    if isinstance(value, Decimal) and not value.is_finite():
        return "number", float("nan")  # refused by the contract like a NaN float (an sNaN cannot be converted)
    if isinstance(value, Decimal | float):
        return "number", float(value)  # correctly rounded: its repr is the decimal's digits (<= 15)
    if isinstance(value, str):
        return "text", value
    if isinstance(value, bytes | bytearray):
        return "bytes", bytes(value).hex()
    if isinstance(value, BitString):
        return "bits", value.bits
    raise TypeError(f"a {type(value).__name__} is not a reading value")


def _series(
    quantity: str, unit: str, kind: str, rows: list[tuple[datetime, WireValue, int | None]]
) -> dict[str, object]:
    statuses = [s for _, _, s in rows]
    fields: dict[str, object] = {
        "quantity": quantity,
        "unit": unit,
        "ts": [t for t, _, _ in rows],
        "values": [v for _, v, _ in rows],
        "status": [s or 0 for s in statuses] if any(s is not None for s in statuses) else None,
    }
    if kind != "number":
        fields["kind"] = kind
    return fields


def _validated(fields: dict[str, object]) -> ReadingSeries | TextSeries:
    return TextSeries.model_validate(fields) if "kind" in fields else ReadingSeries.model_validate(fields)


def reading_batch(
    readings: Iterable[Reading], *, batch_id: str, meter_id: str, job_id: str | None, collected_at: datetime
) -> tuple[ReadingBatch | None, list[tuple[Reading, str]]]:
    """The batch of ``readings`` (None if none is left) and the readings the contract refused, with why."""
    groups: dict[tuple[str, str, str], list[tuple[Reading, datetime, WireValue, int | None]]] = {}
    refused: list[tuple[Reading, str]] = []
    for r in readings:
        try:
            kind, value = wire_value(r.value)
        except TypeError as exc:  # a plug-in driver's odd value: this reading is left out, not the job
            refused.append((r, str(exc)))
            continue
        groups.setdefault((r.quantity, r.unit, kind), []).append((r, r.ts, value, r.status))
    numbers: list[ReadingSeries] = []
    texts: list[TextSeries] = []
    for (quantity, unit, kind), members in groups.items():
        try:
            series = _validated(_series(quantity, unit, kind, [m[1:] for m in members]))
        except ValidationError:
            # Rare: find the culprits one by one, then keep the others (validated once more).
            good = []
            for m in members:
                try:
                    _validated(_series(quantity, unit, kind, [m[1:]]))
                except ValidationError as exc:
                    refused.append((m[0], describe_validation_error(exc)))
                else:
                    good.append(m[1:])
            if not good:
                continue
            series = _validated(_series(quantity, unit, kind, good))
        if isinstance(series, TextSeries):
            texts.append(series)
        else:
            numbers.append(series)
    if not numbers and not texts:
        return None, refused
    batch = ReadingBatch(
        batch_id=batch_id,
        meter_id=meter_id,
        job_id=job_id,
        collected_at=collected_at,
        series=numbers,
        text_series=texts,
    )
    return batch, refused


# Half the producer's request limit and the readings topic's message bound (both 1 MiB): room for
# the key and the record overhead, and no part ever near a limit.
READING_BATCH_BYTES = 512 * 1024
_ID_ROOM = 48  # of the 64 characters a batch id may have, the rest is for the part number


Part = ReadingSeries | TextSeries


def _halves(series: list[Part]) -> tuple[list[Part], list[Part]]:
    """Two non-empty halves of at least two readings: whole series where there are several, else one cut in two."""
    if len(series) > 1:
        total, running = sum(len(s.ts) for s in series), 0
        for i, s in enumerate(series[:-1]):
            running += len(s.ts)
            if running * 2 >= total:
                return series[: i + 1], series[i + 1 :]
        return series[:-1], series[-1:]
    (s,) = series
    mid = len(s.ts) // 2

    def part(lo: int, hi: int) -> Part:
        status = None if s.status is None else s.status[lo:hi]
        return s.model_copy(update={"ts": s.ts[lo:hi], "values": s.values[lo:hi], "status": status})

    return [part(0, mid)], [part(mid, len(s.ts))]


def _split(batch: ReadingBatch, max_bytes: int) -> list[ReadingBatch]:
    # Each step leaves both halves with fewer readings than the whole, so it ends (at one reading).
    if batch.count <= 1 or len(batch.model_dump_json()) <= max_bytes:
        return [batch]
    every: list[Part] = [*(s for s in batch.series if s.ts), *(s for s in batch.text_series if s.ts)]
    return [
        p
        for half in _halves(every)
        for p in _split(
            batch.model_copy(
                update={
                    "series": [s for s in half if isinstance(s, ReadingSeries)],
                    "text_series": [s for s in half if isinstance(s, TextSeries)],
                }
            ),
            max_bytes,
        )
    ]


def fitting_batches(batch: ReadingBatch, max_bytes: int = READING_BATCH_BYTES) -> list[ReadingBatch]:
    """``batch`` itself when it encodes within ``max_bytes``, else parts that do, with the same readings.

    Parts keep the meter, job and collection time; their batch ids are the batch's with ``.k`` (k from 1).
    """
    parts = _split(batch, max_bytes)
    if len(parts) == 1:
        return parts
    base = batch.batch_id[:_ID_ROOM]
    return [p.model_copy(update={"batch_id": f"{base}.{k}"}) for k, p in enumerate(parts, start=1)]
