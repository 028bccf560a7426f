"""Publishing the registry on the compacted topic ``ami.fleet`` (see :mod:`gxami_contracts.fleet` for why).

The registry is written by ``gxami fleet import`` (and the API) straight into the database, so
the scheduler follows the ``meters`` table rather than the import: every ``poll_s`` it reads the
rows of its shard changed since the last look (``updated_at`` at or after the watermark, less
``SLACK_S`` for transactions that committed late with an earlier ``now()``), and publishes those
whose entry differs from what it last published. Every ``full_sync_s`` (and at start) it reads
the whole shard: every entry is published again (so a topic that lost data heals) and a
tombstone goes out for every meter it published that is no longer in the table.

Each scheduler replica publishes the meters of its own shard; two replicas with one shard
publish the same entries, which compaction folds into one. An entry never carries a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

import asyncpg
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from gxami_contracts import FleetEntry, Message
from gxami_contracts.topics import FLEET
from gxami_scheduler.planner import Shard, shard_sql
from gxami_scheduler.registry import DbConn, contact_of, split_options

log = logging.getLogger(__name__)

SLACK_S: Final = 60.0
PAGE: Final = 5000
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

_COLUMNS = "meter_id, protocol, url, link_id, profile, meter_group, interval_s, options, enabled, site, updated_at"
_CHANGED = (
    f"SELECT {_COLUMNS} FROM meters"  # noqa: S608 - constants only; values are parameters
    f" WHERE updated_at >= $1 AND ($2::int = 1 OR {shard_sql('meter_id', '$2::int')} = $3::int)"
    " AND meter_id > $4 ORDER BY meter_id LIMIT $5"
)


class FleetSender(Protocol):
    """What the feed needs of the broker: entries by key, and tombstones."""

    async def send_many(self, logical_topic: str, items: Sequence[tuple[str, Message]]) -> None: ...

    async def tombstone(self, logical_topic: str, key: str) -> None: ...


def fleet_entry(row: asyncpg.Record) -> FleetEntry:
    """The ``ami.fleet`` entry of one ``meters`` row."""
    options, purposes = split_options(row["options"])
    contact = contact_of(row["options"])
    return FleetEntry(
        meter_id=row["meter_id"],
        protocol=row["protocol"],
        url=row["url"],
        link_id=row["link_id"],
        profile=row["profile"],
        group=row["meter_group"],
        interval_s=row["interval_s"],
        options=options,
        purposes=purposes,
        enabled=row["enabled"],
        connection=contact["connection"],  # type: ignore[arg-type]  # checked by the model
        system_title=contact.get("system_title"),
        serial=contact.get("serial"),
        wmbus_id=contact.get("wmbus_id"),
        updated_at=row["updated_at"],
        site=row.get("site"),  # a row from before migration 0015 has none
    )


class FleetFeed:
    """Keeps ``ami.fleet`` equal to this shard's rows of ``meters``."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        sender: FleetSender,
        shard: Shard,
        *,
        poll_s: float = 5.0,
        full_sync_s: float = 300.0,
    ) -> None:
        self._pool = pool
        self._sender = sender
        self._shard = shard
        self.poll_s = poll_s
        self.full_sync_s = full_sync_s
        self._published: dict[str, str] = {}  # meter id -> the JSON last published
        self._watermark: datetime | None = None

    async def _rows(self, conn: DbConn, since: datetime | None) -> list[asyncpg.Record]:
        floor = since - timedelta(seconds=SLACK_S) if since is not None else EPOCH
        rows: list[asyncpg.Record] = []
        after = ""
        while True:
            page = await conn.fetch(
                _CHANGED,
                floor,
                self._shard.count,
                self._shard.index,
                after,
                PAGE,
            )
            rows.extend(page)
            if len(page) < PAGE:
                return rows
            after = page[-1]["meter_id"]

    async def sync(self, *, full: bool) -> tuple[int, int]:
        """Publish what changed (everything with ``full``); returns (entries, tombstones) sent."""
        async with self._pool.acquire() as conn:
            rows = await self._rows(conn, None if full else self._watermark)
        out: list[tuple[str, Message]] = []
        seen: set[str] = set()
        newest = self._watermark
        for row in rows:
            seen.add(row["meter_id"])
            newest = row["updated_at"] if newest is None or row["updated_at"] > newest else newest
            try:
                entry = fleet_entry(row)
            except ValidationError as exc:  # a row another writer put there; the others still go out
                log.warning(
                    "meter row outside the fleet contract; not published",
                    extra={"meter_id": row["meter_id"], "error": str(exc.errors(include_input=False)[:1])},
                )
                continue
            wire = entry.model_dump_json()
            if full or self._published.get(entry.meter_id) != wire:
                out.append((entry.meter_id, entry))
                self._published[entry.meter_id] = wire
        gone = sorted(set(self._published) - seen) if full else []
        if out:
            await self._sender.send_many(FLEET.name, out)
        for meter_id in gone:
            await self._sender.tombstone(FLEET.name, meter_id)
            del self._published[meter_id]
        self._watermark = newest
        return len(out), len(gone)

    async def run(self, stop: asyncio.Event) -> None:
        """Sync until ``stop``: fully at start and every ``full_sync_s``, the changes every ``poll_s``."""
        loop = asyncio.get_running_loop()
        next_full = loop.time()
        while not stop.is_set():
            full = loop.time() >= next_full
            try:
                sent, removed = await self.sync(full=full)
                if full:
                    next_full = loop.time() + self.full_sync_s
                if sent or removed:
                    log.info("published the fleet", extra={"entries": sent, "tombstones": removed, "full": full})
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, KafkaError) as exc:
                log.warning("publishing the fleet failed", extra={"error": f"{type(exc).__name__}: {exc}"})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.poll_s)
