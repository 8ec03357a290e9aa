"""The database side of jobs' files: who uploaded which inputs, each job's artifacts, and
what retention removes. The bytes live in the blob store; a blob is kept while any kept job,
artifact or recent upload refers to it. Writes go through the group writer
(``file_writes``), each charged to its owner's file quota in its own transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from compound.coordinator.storage import db, file_writes, usage
from compound.coordinator.storage.usage import QuotaExceeded
from compound.coordinator.storage.writer import GroupWriter
from compound.protocol import Artifact

# Jobs cleared per retention transaction: bounds how long it holds the write lock.
EXPIRE_BATCH = 200


class FileStore:
    def __init__(
        self,
        reader: AsyncEngine,
        writer: GroupWriter,
        limits: usage.StoreLimits | None = None,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.limits = limits or usage.StoreLimits()

    # ------------------------------------------------------------------ inputs

    async def record_upload(self, sha256: str, owner: str, size: int) -> None:
        """QuotaExceeded (nothing recorded) past ``owner``'s file quota."""
        refused = await self._writer.run(
            partial(
                file_writes.record_upload,
                sha256=sha256,
                owner=owner,
                size=size,
                limits=self.limits,
            )
        )
        if refused is not None:
            raise QuotaExceeded(refused)

    async def file_room(self, owner: str) -> usage.Room:
        """What ``owner`` may still store as files, read now (the write checks again)."""
        async with self._reader.connect() as conn:
            rows = await conn.execute(
                select(
                    db.usage.c.owner, db.usage.c.jobs, db.usage.c.db_bytes, db.usage.c.file_bytes
                ).where(db.usage.c.owner.in_([owner, usage.TOTAL]))
            )
            counts = {
                name: usage.Held(jobs, db_bytes, files) for name, jobs, db_bytes, files in rows
            }
            holders = await conn.scalar(
                select(func.count())
                .select_from(db.usage)
                .where(db.usage.c.owner != usage.TOTAL)
                .where(db.usage.c.file_bytes > 0)
            )
        mine, total = counts.get(owner, usage.Held()), counts.get(usage.TOTAL, usage.Held())
        return usage.files_room(mine, total, int(holders or 0), self.limits)

    async def uploaded_by(self, sha256: str, owner: str) -> int | None:
        """The size of the input tar ``sha256`` if ``owner`` uploaded it (and it is kept)."""
        async with self._reader.connect() as conn:
            size = await conn.scalar(
                select(db.uploads.c.size)
                .where(db.uploads.c.sha256 == sha256)
                .where(db.uploads.c.owner == owner)
            )
        return None if size is None else int(size)

    # ------------------------------------------------------------------ artifacts

    async def replace_artifacts(self, job_id: str, artifacts: Sequence[Artifact]) -> None:
        """The job's artifacts are now exactly these (a retried job's upload replaces the
        earlier attempt's); QuotaExceeded (nothing changed) past its owner's file quota."""
        refused = await self._writer.run(
            partial(
                file_writes.replace_artifacts,
                job_id=job_id,
                artifacts=artifacts,
                limits=self.limits,
            )
        )
        if refused is not None:
            raise QuotaExceeded(refused)

    async def artifacts(self, job_id: str) -> list[Artifact]:
        async with self._reader.connect() as conn:
            result = await conn.execute(
                select(db.artifacts.c.path, db.artifacts.c.size, db.artifacts.c.sha256)
                .where(db.artifacts.c.job_id == job_id)
                .order_by(db.artifacts.c.path)
            )
            return [Artifact(path=p, size=s, sha256=h) for p, s, h in result]

    async def artifact(self, job_id: str, path: str) -> Artifact | None:
        async with self._reader.connect() as conn:
            row = (
                await conn.execute(
                    select(db.artifacts.c.size, db.artifacts.c.sha256)
                    .where(db.artifacts.c.job_id == job_id)
                    .where(db.artifacts.c.path == path)
                )
            ).first()
        return None if row is None else Artifact(path=path, size=row.size, sha256=row.sha256)

    # ------------------------------------------------------------------ retention

    async def expire(self, cutoff: float) -> tuple[list[str], set[str]]:
        """Clear the jobs that ended before ``cutoff`` (logs, output files, script) and the
        uploads older than it, a batch per transaction; the ids of those jobs, and the blobs
        they referred to."""
        job_ids: list[str] = []
        blobs: set[str] = set()
        while True:
            expired = await self._writer.run(
                partial(file_writes.expire, cutoff=cutoff, max_jobs=EXPIRE_BATCH)
            )
            job_ids += expired.job_ids
            blobs |= expired.blobs
            if not expired.more:
                return job_ids, blobs

    async def in_use(self, sha256: str) -> bool:
        """Whether a kept job, artifact or upload still refers to blob ``sha256``."""
        async with self._reader.connect() as conn:
            job = await conn.scalar(
                select(db.jobs.c.id)
                .where(db.jobs.c.inputs_sha256 == sha256)
                .where(db.jobs.c.files_removed_at.is_(None))
                .limit(1)
            )
            other = await conn.scalar(
                select(db.uploads.c.sha256).where(db.uploads.c.sha256 == sha256).limit(1)
            )
            artifact = await conn.scalar(
                select(db.artifacts.c.job_id).where(db.artifacts.c.sha256 == sha256).limit(1)
            )
        return job is not None or other is not None or artifact is not None
