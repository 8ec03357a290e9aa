"""The store's job-row read (``Store.get_job``, the driver's own query): the same row the
writer committed, field for field, on a real SQLite database."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from compound.coordinator.storage.db import WriteTurns, create_engine, create_reader, create_schema
from compound.coordinator.storage.store import NewJob, Store
from compound.coordinator.storage.writer import GroupWriter
from compound.protocol import InputsRef, JobStatus

pytestmark = pytest.mark.timeout(60)


async def _store(path: Path) -> Store:
    turns = WriteTurns()
    engine = create_engine(path, turns)
    await create_schema(engine)
    return Store(engine, create_reader(path), writer=GroupWriter(path, turns))


def test_a_job_row_reads_back_as_the_writer_committed_it(tmp_path: Path) -> None:
    """Every field of a job with arguments, environment, requirements and inputs reads back
    equal to the row the insert returned; an unknown id reads as None."""

    async def scenario() -> None:
        store = await _store(tmp_path / "jobs.sqlite")
        try:
            new = NewJob(
                script="print(1)",
                args=["a", "b c"],
                env={"K": "v"},
                timeout_s=12.5,
                name="named",
                requirements=["numpy==2.0"],
                inputs=InputsRef(sha256="ab" * 32, size=10),
            )
            created = await store.create_job("job-1", new, "alice")
            read = await store.get_job("job-1")
            assert read == created
            assert read is not None and read.status is JobStatus.QUEUED and not read.damaged
            assert await store.get_job("no-such-job") is None
        finally:
            await store.close()

    asyncio.run(scenario())


def test_a_stored_row_with_unreadable_arguments_reads_as_damaged(tmp_path: Path) -> None:
    """A row whose arguments are not JSON any more reads back marked damaged, not raising."""
    path = tmp_path / "jobs.sqlite"

    async def create() -> None:
        store = await _store(path)
        try:
            await store.create_job("job-1", NewJob(script="print(1)", args=[], env={}), None)
        finally:
            await store.close()

    async def read() -> None:
        store = await _store(path)
        try:
            job = await store.get_job("job-1")
            assert job is not None and job.damaged and job.args == []
        finally:
            await store.close()

    asyncio.run(create())
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE jobs SET args = 'not json' WHERE id = 'job-1'")
    asyncio.run(read())
