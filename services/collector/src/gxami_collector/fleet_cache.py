"""The collector's directory of meters, followed from the compacted topic ``ami.fleet``.

Why (see :mod:`gxami_contracts.fleet`): a meter that pushes or dials in names itself (system
title, serial number, logical device name, wM-Bus id) and the collector must find its meter id,
profile and options from that, with no database at the edge. Every collector process reads the
*whole* topic (no consumer group: each replica needs every meter), from the beginning, and
keeps the latest entry per meter in memory; a tombstone removes the meter. Memory is one entry
per meter (a few hundred bytes), so a million meters fit in a few hundred MB at most; an edge
collector follows a fleet of its site's size.

:class:`FleetDirectory` is the plain, synchronous map (tests call it directly);
:class:`FleetFollower` feeds it from the broker and says when it has caught up with the topic
as it was at start (listeners answer before that, but an unknown meter is only dead-lettered
once the directory is caught up: see :attr:`FleetDirectory.caught_up`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import Counter, Gauge
from pydantic import ValidationError

from gxami_collector.settings import CollectorSettings
from gxami_contracts import FleetEntry
from gxami_contracts.topics import FLEET
from gxami_runtime.kafka import consumer_options, describe_validation_error

log = logging.getLogger("gxami.collector.fleet")

FLEET_METERS = Gauge("gxami_collector_fleet_meters", "Meters in the collector's fleet directory (from ami.fleet)")
FLEET_REFUSED = Counter("gxami_collector_fleet_refused_total", "ami.fleet records that do not decode; skipped")
FETCH_TIMEOUT_MS: Final = 500
RETRY_S: Final = 2.0


class FleetDirectory:
    """Fleet entries by meter id, and meter ids by identity (system title hex, serial, wM-Bus id)."""

    def __init__(self) -> None:
        self._entries: dict[str, FleetEntry] = {}
        self._by_identity: dict[str, str] = {}
        self.caught_up = asyncio.Event()

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, entry: FleetEntry) -> None:
        """Add or replace a meter's entry (its old identities are dropped)."""
        self.remove(entry.meter_id)
        self._entries[entry.meter_id] = entry
        for identity in entry.identities():
            owner = self._by_identity.get(identity)
            if owner is not None and owner != entry.meter_id:
                # Two meters claim one identity: neither is matched by it, rather than the wrong one.
                log.warning("two meters share an identity; it matches neither", extra={"meter_id": entry.meter_id})
                self._by_identity[identity] = ""
                continue
            self._by_identity[identity] = entry.meter_id
        FLEET_METERS.set(len(self._entries))

    def remove(self, meter_id: str) -> None:
        """Forget a meter (a tombstone on ami.fleet)."""
        old = self._entries.pop(meter_id, None)
        if old is not None:
            for identity in old.identities():
                if self._by_identity.get(identity) == meter_id:
                    del self._by_identity[identity]
        FLEET_METERS.set(len(self._entries))

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """One ami.fleet record: an entry, or a tombstone (no value) for the key's meter."""
        if value is None:
            if key is not None:
                self.remove(key.decode(errors="replace"))
            return
        self.put(FleetEntry.from_wire(value))

    def get(self, meter_id: str) -> FleetEntry | None:
        return self._entries.get(meter_id)

    def claimed(self, identity: str) -> bool:
        """True when some meter claims ``identity`` (also when two do, and :meth:`find` matches neither)."""
        return identity in self._by_identity

    def find(self, identity: str) -> FleetEntry | None:
        """The meter an identity names (as a driver reports it), or None."""
        meter_id = self._by_identity.get(identity)
        return self._entries.get(meter_id) if meter_id else None


class FleetFollower:
    """Reads ``ami.fleet`` from the beginning into a :class:`FleetDirectory`, then follows it."""

    def __init__(self, settings: CollectorSettings, directory: FleetDirectory) -> None:
        self.settings = settings
        self.directory = directory

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the topic until ``stop``; a broker outage is logged and retried, never raised."""
        while not stop.is_set():
            try:
                await self._follow(stop)
            except (KafkaError, OSError) as exc:
                log.warning("following ami.fleet failed; retrying", extra={"error": f"{type(exc).__name__}: {exc}"})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=RETRY_S)

    async def _follow(self, stop: asyncio.Event) -> None:
        options = consumer_options(self.settings, "unused")
        options["group_id"] = None  # every replica reads every meter: no group, no commits
        consumer = AIOKafkaConsumer(**options)
        try:
            await consumer.start()
            topic = self.settings.topic(FLEET.name)
            parts = consumer.partitions_for_topic(topic)
            if not parts:
                await consumer.topics()  # a metadata round trip, then the partitions are known
                parts = consumer.partitions_for_topic(topic)
            if not parts:
                raise KafkaError(f"topic {topic} has no partitions yet")
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            pending = {tp for tp in tps if ends[tp] > 0}
            if not pending:
                self.directory.caught_up.set()
            while not stop.is_set():
                fetched = await consumer.getmany(timeout_ms=FETCH_TIMEOUT_MS, max_records=5000)
                for tp, records in fetched.items():
                    for rec in records:
                        self._apply(rec.key, rec.value, rec.offset)
                    if tp in pending and records[-1].offset + 1 >= ends[tp]:
                        pending.discard(tp)
                for tp in list(pending):
                    if await self._at_end(consumer, tp, ends[tp]):
                        pending.discard(tp)
                if not pending and not self.directory.caught_up.is_set():
                    log.info("fleet directory caught up", extra={"meters": len(self.directory)})
                    self.directory.caught_up.set()
        finally:
            await consumer.stop()

    @staticmethod
    async def _at_end(consumer: AIOKafkaConsumer, tp: TopicPartition, end: int) -> bool:
        return int(await consumer.position(tp)) >= end  # compaction may leave the last offsets empty

    def _apply(self, key: bytes | None, value: bytes | None, offset: int) -> None:
        try:
            self.directory.apply(key, value)
        except ValidationError as exc:
            FLEET_REFUSED.inc()
            log.warning(
                "ami.fleet record refused; skipped",
                extra={"offset": offset, "error": describe_validation_error(exc)},
            )
