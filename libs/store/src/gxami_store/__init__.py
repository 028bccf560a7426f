"""The gxami database schema: versioned migrations and partition upkeep (asyncpg)."""

from gxami_store.migrations import MIGRATIONS, has_timescaledb, migrate, storage_kind
from gxami_store.partitions import PartitionKeeper

__all__ = ["MIGRATIONS", "PartitionKeeper", "has_timescaledb", "migrate", "storage_kind"]
