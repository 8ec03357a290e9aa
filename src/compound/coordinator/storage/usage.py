"""What each submitter stores, and the limits on it: jobs, database bytes, file bytes.

One row of the ``usage`` table per owner (a token's name; in open mode the client's address)
counts its kept jobs (not yet swept by retention), the database bytes charged to it (its
jobs' scripts, arguments and environments, and the log bytes stored for them) and the file
bytes (its uploaded inputs and its jobs' output files). The row of owner ``""`` holds the sums.
Every write that stores or frees something updates both rows in the same transaction
(``job_writes``, ``file_writes``), so a check is two primary-key reads, never a SUM. The
table is rebuilt from the data at every start (``rebuild``), so a count can never drift for
longer than one run.

The rule (``room``): an owner may add bytes while it stays within its own quota and either
the store stays under its global cap or the owner stays within its fair share of that cap
(the cap divided by the owners holding something, itself included). So the heaviest user is
refused first, and a submitter with nothing stored is accepted while the store has room for
its share: one submitter can never lock the others out.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MiB = 1024 * 1024
TOTAL = ""  # the owner key of the row of sums
# How stale the database size a quota compares with may be.
DATABASE_SIZE_MAX_AGE_S = 1.0
_NO_LIMIT = 1 << 62


class QuotaExceeded(Exception):
    """New work refused: the message says which limit, in one sentence."""


@dataclass(frozen=True)
class StoreLimits:
    """Per-owner quotas and the global caps they share (defaults: none)."""

    max_jobs_per_owner: int = _NO_LIMIT
    max_db_bytes_per_owner: int = _NO_LIMIT
    max_db_bytes: int = _NO_LIMIT
    max_file_bytes_per_owner: int = _NO_LIMIT
    max_file_bytes: int = _NO_LIMIT


@dataclass(frozen=True)
class Held:
    jobs: int = 0
    db_bytes: int = 0
    file_bytes: int = 0


@dataclass(frozen=True)
class Room:
    """Bytes an owner may still add (may be negative), and the sentence for a write that
    needs more."""

    bytes: int
    reason: str


# The owner's row and the sums' row in one statement (owners are never "", the sums' owner).
_CHARGE = (
    "INSERT INTO usage (owner, jobs, db_bytes, file_bytes) VALUES (?, ?, ?, ?), (?, ?, ?, ?)"
    " ON CONFLICT (owner) DO UPDATE SET jobs = usage.jobs + excluded.jobs,"
    " db_bytes = usage.db_bytes + excluded.db_bytes,"
    " file_bytes = usage.file_bytes + excluded.file_bytes"
)
_HELD = "SELECT jobs, db_bytes, file_bytes FROM usage WHERE owner = ?"


def charge(
    conn: sqlite3.Connection,
    owner: str | None,
    *,
    jobs: int = 0,
    db_bytes: int = 0,
    file_bytes: int = 0,
) -> None:
    """Add to (or, negative, take from) ``owner``'s counts and the sums; call inside the
    transaction that stores or frees the bytes."""
    if owner is None or (jobs == 0 and db_bytes == 0 and file_bytes == 0):
        return
    conn.execute(_CHARGE, (owner, jobs, db_bytes, file_bytes, TOTAL, jobs, db_bytes, file_bytes))


def held(conn: sqlite3.Connection, owner: str) -> Held:
    row = conn.execute(_HELD, (owner,)).fetchone()
    return Held() if row is None else Held(int(row[0]), int(row[1]), int(row[2]))


_HOLDERS = {
    "db_bytes": "SELECT count(*) FROM usage WHERE owner != '' AND (db_bytes > 0 OR jobs > 0)",
    "file_bytes": "SELECT count(*) FROM usage WHERE owner != '' AND file_bytes > 0",
}


def _holders(conn: sqlite3.Connection, column: str) -> int:
    """Owners holding something of ``column``: those a cap is shared among."""
    return int(conn.execute(_HOLDERS[column]).fetchone()[0])


def db_holders(conn: sqlite3.Connection) -> int:
    """Owners holding database bytes or jobs: those the database cap is shared among."""
    return _holders(conn, "db_bytes")


def room(
    *,
    held_bytes: int,
    own_limit: int,
    total_bytes: int,
    cap: int,
    holders: int,
    what: str,
    store: str,
) -> Room:
    """How many bytes one owner may add: ``min(own quota left, max(store left, share
    left))``, where the share is ``cap // holders``. Pure: the callers read the counts."""
    own = own_limit - held_bytes
    store_left = cap - total_bytes
    share = cap // max(1, holders)
    past_share = share - held_bytes
    if own <= max(store_left, past_share):
        return Room(
            own,
            f"your {what} take {_mib(held_bytes)} of your {_mib(own_limit)} quota; "
            "wait for retention to remove old jobs' files",
        )
    return Room(
        max(store_left, past_share),
        f"the coordinator's {store} is at its {_mib(cap)} limit and you hold "
        f"{_mib(held_bytes)} of it, your share being {_mib(share)}; "
        "wait for retention to remove old jobs' files",
    )


def db_room(
    conn: sqlite3.Connection,
    owner: str | None,
    limits: StoreLimits,
    database_bytes: int = 0,
    mine: Held | None = None,
) -> Room:
    """Room in the database for ``owner`` (whose counts are ``mine`` if already read);
    ``database_bytes`` is its size on disk, the fill level when larger than the bytes
    charged."""
    if owner is None:
        return Room(_NO_LIMIT, "")
    mine = mine or held(conn, owner)
    return db_room_of(
        mine, held(conn, TOTAL), lambda: _holders(conn, "db_bytes"), limits, database_bytes
    )


