"""The coordinator's tables and the engines that reach them (SQLite in WAL mode; PostgreSQL's
are ``backend``'s).

This metadata is the one definition of the tables: databases are brought to it by the
revisions in ``migrations/`` (``schema.upgrade``), and a test holds the newest revision to
it. A change here needs a revision there (``schema.write_revision``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    event,
)
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from compound.coordinator.storage import backend

metadata = MetaData()
# Counts of bytes and sequence numbers outgrow 32 bits: BIGINT on PostgreSQL (SQLite's
# INTEGER is 64-bit already, and its DDL stays as it was).
Int64 = BigInteger().with_variant(Integer(), "sqlite")
# The write-ahead log is cut back to this size each time a checkpoint resets it: without a
# limit it keeps the size of its largest burst for good (313 MB seen under a flood).
JOURNAL_SIZE_LIMIT_BYTES = 16 * 1024 * 1024

jobs = Table(
    "jobs",
    metadata,
    # The integer key gives the FIFO order of the queue.
    Column("number", Integer, primary_key=True, autoincrement=True),
    Column("id", String(32), nullable=False, unique=True),
    Column("status", String(16), nullable=False, index=True),
    Column("script", Text, nullable=False),
    Column("args", Text, nullable=False, default="[]"),
    Column("env", Text, nullable=False, default="{}"),
    Column("timeout_s", Float),
    Column("name", String(256)),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("exit_code", Integer),
    Column("error", Text),
    # The contributor that ran (or runs) it; who holds it *now* is the lease's business.
    Column("contributor_id", String(128)),
    Column("attempts", Integer, nullable=False, default=0),
    # The number of its latest attempt (0 before its first). Unlike ``attempts``, a
    # hand-back does not give it back: each start has a number of its own, its records too.
    Column("last_attempt", Integer, nullable=False, default=0),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    # Highest sequence number accounted for, -1 before any output. Past the per-job log
    # quota records are acknowledged (so counted here) but no longer stored.
    Column("last_seq", Int64, nullable=False, default=-1),
    Column("log_bytes", Int64, nullable=False, default=0),
    # Who submitted it (the client's address until tokens exist): quotas count per owner.
    Column("owner", String(128)),
    # JSON list of PEP 508 requirements (compound.protocol.requirements), [] for none.
    Column("requirements", Text, nullable=False, default="[]"),
    # Its input files: one tar in the blob store (see blobs.py), or none.
    Column("inputs_sha256", String(64), index=True),
    Column("inputs_size", Int64),
    # When retention removed its logs, inputs and artifacts (the row stays).
    Column("files_removed_at", Float),
    # Bytes charged to its owner's database quota (usage.py): its script, args and env,
    # then every log record stored; given back when retention clears them.
    Column("db_bytes", Int64, nullable=False, default=0),
)

# Who uploaded which input tar: a submitter may name only inputs it uploaded itself.
uploads = Table(
    "uploads",
    metadata,
    Column("sha256", String(64), primary_key=True),
    Column("owner", String(128), primary_key=True),
    Column("size", Int64, nullable=False),
    Column("uploaded_at", Float, nullable=False),
)

# What each owner stores, kept in step by every write (usage.py); owner "" holds the sums.
usage = Table(
    "usage",
    metadata,
    Column("owner", String(128), primary_key=True),
    Column("jobs", Int64, nullable=False, default=0),
    Column("db_bytes", Int64, nullable=False, default=0),
    Column("file_bytes", Int64, nullable=False, default=0),
)

# A job's output files; their bytes are blobs, shared by content hash.
artifacts = Table(
    "artifacts",
    metadata,
    Column("job_id", String(32), ForeignKey("jobs.id"), primary_key=True),
    Column("path", Text, primary_key=True),
    Column("size", Int64, nullable=False),
    Column("sha256", String(64), nullable=False, index=True),
)

# The one record of who may report on a running job. A job is RUNNING exactly while it
# has a row here; every status change out of RUNNING deletes it in the same transaction.
leases = Table(
    "leases",
    metadata,
    Column("job_id", String(32), ForeignKey("jobs.id"), primary_key=True),
    Column("lease_id", String(64), nullable=False, unique=True),
    Column("holder", String(128), nullable=False, index=True),
    # The holder numbers this job's records from here.
    Column("first_seq", Int64, nullable=False),
    Column("granted_at", Float, nullable=False),
    # Wall-clock time; renewals are written back in batches by the sweeper.
    Column("expires_at", Float, nullable=False),
)

job_events = Table(
    "job_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(32), ForeignKey("jobs.id"), nullable=False, index=True),
    Column("status", String(16), nullable=False),
    Column("at", Float, nullable=False),
    Column("reason", Text),
)

log_records = Table(
    "log_records",
    metadata,
    Column("job_id", String(32), primary_key=True),
    Column("seq", Int64, primary_key=True),
    Column("stream", String(8), nullable=False),
    # UTF-8 bytes of data. Before data on purpose: SQLite then reads it without touching
    # the overflow pages of large records, so pages can be cut by size cheaply.
    Column("size", Int64, nullable=False, default=0),
    Column("data", Text, nullable=False),
    # The attempt that wrote it (jobs.last_attempt when it was stored); a note, the attempt
    # it is about.
    Column("attempt", Integer, nullable=False, default=1),
)

contributors = Table(
    "contributors",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("state", String(16), nullable=False),
    Column("cores", Integer, nullable=False, default=0),
    Column("memory_bytes", Int64, nullable=False, default=0),
    Column("runtime", String(32), nullable=False, default=""),
    Column("version", String(64), nullable=False, default=""),
    Column("cpu_percent", Float),
    Column("ram_free_bytes", Int64),
    Column("ram_total_bytes", Int64),
    Column("last_seen", Float),
    # The token that first registered this node id; no other token can take it over.
    Column("token_name", String(128)),
    # Why it is paused or draining (its agent's words), and, once offline, the state it
    # was in when last connected: both kept while it is away.
    Column("state_reason", String(256)),
    Column("last_state", String(16)),
    # The coordinator it is connected to, or last was ("host:port"), when several share a
    # PostgreSQL database; null on a coordinator of its own.
    Column("coordinator", String(128)),
)

# Access tokens. Only a hash of each is stored; the token itself is shown once, at creation.
# Auth is on as soon as this table has a row (a revoked token still counts: revoking the
# last token must not open the coordinator).
tokens = Table(
    "tokens",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
    Column("last_used_at", Float),
    Column("revoked_at", Float),
)

# Who did what to the coordinator's access and to others' work: tokens created and revoked
# (by the command line), admins' cancels of other submitters' jobs. Only appended to.
audit = Table(
    "audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    # A token's name, "command line (USER)", or open mode's client address.
    Column("actor", String(160), nullable=False),
    Column("action", String(32), nullable=False),
    # What it was done to: a token's name, a job id.
    Column("target", String(160), nullable=False),
    Column("detail", Text),
)

Index("ix_jobs_queue", jobs.c.status, jobs.c.number)


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL + NORMAL: a committed transaction survives the process being killed (not a power
    # cut), which is the promise we make; FULL would cost an fsync per log batch.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT_BYTES}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class WriteTurns:
    """Two writing connections of one process take SQLite's write lock in turn.

    SQLite's busy handler is not fair: a connection waiting for the lock polls with
    growing sleeps, and a group writer committing back to back would take the lock again
    in between, for as long as the load lasts. So this engine says when it waits, and the
    group writer (writer.py) starts no transaction meanwhile.
    """

    def __init__(self) -> None:
        self.waiting = 0  # engine transactions waiting for the write lock now


def _writer_connected(dbapi_connection: Any, record: Any) -> None:
    _set_sqlite_pragmas(dbapi_connection, record)
    # No implicit BEGIN from the driver: ``_begin_immediate`` opens every transaction.
    dbapi_connection.isolation_level = None


def _begin_immediate(turns: WriteTurns) -> Callable[[Any], None]:
    def begin(connection: Any) -> None:
        # The group writer (writer.py) is a second writing connection. A deferred
        # transaction that read before the other committed could not write at all
        # (SQLITE_BUSY_SNAPSHOT, no retry); taking the write lock at BEGIN makes the two
        # wait for each other instead.
        turns.waiting += 1
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        finally:
            turns.waiting -= 1

    return begin


def create_engine(database_path: Path, turns: WriteTurns | None = None) -> AsyncEngine:
    """The writer for logs, contributors and files: one connection, each transaction
    ``BEGIN IMMEDIATE``. Jobs' create, claim and finish go through ``writer.py``."""
    engine = create_async_engine(
        f"sqlite+aiosqlite:///{database_path}", pool_size=1, max_overflow=0
    )
    event.listen(engine.sync_engine, "connect", _writer_connected)
    event.listen(engine.sync_engine, "begin", _begin_immediate(turns or WriteTurns()))
    return engine


def create_reader(database_path: Path, connections: int = 3) -> AsyncEngine:
    """Readers: in WAL mode they never wait for the writer, so a page of a big log or a job
    list is not queued behind log batches (and /healthz not behind either)."""
    engine = create_async_engine(
        f"sqlite+aiosqlite:///{database_path}", pool_size=connections, max_overflow=0
    )
    event.listen(engine.sync_engine, "connect", _set_sqlite_pragmas)
    return engine


async def execute_many(engine: AsyncEngine, statement: str, rows: list[tuple[Any, ...]]) -> None:
    """One statement for many rows, in one transaction, through the driver's own
    executemany: SQLAlchemy's per-row work would cost more than the writes."""
    if not rows:
        return
    async with engine.begin() as conn:
        if engine.dialect.name == backend.POSTGRESQL:
            await backend.execute_many(conn, statement, rows)
            return
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        await driver.executemany(statement, rows)
