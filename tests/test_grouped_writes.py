"""Creates, claims and endings asked for together (one group transaction; on PostgreSQL
written a kind at a time by ``storage.grouped``) end exactly as one by one would."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from compound.coordinator.storage import usage
from compound.coordinator.storage.database import Database
from compound.coordinator.storage.job_rows import NewJob
from compound.coordinator.storage.jobs import JobStore
from compound.coordinator.storage.logs import LogStore
from compound.coordinator.storage.reports import Violation
from compound.protocol import JobStatus
from pg_cluster import Backend

pytestmark = [pytest.mark.timeout(60), pytest.mark.both_backends]


def test_grouped_moves_keep_quotas_leases_and_events(tmp_path: Path, backend: Backend) -> None:
    """Quotas refuse in submission order, a job claimed twice in one group goes once, a
    wrong lease or a missing record refuses an ending; leases, events and counts agree."""

    async def scenario() -> None:
        database = await Database.open(tmp_path / "db.sqlite3", backend.url)
        limits = usage.StoreLimits(max_jobs_per_owner=3)
        logs = LogStore(database.reader, database.writer, limits)
        jobs = JobStore(database.engine, database.reader, database.writer, logs, limits=limits)
        new = NewJob(script="print(1)", args=[], env={})
        try:
            owners = ["a"] * 5 + ["b"] * 2
            created = await asyncio.gather(
                *(jobs.create(f"job-{n}", new, owner) for n, owner in enumerate(owners)),
                return_exceptions=True,
            )
            refused = [n for n, value in enumerate(created) if isinstance(value, Exception)]
            assert refused == [3, 4]
            assert all(isinstance(created[n], usage.QuotaExceeded) for n in refused)
            kept = ["job-0", "job-1", "job-2", "job-5", "job-6"]
            expires = time.time() + 60
            claims: list[Any] = await asyncio.gather(
                *(
                    jobs.claim(job_id, f"node-{job_id}", f"lease-{job_id}", expires)
                    for job_id in kept
                ),
                jobs.claim("job-0", "node-x", "lease-x", expires),  # taken just before
            )
            assert [claim is None for claim in claims] == [False] * 5 + [True]
            assert {claim.job.contributor_id for claim in claims[:5]} == {f"node-{j}" for j in kept}
            assert all(claim.first_seq == 0 and claim.job.attempts == 1 for claim in claims[:5])
            assert len(await jobs.leases()) == 5
            endings = await asyncio.gather(
                *(
                    jobs.finish(
                        job_id,
                        f"lease-{job_id}",
                        f"node-{job_id}",
                        JobStatus.SUCCEEDED,
                        exit_code=0,
                        error=None,
                        last_seq=-1,
                    )
                    for job_id in kept[:3]
                ),
                jobs.finish(
                    "job-5",
                    "lease-wrong",
                    "node-job-5",
                    JobStatus.FAILED,
                    exit_code=1,
                    error="boom",
                    last_seq=-1,
                ),
                jobs.finish(
                    "job-6",
                    "lease-job-6",
                    "node-job-6",
                    JobStatus.FAILED,
                    exit_code=1,
                    error="boom",
                    last_seq=4,
                ),
            )
            assert [getattr(e, "status", None) for e in endings[:3]] == [JobStatus.SUCCEEDED] * 3
            assert all(e.exit_code == 0 and e.finished_at for e in endings[:3])  # type: ignore[union-attr]
            assert endings[3] is None and isinstance(endings[4], Violation)
            assert sorted(lease.job_id for lease in await jobs.leases()) == ["job-5", "job-6"]
            assert await jobs.count_by_status() == {"succeeded": 3, "running": 2}
            history = [(status, reason) for status, _at, reason in await jobs.events("job-1")]
            assert history == [
                ("queued", "submitted"),
                ("running", "assigned to node-job-1"),
                ("succeeded", None),
            ]
            mine = await database.writer.run(lambda conn: usage.held(conn, "a"))
            total = await database.writer.run(lambda conn: usage.held(conn, usage.TOTAL))
            assert (mine.jobs, total.jobs) == (3, 5)
            assert total.db_bytes == 5 * len(b"print(1)[]{}")
        finally:
            await database.close()

    asyncio.run(scenario())