def db_room_of(
    mine: Held,
    total: Held,
    holders: Callable[[], int],
    limits: StoreLimits,
    database_bytes: int,
) -> Room:
    """``db_room`` from counts already read; ``holders`` counts the owners holding
    database bytes or jobs, asked only when the global cap may bind."""
    level = max(total.db_bytes, database_bytes)
    sharing = 0
    if level + limits.max_db_bytes_per_owner - mine.db_bytes > limits.max_db_bytes:
        sharing = holders() + (0 if mine.db_bytes or mine.jobs else 1)
    return room(
        held_bytes=mine.db_bytes,
        own_limit=limits.max_db_bytes_per_owner,
        total_bytes=level,
        cap=limits.max_db_bytes,
        holders=sharing,
        what="jobs' scripts and logs",
        store="database",
    )


def file_room(conn: sqlite3.Connection, owner: str | None, limits: StoreLimits) -> Room:
    """Room in the file store (inputs and output files) for ``owner``."""
    if owner is None:
        return Room(_NO_LIMIT, "")
    mine, total = held(conn, owner), held(conn, TOTAL)
    holders = 0
    if total.file_bytes + limits.max_file_bytes_per_owner - mine.file_bytes > (
        limits.max_file_bytes
    ):
        holders = _holders(conn, "file_bytes")
    return files_room(mine, total, holders, limits)


def files_room(mine: Held, total: Held, holders: int, limits: StoreLimits) -> Room:
    """``file_room`` from counts already read (``holders``: owners holding files)."""
    return room(
        held_bytes=mine.file_bytes,
        own_limit=limits.max_file_bytes_per_owner,
        total_bytes=total.file_bytes,
        cap=limits.max_file_bytes,
        holders=holders + (0 if mine.file_bytes else 1),
        what="stored files",
        store="file store",
    )


def job_refusal(
    conn: sqlite3.Connection,
    owner: str | None,
    limits: StoreLimits,
    db_bytes: int,
    database_bytes: int,
) -> str | None:
    """Why ``owner`` may not store one more job of ``db_bytes``, if it may not."""
    if owner is None:
        return None
    return job_refusal_of(
        held(conn, owner),
        lambda: held(conn, TOTAL),
        lambda: _holders(conn, "db_bytes"),
        limits,
        db_bytes,
        database_bytes,
    )


def job_refusal_of(
    mine: Held,
    total: Callable[[], Held],
    holders: Callable[[], int],
    limits: StoreLimits,
    db_bytes: int,
    database_bytes: int,
) -> str | None:
    """``job_refusal`` from the owner's counts (``mine``) and readers of the rest."""
    if mine.jobs >= limits.max_jobs_per_owner:
        return (
            f"you have {mine.jobs} jobs stored, your limit; "
            "wait for retention to remove old jobs' files"
        )
    available = db_room_of(mine, total(), holders, limits, database_bytes)
    return available.reason if db_bytes > available.bytes else None


# The counts from the data itself: kept jobs (their charged bytes), their output files, and
# the uploads. ``WHERE true`` lets SQLite parse the upsert after a SELECT.
_REBUILD = (
    "DELETE FROM usage",
    "INSERT INTO usage (owner, jobs, db_bytes, file_bytes)"
    " SELECT owner, count(*), coalesce(sum(db_bytes), 0), 0 FROM jobs"
    " WHERE owner IS NOT NULL AND files_removed_at IS NULL GROUP BY owner",
    "INSERT INTO usage (owner, jobs, db_bytes, file_bytes)"
    " SELECT jobs.owner, 0, 0, sum(artifacts.size) FROM artifacts"
    " JOIN jobs ON jobs.id = artifacts.job_id WHERE jobs.owner IS NOT NULL AND true"
    " GROUP BY jobs.owner"
    " ON CONFLICT (owner) DO UPDATE SET file_bytes = usage.file_bytes + excluded.file_bytes",
    "INSERT INTO usage (owner, jobs, db_bytes, file_bytes)"
    " SELECT owner, 0, 0, sum(size) FROM uploads WHERE true GROUP BY owner"
    " ON CONFLICT (owner) DO UPDATE SET file_bytes = usage.file_bytes + excluded.file_bytes",
    "INSERT INTO usage (owner, jobs, db_bytes, file_bytes)"
    " SELECT '', coalesce(sum(jobs), 0), coalesce(sum(db_bytes), 0),"
    " coalesce(sum(file_bytes), 0) FROM usage",
)


def rebuild(conn: sqlite3.Connection) -> None:
    """Count everything again from the stored data (at start: no count drifts for long)."""
    for statement in _REBUILD:
        conn.execute(statement)


def _mib(size: int) -> str:
    if size >= _NO_LIMIT:
        return "unlimited"
    return f"{size / MiB:.3g} MiB"


class DatabaseSize:
    """The database's size on disk, its write-ahead log included; read at most once per
    ``DATABASE_SIZE_MAX_AGE_S`` (two stat calls per submission were 5 % of the
    coordinator's time at a few hundred jobs a second)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._size: tuple[int, float] = (0, -DATABASE_SIZE_MAX_AGE_S)  # bytes, monotonic

    def bytes(self) -> int:
        size, read_at = self._size
        now = time.monotonic()
        if now - read_at < DATABASE_SIZE_MAX_AGE_S:
            return size
        size = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(FileNotFoundError):
                size += os.stat(f"{self._path}{suffix}").st_size
        self._size = (size, now)
        return size
