"""Giving freed space back: the database file shrinks after retention, and its WAL with it.

SQLite keeps the pages of deleted rows as free pages inside the file, and a write-ahead log
at the size of its largest burst. So the database is created with ``auto_vacuum =
INCREMENTAL`` (an older one is converted once, by a VACUUM at start, before anything is
served), and after a retention sweep ``compact`` moves free pages to the end of the file
and cuts them off a few MiB per short transaction (the other writers take their turns in
between), then checkpoints and truncates the WAL. Each runs on a connection of its own, in
a thread.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("compound.coordinator")

INCREMENTAL = 2  # PRAGMA auto_vacuum's value for INCREMENTAL
# Pages freed per transaction (4 MiB of 4 KiB pages): a few milliseconds of the write lock.
PAGES_PER_STEP = 1024
# A checkpoint waits this long for readers to move on, and blocks writers meanwhile.
CHECKPOINT_BUSY_S = 1.0


@dataclass(frozen=True)
class Compacted:
    pages_freed: int
    wal_truncated: bool


def prepare(path: Path) -> None:
    """Make the database at ``path`` give space back: set ``auto_vacuum = INCREMENTAL``
    before its first table, or convert an existing one with a one-time VACUUM."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        if conn.execute("PRAGMA auto_vacuum").fetchone()[0] == INCREMENTAL:
            return
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if tables:
            started = time.monotonic()
            log.info("converting the database to give freed space back (a one-time VACUUM)")
            conn.execute("VACUUM")
            log.info("database converted in %.1f s", time.monotonic() - started)
        conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()


def compact(path: Path, budget_s: float = 10.0) -> Compacted:
    """Free the database's free pages for up to ``budget_s``, then truncate its WAL."""
    conn = sqlite3.connect(path, timeout=CHECKPOINT_BUSY_S * 10, isolation_level=None)
    freed = 0
    try:
        deadline = time.monotonic() + budget_s
        while time.monotonic() < deadline:
            free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
            if free == 0:
                break
            # executescript steps the pragma to its end; ``execute`` would free one page.
            conn.executescript(
                f"BEGIN IMMEDIATE; PRAGMA incremental_vacuum({PAGES_PER_STEP}); COMMIT;"
            )
            freed += min(free, PAGES_PER_STEP)
        conn.execute(f"PRAGMA busy_timeout={int(CHECKPOINT_BUSY_S * 1000)}")
        busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
    finally:
        conn.close()
    return Compacted(freed, busy == 0)
