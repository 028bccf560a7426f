"""One message's failure stays that message's: find the culprits of a refused batch by splitting it.

A consumer stores a fetch as one batch, because one transaction per message would be far too
slow. When the store refuses the batch because of what is in it (a value the database cannot hold,
a constraint a reading breaks), :func:`store_isolating` splits the batch in halves and stores each,
down to single messages, so the good ones are stored and each bad one is handed over with the
reason. Failures that say nothing about the messages (the database away, a full disk) are not
refusals: they are raised (or retried by the caller) and nothing is split.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import asyncpg

T = TypeVar("T")
S = TypeVar("S")

# Says whether an exception means "these messages were refused" (a reason, for the dead letter) or not (None).
Refusal = Callable[[BaseException], str | None]

# SQLSTATE classes that are about the data of a statement, not the database: 22 data exception
# (out of range, NUL, string too long, bad JSON), 23 integrity constraint (CHECK, NOT NULL, foreign
# key) and P0, an exception raised by a trigger or function.
_REFUSING_CLASSES = frozenset({"22", "23", "P0"})
# A missing partition is a 23514 too, but it is our fault, not the reading's: it is retried.
_NO_PARTITION = "no partition of relation"
_MESSAGE_CHARS = 200  # of the database's message; its DETAIL (which echoes rows) is never included


async def store_isolating(
    items: Sequence[T],
    store: Callable[[list[T]], Awaitable[S]],
    refusal: Refusal,
    refuse: Callable[[T, str], Awaitable[None]],
) -> list[S]:
    """``store(items)``; if that is refused, store each half alike, and ``refuse`` each single item refused.

    Returns what the successful stores returned, in order. Anything that is not a refusal is raised.
    One bad item among n costs about 2 log2(n) extra stores; a good batch costs exactly one.
    """
    batch = list(items)
    try:
        return [await store(batch)]
    except Exception as exc:  # the refusal function decides; anything else is raised
        reason = refusal(exc)
        if reason is None:
            raise
        if len(batch) <= 1:
            for item in batch:
                await refuse(item, reason)
            return []
    mid = len(batch) // 2
    first = await store_isolating(batch[:mid], store, refusal, refuse)
    return [*first, *await store_isolating(batch[mid:], store, refusal, refuse)]


def database_refusal(exc: BaseException) -> str | None:
    """The reason when ``exc`` means PostgreSQL (or asyncpg's encoder) cannot take the data; else None."""
    if isinstance(exc, asyncpg.PostgresError):
        state = str(getattr(exc, "sqlstate", "") or "")
        message = _first_line(str(exc))
        if state[:2] not in _REFUSING_CLASSES or message.startswith(_NO_PARTITION):
            return None
        return f"the database refused it: {type(exc).__name__} (SQLSTATE {state}): {message}"
    if isinstance(exc, (OverflowError, UnicodeEncodeError)):
        # asyncpg encodes COPY records itself: an int beyond int4, a lone surrogate in text
        return f"the database driver cannot encode it: {type(exc).__name__}: {_first_line(str(exc))}"
    return None


def _first_line(text: str) -> str:
    line = text.split("\n", 1)[0]
    return line if len(line) <= _MESSAGE_CHARS else line[: _MESSAGE_CHARS - 3] + "..."
