"""Reading batches cut to fit the broker: a long back-fill must reach ingest, not the dead-letter topic.

One job's readings travel as one :class:`~gxami_contracts.ReadingBatch`. A meter asked for weeks
of 1-minute load profile returns more than the producer may send in one request (1 MiB) and more
than a consumer reads as one message, so the batch is halved, series by series, until every part
encodes below the bound. Ingest stores readings on their natural key, so how a job's readings are
cut into messages changes nothing in the database.
"""

from __future__ import annotations

from gxami_contracts import ReadingBatch, ReadingSeries

# Half the producer's request limit and the readings topic's message bound (both 1 MiB): room for
# the key and the record overhead, and no part ever near a limit.
READING_BATCH_BYTES = 512 * 1024
_ID_ROOM = 48  # of the 64 characters a batch id may have, the rest is for the part number


def _halves(series: list[ReadingSeries]) -> tuple[list[ReadingSeries], list[ReadingSeries]]:
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

    def part(lo: int, hi: int) -> ReadingSeries:
        status = None if s.status is None else s.status[lo:hi]
        return s.model_copy(update={"ts": s.ts[lo:hi], "values": s.values[lo:hi], "status": status})

    return [part(0, mid)], [part(mid, len(s.ts))]


def _split(batch: ReadingBatch, max_bytes: int) -> list[ReadingBatch]:
    # Each step leaves both halves with fewer readings than the whole, so it ends (at one reading).
    if batch.count <= 1 or len(batch.model_dump_json()) <= max_bytes:
        return [batch]
    return [
        p
        for half in _halves([s for s in batch.series if s.ts])
        for p in _split(batch.model_copy(update={"series": half}), max_bytes)
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
