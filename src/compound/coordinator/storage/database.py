"""The coordinator's database, opened once: the engine, the reader pool and the group writer.

SQLite in the data directory by default; PostgreSQL when a URL is given (``backend``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import cast

from sqlalchemy.ext.asyncio import AsyncEngine

from compound.coordinator.storage import backend, compaction, schema, usage
from compound.coordinator.storage.db import WriteTurns, create_engine, create_reader
from compound.coordinator.storage.writer import GroupWriter


@dataclass(frozen=True)
class Database:
    path: Path  # SQLite's file (unused on PostgreSQL)
    engine: AsyncEngine  # writes that are not a job's lifecycle (contributors, files)
    reader: AsyncEngine  # reads that need no transaction of their own
    writer: GroupWriter  # the job lifecycle's writes, group-committed
    url: str | None = None  # PostgreSQL's URL; None: SQLite at ``path``

    @classmethod
    async def open(cls, path: Path, url: str | None = None) -> Database:
        """Open (creating the schema if new) the database at ``path``, or at ``url`` if
        given (PostgreSQL): created or upgraded to the newest schema, set to give freed space
        back, its usage counts rebuilt."""
        if url is not None:
            return await cls._open_postgresql(path, url)
        await asyncio.to_thread(compaction.prepare, path)
        turns = WriteTurns()
        engine = create_engine(path, turns)
        await schema.upgrade(engine)
        writer = GroupWriter(path, turns)
        await writer.run(usage.rebuild)
        return cls(path, engine, create_reader(path), writer)

    @classmethod
    async def _open_postgresql(cls, path: Path, url: str) -> Database:
        engine = backend.create_engine(url)
        try:
            await schema.upgrade(engine)
            async with engine.begin() as conn:
                await backend.create_extras(conn)
        except BaseException:
            await engine.dispose()
            raise
        # The writer's operations use only what PgConnection has of sqlite3.Connection.
        connect = cast("Callable[[], object]", partial(backend.PgConnection, url))
        writer = GroupWriter(path, connect=connect)  # type: ignore[arg-type]
        await writer.run(usage.rebuild)
        return cls(path, engine, backend.create_engine(url, backend.READER_POOL), writer, url)

    @property
    def is_sqlite(self) -> bool:
        return self.url is None

    def size_bytes(self) -> Callable[[], int]:
        """What the database takes on disk, for the global database cap: SQLite's file and
        WAL; on PostgreSQL 0 (the cap counts the bytes charged to owners only)."""
        if self.url is None:
            return usage.DatabaseSize(self.path).bytes
        return lambda: 0

    def token_reader(self) -> AsyncEngine:
        """An engine of its own for the token book (one connection)."""
        if self.url is None:
            return create_reader(self.path, connections=1)
        return backend.create_engine(self.url, connections=1)

    async def close(self) -> None:
        await self.writer.close()
        await self.engine.dispose()
        await self.reader.dispose()
