"""The job store's row read (``JobStore.get``, the driver's own query): the same row the
writer committed, field for field, on a real database (SQLite, then PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from compound.coordinator.storage.database import Database
from compound.coordinator.storage.job_rows import NewJob
from compound.coordinator.storage.jobs import JobStore
from compound.coordinator.storage.logs import LogStore
from compound.protocol import InputsRef, JobStatus
from pg_cluster import Backend

pytestmark = [pytest.mark.timeout(60), pytest.mark.both_backends]


@asynccontextmanager
async def _store(path: Path, backend: Backend) -> AsyncIterator[JobStore]:
    database = await Database.open(path, backend.url)
    logs = LogStore(database.reader, database.writer)
    try:
        yield JobStore(database.engine, database.reader, database.writer, logs)
    finally:
        await database.close()


def test_a_job_row_reads_back_as_the_writer_committed_it(tmp_path: Path, backend: Backend) -> None:
    """Every field of a job with arguments, environment, requirements and inputs reads back
    equal to the row the insert returned; an unknown id reads as None."""

    async def scenario() -> None:
        async with _store(tmp_path / "jobs.sqlite", backend) as store:
            new = NewJob(
                script="print(1)",
                args=["a", "b c"],
                env={"K": "v"},
                timeout_s=12.5,
                name="named",
                requirements=["numpy==2.0"],
                inputs=InputsRef(sha256="ab" * 32, size=10),
            )
            created = await store.create("job-1", new, "alice")
            read = await store.get("job-1")
            assert read == created
            assert read is not None and read.status is JobStatus.QUEUED and not read.damaged
            assert await store.get("no-such-job") is None

    asyncio.run(scenario())


def test_a_stored_row_with_unreadable_arguments_reads_as_damaged(
    tmp_path: Path, backend: Backend
) -> None:
    """A row whose arguments are not JSON any more reads back marked damaged, not raising."""
    path = tmp_path / "jobs.sqlite"

    async def create() -> None:
        async with _store(path, backend) as store:
            await store.create("job-1", NewJob(script="print(1)", args=[], env={}), None)

    async def read() -> None:
        async with _store(path, backend) as store:
            job = await store.get("job-1")
            assert job is not None and job.damaged and job.args == []

    asyncio.run(create())
    backend.execute(path, "UPDATE jobs SET args = 'not json' WHERE id = ?", [("job-1",)])
    asyncio.run(read())
