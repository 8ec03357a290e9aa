"""The coordinator's database, opened once: the engine, the reader pool and the group writer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from compound.coordinator.storage.db import (
    WriteTurns,
    create_engine,
    create_reader,
    create_schema,
)
from compound.coordinator.storage.writer import GroupWriter


@dataclass(frozen=True)
class Database:
    path: Path
    engine: AsyncEngine  # writes that are not a job's lifecycle (contributors, files)
    reader: AsyncEngine  # reads that need no transaction of their own
    writer: GroupWriter  # the job lifecycle's writes, group-committed

    @classmethod
    async def open(cls, path: Path) -> Database:
        """Open (creating the schema if new) the database at ``path``."""
        turns = WriteTurns()
        engine = create_engine(path, turns)
        await create_schema(engine)
        return cls(path, engine, create_reader(path), GroupWriter(path, turns))

    async def close(self) -> None:
        await self.writer.close()
        await self.engine.dispose()
        await self.reader.dispose()
