"""Versioned schema migrations, safe to run twice and from several pods at once.

Files are ``sql/NNNN_name.sql``. A migration that differs between the two storage kinds comes
as a pair ``NNNN_name.timescaledb.sql`` + ``NNNN_name.partitioned.sql`` with the same number;
the one matching the storage chosen when the schema was created (version 1) is applied.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib.resources import files

import asyncpg
from asyncpg.pool import PoolConnectionProxy

Conn = asyncpg.Connection | PoolConnectionProxy

log = logging.getLogger(__name__)

# Any constant: every gxami process that migrates takes this advisory lock first.
_MIGRATION_LOCK = 0x67_78_61_6D_69  # "gxami"

STORAGE_KINDS = ("timescaledb", "partitioned")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str
    # storage kind -> SQL, for migrations that differ between TimescaleDB and plain PostgreSQL
    variants: dict[str, str] = field(default_factory=dict)

    def for_storage(self, storage: str) -> str:
        """The SQL to run on a database whose readings use ``storage``."""
        return self.variants.get(storage, self.sql)


def _load() -> list[Migration]:
    common: dict[int, tuple[str, str]] = {}
    variants: dict[int, dict[str, tuple[str, str]]] = {}
    for entry in sorted(files("gxami_store").joinpath("sql").iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        version = int(entry.name.split("_", 1)[0])
        stem = entry.name.removesuffix(".sql")
        text = entry.read_text(encoding="utf-8")
        kind = stem.rsplit(".", 1)[1] if "." in stem else None
        if kind is None:
            if version in common or version in variants:
                raise RuntimeError(f"two migrations numbered {version}: {entry.name}")
            common[version] = (entry.name, text)
        elif kind in STORAGE_KINDS:
            if version in common:
                raise RuntimeError(f"migration {entry.name} has both a common and a per-storage file")
            variants.setdefault(version, {})[kind] = (entry.name, text)
        else:
            raise RuntimeError(f"migration {entry.name}: unknown storage kind {kind!r}")
    out = [Migration(v, name, sql) for v, (name, sql) in common.items()]
    for v, by_kind in variants.items():
        if set(by_kind) != set(STORAGE_KINDS):
            raise RuntimeError(f"migration {v} needs one file per storage kind {STORAGE_KINDS}, has {sorted(by_kind)}")
        name = by_kind["partitioned"][0].replace(".partitioned", "")
        out.append(Migration(v, name, "", {k: sql for k, (_, sql) in by_kind.items()}))
    return sorted(out, key=lambda m: m.version)


MIGRATIONS = _load()


async def has_timescaledb(conn: Conn) -> bool:
    """True if the timescaledb extension is installed or can be."""
    return bool(await conn.fetchval("SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'"))


def _render(sql: str, timescale: bool) -> str:
    storage = "" if timescale else "PARTITION BY RANGE (ts)"
    return sql.replace("{readings_storage}", storage)


async def migrate(conn: Conn, *, up_to: int | None = None) -> list[str]:
    """Apply pending migrations under an advisory lock; returns the names applied.

    ``up_to`` stops after that version (tests build a database as an older release left it).
    """
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY, name text NOT NULL, storage text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        rows = await conn.fetch("SELECT version, storage FROM schema_migrations")
        done = {r["version"] for r in rows}
        # The storage kind is fixed when the readings table is created: a database created on plain
        # PostgreSQL keeps partitioned readings even if TimescaleDB is installed later.
        chosen = {r["version"]: r["storage"] for r in rows}.get(1)
        timescale = chosen == "timescaledb" if chosen is not None else await has_timescaledb(conn)
        storage = "timescaledb" if timescale else "partitioned"
        for m in MIGRATIONS:
            if m.version in done or (up_to is not None and m.version > up_to):
                continue
            async with conn.transaction():
                if m.version == 1 and timescale:
                    await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
                await conn.execute(_render(m.for_storage(storage), timescale))
                if m.version == 1 and timescale:
                    await conn.execute(
                        "SELECT create_hypertable('readings', 'ts', chunk_time_interval => interval '7 days',"
                        " if_not_exists => true)"
                    )
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, storage) VALUES ($1, $2, $3)",
                    m.version,
                    m.name,
                    storage,
                )
            applied.append(m.name)
            log.info("applied migration", extra={"migration": m.name})
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
    return applied


async def pending_migrations(conn: Conn) -> list[str]:
    """Names of the migrations this release has that the database has not applied (all if none)."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")} if exists else set()
    return [m.name for m in MIGRATIONS if m.version not in done]


async def prepare_schema(conn: Conn, *, migrate_now: bool) -> list[str]:
    """At a service's start: apply pending migrations, or (``migrate_now`` off, where a migration
    Job runs them, as on Kubernetes) refuse to start on a schema this release does not match.

    Returns the migrations applied; raises :class:`SchemaNotReadyError` naming the first one missing.
    """
    if migrate_now:
        return await migrate(conn)
    pending = await pending_migrations(conn)
    if pending:
        raise SchemaNotReadyError(
            f"the database lacks {len(pending)} migration(s) of this release, from {pending[0]}:"
            " run `gxami db migrate` (the migration Job) first"
        )
    return []


class SchemaNotReadyError(Exception):
    """The database's schema is older than this release and this process may not migrate it."""


async def storage_kind(conn: Conn) -> str:
    """'timescaledb' or 'partitioned', as chosen when the schema was created."""
    return str(await conn.fetchval("SELECT storage FROM schema_migrations WHERE version = 1"))
