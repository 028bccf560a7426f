"""The gxami database schema: versioned migrations and partition upkeep (asyncpg)."""

from gxami_store.migrations import MIGRATIONS, has_timescaledb, migrate, storage_kind
from gxami_store.partitions import PartitionInterval, PartitionKeeper

__all__ = ["MIGRATIONS", "PartitionInterval", "PartitionKeeper", "has_timescaledb", "migrate", "storage_kind"]
