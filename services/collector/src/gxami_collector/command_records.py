"""The collector's record of commands it started and finished: what keeps a redelivered command from running twice.

Why a local record. Commands arrive at least once: the collector commits its offsets only after
a command's result is published, so a crash (or a rebalance) between the two hands the command
over again. Running a disconnect twice is mostly harmless, but a ``clock-set`` to a fixed instant
run again minutes later sets the meter back, a firmware activation is not to be repeated, and the
issue's rule is plain: the same command executes once. Reading the meter back cannot tell "done
by us a minute ago" from "done by someone else", and the scheduler's state arrives too late to
help (the result may be on its way to it). So the collector keeps, per (command id, meter,
attempt), the final result *before* it publishes it, and notes when the broker acknowledged it.

A redelivered command then finds its row:

* finished and published: nothing is done (the duplicate is counted and logged);
* finished, not published (the crash fell between the record and the broker): the stored
  result is published, and nothing touches the meter;
* started, not finished (the crash fell inside the meter session): the meter may or may not
  have acted, and the command is run again; every kind is idempotent in effect (a relay to a
  state, a clock to a time, an attribute to a value, a firmware transfer resumes), and its
  result says so (``data.interrupted_before``).

Bound. A row is kept until ``retention`` after its command's ``expires_at``: later than that, a
redelivery is refused as expired before anything else, so the row is no longer needed.

Storage: SQLite in WAL mode through aiosqlite (its own thread), ``synchronous=FULL`` so that a
row written before publishing is on disk when the write returns. The file belongs on the
persistent volume beside the invocation counters. It is local to one collector: replicas that
take over a link after a rebalance do not see each other's rows unless they share the volume.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Self

import aiosqlite
from pydantic import ValidationError

from gxami_contracts import CommandResult, MeterCommand
from gxami_runtime.service import StartupError

log = logging.getLogger("gxami.collector.commands")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS command_runs ("
    " command_id TEXT NOT NULL, meter_id TEXT NOT NULL, attempt INTEGER NOT NULL,"
    " expires_at REAL NOT NULL, result TEXT, published INTEGER NOT NULL DEFAULT 0,"
    " PRIMARY KEY (command_id, meter_id, attempt))"
)

CommandKey = tuple[str, str, int]


def command_key(command: MeterCommand) -> CommandKey:
    """One meter's command, as the record knows it: (command id, meter id, attempt)."""
    return command.command_id, command.meter_id, command.attempt


class CommandRecordsError(StartupError):
    """The record cannot be used (its folder, its file): the collector does not start (exit 2)."""


@dataclass(frozen=True, slots=True)
class CommandRun:
    """What the record holds for one command: its final result once finished, and whether it reached the broker."""

    result: CommandResult | None
    published: bool

    @property
    def finished(self) -> bool:
        return self.result is not None


class CommandRecords:
    """Started and finished commands in SQLite (see the module doc)."""

    def __init__(self, path: Path, db: aiosqlite.Connection, retention: timedelta) -> None:
        self.path = path
        self.retention = retention
        self._db = db
        self._write = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path, *, retention: timedelta) -> Self:
        """Open (or create) the record at ``path``; CommandRecordsError naming it if it cannot."""
        try:
            await asyncio.to_thread(path.parent.mkdir, mode=0o700, parents=True, exist_ok=True)
            db = await aiosqlite.connect(path)
        except (OSError, aiosqlite.Error) as exc:
            raise CommandRecordsError(f"cannot open the command record {path}: {exc}") from None
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=FULL")  # a finished row survives power loss before publishing
            await db.execute(_SCHEMA)
            await db.commit()
        except aiosqlite.Error as exc:
            await db.close()
            raise CommandRecordsError(f"command record {path} is unusable: {exc}") from None
        return cls(path, db, retention)

    async def close(self) -> None:
        await self._db.close()

    async def get(self, key: CommandKey) -> CommandRun | None:
        """The row of ``key``, or None if this collector never started that command."""
        async with self._db.execute(
            "SELECT result, published FROM command_runs WHERE command_id = ? AND meter_id = ? AND attempt = ?", key
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        result = None
        if row[0] is not None:
            try:
                result = CommandResult.from_wire(row[0])
            except ValidationError:  # written by another version: treat the command as interrupted
                log.warning("unreadable finished command in the record; treated as interrupted", extra={"key": key})
        return CommandRun(result, bool(row[1]))

    async def started(self, command: MeterCommand) -> None:
        """Note that ``command`` is about to touch its meter (kept if it was started before)."""
        await self._run(
            "INSERT OR IGNORE INTO command_runs (command_id, meter_id, attempt, expires_at) VALUES (?, ?, ?, ?)",
            (*command_key(command), command.expires_at.timestamp()),
        )

    async def finished(self, command: MeterCommand, result: CommandResult) -> None:
        """Keep ``result`` as ``command``'s final one, before it is published."""
        await self._run(
            "INSERT INTO command_runs (command_id, meter_id, attempt, expires_at, result) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (command_id, meter_id, attempt) DO UPDATE SET result = excluded.result",
            (*command_key(command), command.expires_at.timestamp(), result.model_dump_json()),
        )

    async def published(self, command: MeterCommand) -> None:
        """The broker (or the spool) has the final result of ``command``."""
        await self._run(
            "UPDATE command_runs SET published = 1 WHERE command_id = ? AND meter_id = ? AND attempt = ?",
            command_key(command),
        )

    async def prune(self, now: datetime) -> int:
        """Forget commands that expired more than ``retention`` ago; how many rows went."""
        async with self._write:
            cur = await self._db.execute(
                "DELETE FROM command_runs WHERE expires_at < ?", ((now - self.retention).timestamp(),)
            )
            await self._db.commit()
            return cur.rowcount

    async def _run(self, sql: str, args: tuple[object, ...]) -> None:
        async with self._write:
            await self._db.execute(sql, args)
            await self._db.commit()
