"""The database side of jobs' files: who uploaded which inputs, each job's artifacts, and
what retention removes. The bytes live in the blob store; a blob is kept while any kept job,
artifact or recent upload refers to it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from compound.coordinator.storage import db
from compound.protocol import TERMINAL_STATUSES, Artifact


class FileStore:
    def __init__(self, engine: AsyncEngine, reader: AsyncEngine | None = None) -> None:
        self._engine = engine
        self._reader = reader or engine

    # ------------------------------------------------------------------ inputs

    async def record_upload(self, sha256: str, owner: str, size: int) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(db.uploads)
                .prefix_with("OR REPLACE")
                .values(sha256=sha256, owner=owner, size=size, uploaded_at=time.time())
            )

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
        earlier attempt's)."""
        async with self._engine.begin() as conn:
            await conn.execute(delete(db.artifacts).where(db.artifacts.c.job_id == job_id))
            if artifacts:
                await conn.execute(
                    insert(db.artifacts),
                    [{"job_id": job_id, **artifact.model_dump()} for artifact in artifacts],
                )

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
        """Remove the logs and artifacts of jobs that ended before ``cutoff`` and uploads
        older than it; the ids of those jobs, and the blobs they referred to."""
        terminal = [status.value for status in TERMINAL_STATUSES]
        async with self._engine.begin() as conn:
            expired = await conn.execute(
                select(db.jobs.c.id, db.jobs.c.inputs_sha256)
                .where(db.jobs.c.status.in_(terminal))
                .where(db.jobs.c.finished_at < cutoff)
                .where(db.jobs.c.files_removed_at.is_(None))
            )
            rows = list(expired)
            job_ids = [job_id for job_id, _ in rows]
            blobs = {sha for _, sha in rows if sha}
            blobs |= await self._drop_files(conn, job_ids)
            old = await conn.execute(
                select(db.uploads.c.sha256).where(db.uploads.c.uploaded_at < cutoff)
            )
            blobs |= set(old.scalars())
            await conn.execute(delete(db.uploads).where(db.uploads.c.uploaded_at < cutoff))
        return job_ids, blobs

    async def _drop_files(self, conn: AsyncConnection, job_ids: list[str]) -> set[str]:
        if not job_ids:
            return set()
        shas = await conn.execute(
            select(db.artifacts.c.sha256).where(db.artifacts.c.job_id.in_(job_ids))
        )
        blobs = set(shas.scalars())
        await conn.execute(delete(db.artifacts).where(db.artifacts.c.job_id.in_(job_ids)))
        await conn.execute(delete(db.log_records).where(db.log_records.c.job_id.in_(job_ids)))
        await conn.execute(
            update(db.jobs).where(db.jobs.c.id.in_(job_ids)).values(files_removed_at=time.time())
        )
        return blobs

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
