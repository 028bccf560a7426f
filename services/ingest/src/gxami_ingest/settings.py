"""Ingest settings (GXAMI_ prefix); the only place ingest reads the environment."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from gxami_ingest.vee import VeeSettings
from gxami_runtime.settings import ServiceSettings
from gxami_store import PartitionInterval


class IngestSettings(ServiceSettings):
    # The Kafka consumer group of this service's replicas.
    consumer_group: str = "ingest"
    # A reading batch is written to the database when it holds this many readings.
    batch_max_readings: int = 20_000
    # A reading batch is written to the database at the latest this long after its first reading.
    batch_max_age_ms: int = 500
    # Batches written at once, each on its own connection, so one's COPY overlaps another's commit.
    # Offsets are still committed in order. 1 writes strictly one batch after another.
    writes_in_flight: int = Field(default=2, ge=1, le=8)
    # Readings stamped further from now than this are refused (dead letter): a meter whose clock
    # is wildly off must not create partitions in 1970 or 2099.
    max_future_s: int = 86_400
    # Readings older than this are refused at ingest as implausible (a meter clock far in the past).
    max_past_days: int = 3_660
    # First wait before retrying the database after it went away.
    db_retry_initial_s: float = 0.5
    # Longest wait between database retries.
    db_retry_max_s: float = 15.0
    # TimescaleDB compresses only chunks older than this: back-fill lands in uncompressed chunks,
    # because inserts into compressed chunks are slow (timescaledb #6063, #8400).
    backfill_horizon_days: int = 60
    # Readings older than this many days are dropped (unset or 0: kept for ever).
    retention_days: int | None = None
    # Width of a readings partition (PostgreSQL) or chunk (TimescaleDB): the newest one's indexes
    # should fit in memory, or the merge slows down as the table grows. See the README's sizing note.
    partition_interval: PartitionInterval = PartitionInterval.DAY
    # Fleet-wide validation, estimation and editing settings, as JSON (gxami_ingest.vee;
    # the rules per quantity are in the vee_rules table).
    vee: VeeSettings = VeeSettings()
    # Run validation and estimation on stored readings.
    vee_enabled: bool = True
    # How often the continuous aggregates (hourly, daily roll-ups) are refreshed, in seconds.
    aggregates_refresh_s: float = 900.0

    @property
    def max_past(self) -> timedelta:
        """How far back a reading or event may be stamped: ``max_past_days``, and never past the
        retention, whose partitions (chunks) would be dropped again right after the write."""
        days = self.max_past_days if self.retention_days is None else min(self.max_past_days, self.retention_days)
        return timedelta(days=days)
