"""The coordinator's database, opened once: the engine, the reader pool and the group writer."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from compound.coordinator.storage import compaction, schema, usage
from compound.coordinator.storage.db import WriteTurns, create_engine, create_reader
from compound.coordinator.storage.writer import GroupWriter


@dataclass(frozen=True)
class Database:
    path: Path
    engine: AsyncEngine  # writes that are not a job's lifecycle (contributors, files)
    reader: AsyncEngine  # reads that need no transaction of their own
    writer: GroupWriter  # the job lifecycle's writes, group-committed

    @classmethod
    async def open(cls, path: Path) -> Database:
        """Open (creating or upgrading its schema) the database at ``path``, set to give freed
        space back, its usage counts rebuilt from the data."""
        await asyncio.to_thread(compaction.prepare, path)
        turns = WriteTurns()
        engine = create_engine(path, turns)
        await schema.upgrade(engine)
        writer = GroupWriter(path, turns)
        await writer.run(usage.rebuild)
        return cls(path, engine, create_reader(path), writer)

    async def close(self) -> None:
        await self.writer.close()
        await self.engine.dispose()
        await self.reader.dispose()
