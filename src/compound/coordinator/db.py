"""The coordinator's tables and the engine that reaches them (SQLite in WAL mode)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import (
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

metadata = MetaData()

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
    Column("contributor_id", String(128)),
    Column("lease_id", String(64)),
    Column("attempts", Integer, nullable=False, default=0),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    # Highest sequence number stored for this job, -1 before any output.
    Column("last_seq", Integer, nullable=False, default=-1),
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
    Column("seq", Integer, primary_key=True),
    Column("stream", String(8), nullable=False),
    Column("data", Text, nullable=False),
)

contributors = Table(
    "contributors",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("state", String(16), nullable=False),
    Column("cores", Integer, nullable=False, default=0),
    Column("memory_bytes", Integer, nullable=False, default=0),
    Column("runtime", String(32), nullable=False, default=""),
    Column("version", String(64), nullable=False, default=""),
    Column("cpu_percent", Float),
    Column("ram_free_bytes", Integer),
    Column("ram_total_bytes", Integer),
    Column("last_seen", Float),
    Column("current_job_id", String(32)),
)

Index("ix_jobs_queue", jobs.c.status, jobs.c.number)


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL + NORMAL: a committed transaction survives the process being killed (not a power
    # cut), which is the promise we make; FULL would cost an fsync per log batch.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_engine(database_path: Path) -> AsyncEngine:
    # One connection: SQLite has a single writer anyway, and serializing here avoids
    # "database is locked" retries between our own connections.
    engine = create_async_engine(
        f"sqlite+aiosqlite:///{database_path}", pool_size=1, max_overflow=0
    )
    event.listen(engine.sync_engine, "connect", _set_sqlite_pragmas)
    return engine


async def create_schema(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
