"""The stores' writes that differ per database (upserts, the driver's executemany, the
contributors' positions, quotas' counters, retention), on SQLite and on PostgreSQL alike."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from compound.coordinator.storage import usage
from compound.coordinator.storage.contributors import ContributorStore, Seen
from compound.coordinator.storage.database import Database
from compound.coordinator.storage.files import FileStore
from compound.coordinator.storage.job_rows import NewJob
from compound.coordinator.storage.jobs import JobStore
from compound.coordinator.storage.logs import LogStore
from compound.protocol import (
    PROTOCOL_VERSION,
    Artifact,
    ContributorState,
    Hello,
    JobStatus,
    LogRecord,
)
from pg_cluster import Backend

pytestmark = [pytest.mark.timeout(60), pytest.mark.both_backends]
SHA = "ab" * 32


def _hello(node_id: str, memory_bytes: int = 1 << 40) -> Hello:
    return Hello(
        protocol_version=PROTOCOL_VERSION,
        node_id=node_id,
        name=node_id,
        cores=4,
        memory_bytes=memory_bytes,
    )


def test_contributors_register_page_and_heartbeat(tmp_path: Path, backend: Backend) -> None:
    """A node id stays its first token's; pages follow registration order; heartbeats and
    states are written back (memory sizes past 32 bits included)."""

    async def scenario() -> None:
        database = await Database.open(tmp_path / "db.sqlite3", backend.url)
        store = ContributorStore(database.engine, database.reader)
        try:
            for node in ("n-c", "n-a", "n-b"):
                assert await store.connected(_hello(node), "lab", max_nodes=3) is None
            assert await store.connected(_hello("n-a"), "other") is not None
            assert await store.connected(_hello("n-d"), "lab", max_nodes=3) is not None
            assert await store.connected(_hello("n-a", 5 << 40), "lab") is None  # again
            await store.seen({"n-b": Seen(time.time(), 12.5, 3 << 33, 1 << 36)})
            await store.set_state("n-c", ContributorState.OFFLINE)
            first, after = await store.page(0, 2)
            rest, end = await store.page(after or 0, 2)
            rows = first + rest
            assert [row.id for row in rows] == ["n-c", "n-a", "n-b"] and end is None
            assert rows[0].state is ContributorState.OFFLINE
            assert rows[1].memory_bytes == 5 << 40 and rows[1].token_name == "lab"
            assert rows[2].ram_free_bytes == 3 << 33 and rows[2].cpu_percent == 12.5
            assert await store.token_of("n-b") == "lab"
        finally:
            await database.close()

    asyncio.run(scenario())


def test_jobs_files_quotas_and_retention(tmp_path: Path, backend: Backend) -> None:
    """A job's whole life with its inputs, records, artifacts and lease renewals, charged
    to its owner and refunded by retention, reads back the same on either database."""

    async def scenario() -> None:
        database = await Database.open(tmp_path / "db.sqlite3", backend.url)
        limits = usage.StoreLimits(max_file_bytes_per_owner=1000)
        logs = LogStore(database.reader, database.writer, limits)
        jobs = JobStore(database.engine, database.reader, database.writer, logs, limits=limits)
        files = FileStore(database.reader, database.writer, limits)
        try:
            await files.record_upload(SHA, "alice", 600)
            await files.record_upload(SHA, "alice", 600)  # the same bytes: charged once
            with pytest.raises(usage.QuotaExceeded):
                await files.record_upload("cd" * 32, "alice", 600)
            assert await files.uploaded_by(SHA, "alice") == 600
            await jobs.create("job-1", NewJob(script="print(1)", args=[], env={}), "alice")
            claimed = await jobs.claim("job-1", "node", "lease-1", time.time() + 60)
            assert claimed is not None and claimed.first_seq == 0
            await jobs.renew_leases({"job-1": time.time() + 120})
            assert (await jobs.leases())[0].expires_at > time.time() + 100
            records = [LogRecord(seq=seq, data=f"{seq}\n") for seq in range(3)]
            assert await logs.append("job-1", "lease-1", "node", records, 1 << 20) == 2
            assert await logs.append("job-1", "lease-1", "node", records, 1 << 20) == 2
            await jobs.request_cancel("job-1")
            artifact = Artifact(path="out.txt", size=300, sha256="ef" * 32)
            await files.replace_artifacts("job-1", [artifact])
            ended = await jobs.finish(
                "job-1", "lease-1", "node", JobStatus.SUCCEEDED, exit_code=0, error=None, last_seq=2
            )
            assert ended is not None and not isinstance(ended, Exception)
            page = await logs.read("job-1", -1, 100, 1 << 20)
            assert [r.data for r in page.records] == ["0\n", "1\n", "2\n"]
            assert (await files.file_room("alice")).bytes == 100
            assert await jobs.count_by_status() == {"succeeded": 1}

            job_ids, blobs = await files.expire(time.time() + 1)
            assert job_ids == ["job-1"] and blobs == {SHA, "ef" * 32}
            assert not await files.in_use(SHA)
            assert (await files.file_room("alice")).bytes == 1000
        finally:
            await database.close()

    asyncio.run(scenario())
