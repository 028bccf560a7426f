"""The collector's record of commands it started and finished: what keeps a redelivered command from running twice.

Why a record. Commands arrive at least once: the collector commits its offsets only after
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

Storage: one small JSON file per command run, in folders by the first two hex digits of the
SHA-256 of its key, written to a temporary file, fsynced and renamed over the old one (a reader
sees the old row or the new one, never half of one; a crash loses no row that was written). Why
files and not SQLite: the folder is meant for the collectors' shared persistent volume (the one
the invocation counters live on, ReadWriteMany, e.g. NFSv4), and a crashed replica's partitions
go to another replica, which must see the rows of the one that crashed. A rename is atomic on
such a volume; SQLite's WAL is not usable over a network file system, and its locks over NFS are
what its authors warn against. Commands are few beside readings (one meter session each), so a
file per run costs nothing that matters; the folder is pruned hourly.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Self

from pydantic import ValidationError

from gxami_contracts import CommandResult, MeterCommand
from gxami_runtime.service import StartupError

log = logging.getLogger("gxami.collector.commands")

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
    """Started and finished command runs, one file each under ``folder`` (see the module doc)."""

    def __init__(self, folder: Path, retention: timedelta) -> None:
        self.folder = folder
        self.retention = retention

    @classmethod
    async def open(cls, folder: Path, *, retention: timedelta) -> Self:
        """Use (or create) the record folder; CommandRecordsError naming it if it cannot be written."""
        try:
            await asyncio.to_thread(_writable, folder)
        except OSError as exc:
            raise CommandRecordsError(f"cannot use the command record folder {folder}: {exc.strerror}") from None
        return cls(folder, retention)

    async def close(self) -> None:
        """Nothing is held open between writes."""

    def _path(self, key: CommandKey) -> Path:
        digest = hashlib.sha256("\0".join(map(str, key)).encode()).hexdigest()
        return self.folder / digest[:2] / f"{digest}.json"

    async def get(self, key: CommandKey) -> CommandRun | None:
        """The row of ``key``, or None if no collector sharing the folder started that command."""
        row = await asyncio.to_thread(_read, self._path(key))
        if row is None:
            return None
        result = None
        if row.get("result") is not None:
            try:
                result = CommandResult.from_wire(json.dumps(row["result"]))
            except ValidationError:  # written by another version: treat the command as interrupted
                log.warning("unreadable finished command in the record; treated as interrupted", extra={"key": key})
        return CommandRun(result, bool(row.get("published")))

    async def started(self, command: MeterCommand) -> None:
        """Note that ``command`` is about to touch its meter (kept as it is if it was started before)."""
        path = self._path(command_key(command))
        row = {"key": list(command_key(command)), "expires_at": command.expires_at.timestamp(), "result": None}
        await asyncio.to_thread(_write, path, row, keep=True)

    async def finished(self, command: MeterCommand, result: CommandResult) -> None:
        """Keep ``result`` as ``command``'s final one, before it is published."""
        row = {
            "key": list(command_key(command)),
            "expires_at": command.expires_at.timestamp(),
            "result": result.model_dump(mode="json"),
            "published": False,
        }
        await asyncio.to_thread(_write, self._path(command_key(command)), row)

    async def published(self, command: MeterCommand) -> None:
        """The broker (or the spool) has the final result of ``command``."""
        path = self._path(command_key(command))
        row = await asyncio.to_thread(_read, path)
        if row is not None:
            await asyncio.to_thread(_write, path, {**row, "published": True})

    async def prune(self, now: datetime) -> int:
        """Forget commands that expired more than ``retention`` ago; how many rows went."""
        return await asyncio.to_thread(_prune, self.folder, (now - self.retention).timestamp())


def _writable(folder: Path) -> None:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    probe = folder / f".probe-{os.getpid()}"
    probe.write_bytes(b"")
    probe.unlink()


def _read(path: Path) -> dict[str, Any] | None:
    try:
        row = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):  # a torn or foreign file: as if the run had been interrupted
        log.warning("unreadable command record; treated as interrupted", extra={"path": str(path)})
        return {}
    return row if isinstance(row, dict) else {}


def _write(path: Path, row: dict[str, Any], *, keep: bool = False) -> None:
    """Write ``row`` to ``path`` atomically and durably; with ``keep``, leave an existing file as it is."""
    if keep and path.exists():
        return
    path.parent.mkdir(mode=0o700, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, json.dumps(row, separators=(",", ":")).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself survives a power loss
    finally:
        os.close(folder)


def _prune(folder: Path, cutoff: float) -> int:
    gone = 0
    for path in folder.glob("??/*.json"):
        row = _read(path)
        expires = row.get("expires_at") if row else None
        if isinstance(expires, int | float) and expires < cutoff:
            with contextlib.suppress(FileNotFoundError):  # another replica pruned it first
                path.unlink()
                gone += 1
    return gone
