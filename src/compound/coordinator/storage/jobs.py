"""Jobs: their rows and status history, their lease rows, and every move of their lifecycle.

Each move is one verb named for its intent (``create``, ``claim``, ``requeue``, ``finish``,
``fail``, ``cancel``, ``request_cancel``, ``end_overdue``, ``note``) and one function of
``job_writes`` run by the group writer: legal moves only, an event per move, the lease row
created and deleted in the same transaction as the move, so a job is RUNNING exactly while
it has a lease.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from compound.coordinator.storage import db, job_writes, usage
from compound.coordinator.storage.job_rows import JOB_COLUMNS, JobRow, NewJob
from compound.coordinator.storage.logs import LogStore
from compound.coordinator.storage.observer import NoObserver, StoreObserver
from compound.coordinator.storage.reports import Violation
from compound.coordinator.storage.writer import GroupWriter
from compound.protocol import JobStatus, JobView

log = logging.getLogger("compound.coordinator")

_SELECT_JOB_ROW = f"SELECT {', '.join(JOB_COLUMNS)} FROM jobs WHERE id = ?"


@dataclass(frozen=True)
class LeaseRow:
    job_id: str
    lease_id: str
    holder: str
    first_seq: int
    expires_at: float
    granted_at: float  # when the claim that started this attempt was committed


@dataclass(frozen=True)
class ClaimedJob:
    job: JobRow
    first_seq: int


class JobStore:
    def __init__(
        self,
        engine: AsyncEngine,
        reader: AsyncEngine,
        writer: GroupWriter,
        logs: LogStore,
        retention_s: float | None = None,
        limits: usage.StoreLimits | None = None,
        database_bytes: Callable[[], int] = lambda: 0,
        observer: StoreObserver | None = None,
    ) -> None:
        self._engine = engine
        self._observer = observer or NoObserver()
        self._limits = limits
        self._database_bytes = database_bytes
        self._reader = reader
        self._writer = writer
        self._logs = logs
        # Shown in job views: when a finished job's files go.
        self.retention_s = retention_s

    # ------------------------------------------------------------------ moves

    async def create(self, job_id: str, new: NewJob, owner: str | None = None) -> JobRow:
        """Queue a new job; returns once its row is committed (durable). QuotaExceeded,
        nothing stored, if its owner's quotas refuse it (checked in that transaction)."""
        values = job_writes.JobValues(
            id=job_id,
            script=new.script,
            args=json.dumps(new.args),
            env=json.dumps(new.env),
            timeout_s=new.timeout_s,
            name=new.name,
            owner=owner,
            requirements=json.dumps(new.requirements),
            inputs_sha256=new.inputs.sha256 if new.inputs else None,
            inputs_size=new.inputs.size if new.inputs else None,
        )
        row = await self._writer.run(
            partial(
                job_writes.insert_job,
                job=values,
                limits=self._limits,
                database_bytes=self._database_bytes(),
            )
        )
        if isinstance(row, str):
            raise usage.QuotaExceeded(row)
        self._observer.job_created()
        return JobRow.from_mapping(row)

    async def claim(
        self, job_id: str, holder: str, lease_id: str, expires_at: float
    ) -> ClaimedJob | None:
        """Run a queued job under a new lease; None if it is no longer queued (cancelled
        meanwhile) or cannot be run (then it is failed, so it never blocks the queue)."""
        claimed = await self._writer.run(
            partial(
                job_writes.claim_job,
                job_id=job_id,
                holder=holder,
                lease_id=lease_id,
                expires_at=expires_at,
                skip_locked=self._engine.dialect.name != "sqlite",
            )
        )
        if isinstance(claimed, str):
            log.error("job %s failed: %s", job_id, claimed)
            return None
        if claimed is None:
            return None
        job = JobRow.from_mapping(claimed.row)
        self._observer.job_claimed((job.started_at or job.created_at) - job.created_at)
        return ClaimedJob(job, claimed.first_seq)

    async def requeue(
        self, job_id: str, reason: str, *, note: str | None = None, count_attempt: bool = True
    ) -> JobRow | None:
        """Put a running job back in the queue, its lease gone. None if it is not running."""
        moved = await self._writer.run(
            partial(
                job_writes.requeue_job,
                job_id=job_id,
                reason=reason,
                note=note,
                count_attempt=count_attempt,
            )
        )
        return None if moved is None else self._moved(job_id, moved)

    async def hand_back(
        self,
        job_id: str,
        reason: str,
        max_handbacks: int,
        *,
        lease: tuple[str, str] | None = None,
        last_seq: int | None = None,
    ) -> JobRow | Violation | None:
        """Requeue (or, past ``max_handbacks``, fail) a running job its contributor gave up;
        None if it is not running (under ``lease``: (lease id, holder), if given)."""
        moved = await self._writer.run(
            partial(
                job_writes.hand_back_job,
                job_id=job_id,
                reason=reason,
                max_handbacks=max_handbacks,
                lease=lease,
                last_seq=last_seq,
            )
        )
        if moved is None or isinstance(moved, Violation):
            return moved
        job = self._moved(job_id, moved)
        if job.status.is_terminal:
            self._ended(job)
        return job

    async def finish(
        self,
        job_id: str,
        lease_id: str,
        holder: str,
        status: JobStatus,
        *,
        exit_code: int | None,
        error: str | None,
        last_seq: int | None,
    ) -> JobRow | Violation | None:
        """End a running job as ``holder`` of ``lease_id`` reported; None if that lease is
        not current, a Violation if records it announced (up to ``last_seq``) never came."""
        ended = await self._writer.run(
            partial(
                job_writes.finish_job,
                job_id=job_id,
                lease_id=lease_id,
                holder=holder,
                status=status,
                exit_code=exit_code,
                error=error,
                last_seq=last_seq,
            )
        )
        if ended is None or isinstance(ended, Violation):
            return ended
        return self._ended(JobRow.from_mapping(ended))

    async def fail(
        self, job_id: str, reason: str, *, error: str, note: str | None = None
    ) -> JobRow | None:
        """Fail a queued or running job with ``error``; None if it already ended."""
        moved = await self._writer.run(
            partial(job_writes.fail_job, job_id=job_id, reason=reason, error=error, note=note)
        )
        if moved is None:
            return None
        return self._ended(JobRow.from_mapping(moved.row))

    async def cancel(self, job_id: str, reason: str, error: str | None = None) -> JobRow | None:
        """Cancel a queued job, or a running one at once; None if it already ended."""
        row = await self._writer.run(
            partial(job_writes.cancel_job, job_id=job_id, reason=reason, error=error)
        )
        if row is None:
            return None
        return self._ended(JobRow.from_mapping(row))

    async def end_overdue(
        self, job_id: str, lease_id: str, status: JobStatus, *, error: str, note: str
    ) -> JobRow | None:
        """End a running job its agent did not end in time (timed out, or cancelled), if
        ``lease_id`` still holds it; None if it does not."""
        moved = await self._writer.run(
            partial(
                job_writes.end_overdue,
                job_id=job_id,
                lease_id=lease_id,
                status=status,
                reason=error,
                error=error,
                note=note,
            )
        )
        if moved is None:
            return None
        return self._ended(self._moved(job_id, moved))

    async def request_cancel(self, job_id: str) -> JobRow:
        row = await self._writer.run(partial(job_writes.request_cancel, job_id=job_id))
        return JobRow.from_mapping(row)

    async def note(self, job_id: str, text: str) -> int:
        """Add a SYSTEM record after the job's last one (a note from Compound itself)."""
        noted = await self._writer.run(partial(job_writes.insert_note, job_id=job_id, text=text))
        self._logs.noted(job_id, noted)
        return noted.record.seq

    def _ended(self, job: JobRow) -> JobRow:
        """``job`` has just ended: its log tail goes, the observer counts it."""
        self._logs.ended(job.id)
        ran_s = None
        if job.started_at is not None and job.finished_at is not None:
            ran_s = job.finished_at - job.started_at
        self._observer.job_ended(job.status.value, ran_s)
        return job

    def _moved(self, job_id: str, moved: job_writes.Moved) -> JobRow:
        if moved.note is not None:
            self._logs.noted(job_id, moved.note)
        return JobRow.from_mapping(moved.row)

    # ------------------------------------------------------------------ reads

    async def get(self, job_id: str) -> JobRow | None:
        # The driver's own query, in one trip to its thread: followers read a job row at
        # every change of their job, and SQLAlchemy's statement and result handling cost
        # more than the read itself (~400 µs of CPU against ~150 µs).
        if self._reader.dialect.name != "sqlite":
            return await self._get_row(job_id)
        async with self._reader.connect() as conn:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            rows = await driver.execute_fetchall(_SELECT_JOB_ROW, (job_id,))
        for row in rows:
            return JobRow.from_mapping(dict(zip(JOB_COLUMNS, row, strict=True)))
        return None

    async def _get_row(self, job_id: str) -> JobRow | None:
        """``get`` through SQLAlchemy (PostgreSQL)."""
        columns = [db.jobs.c[name] for name in JOB_COLUMNS]
        async with self._reader.connect() as conn:
            row = (await conn.execute(select(*columns).where(db.jobs.c.id == job_id))).first()
        return None if row is None else JobRow.from_mapping(row._mapping)

    async def newest(self, limit: int, owner: str | None = None) -> list[JobView]:
        """The newest jobs (of ``owner`` only, if given), with their queue positions."""
        query = select(db.jobs).order_by(db.jobs.c.number.desc()).limit(limit)
        if owner is not None:
            query = query.where(db.jobs.c.owner == owner)
        async with self._reader.connect() as conn:
            result = await conn.execute(query)
            rows = [JobRow.from_mapping(row) for row in result.mappings()]
            queued = await conn.execute(
                select(db.jobs.c.id)
                .where(db.jobs.c.status == JobStatus.QUEUED.value)
                .order_by(db.jobs.c.number)
            )
            positions = {job_id: index + 1 for index, job_id in enumerate(queued.scalars())}
        return [row.view(positions.get(row.id), self.retention_s) for row in rows]

    async def queued(self) -> list[tuple[int, str, str | None, bool]]:
        """The queued jobs, oldest first, as (number, id, owner, needs no packages): the
        scheduler mirrors them in memory."""
        async with self._reader.connect() as conn:
            result = await conn.execute(
                select(db.jobs.c.number, db.jobs.c.id, db.jobs.c.owner, db.jobs.c.requirements)
                .where(db.jobs.c.status == JobStatus.QUEUED.value)
                .order_by(db.jobs.c.number)
            )
            return [
                (number, job_id, owner, requirements == "[]")
                for number, job_id, owner, requirements in result
            ]

    async def with_status(self, status: JobStatus) -> list[JobRow]:
        async with self._reader.connect() as conn:
            result = await conn.execute(
                select(db.jobs).where(db.jobs.c.status == status.value).order_by(db.jobs.c.number)
            )
            return [JobRow.from_mapping(row) for row in result.mappings()]

    async def count_by_status(self) -> dict[str, int]:
        async with self._reader.connect() as conn:
            result = await conn.execute(
                select(db.jobs.c.status, func.count()).group_by(db.jobs.c.status)
            )
            return {status: count for status, count in result}

    async def events(self, job_id: str) -> list[tuple[str, float, str | None]]:
        async with self._reader.connect() as conn:
            result = await conn.execute(
                select(db.job_events.c.status, db.job_events.c.at, db.job_events.c.reason)
                .where(db.job_events.c.job_id == job_id)
                .order_by(db.job_events.c.id)
            )
            return [(status, at, reason) for status, at, reason in result]

    # ------------------------------------------------------------------ lease rows

    async def leases(self) -> list[LeaseRow]:
        return await read_lease_rows(self._reader)

    async def renew_leases(self, expiries: dict[str, float]) -> None:
        """Write back lease expiries renewed in memory (one statement for all)."""
        await db.execute_many(
            self._engine,
            "UPDATE leases SET expires_at = ? WHERE job_id = ?",
            [(expires_at, job_id) for job_id, expires_at in expiries.items()],
        )


async def read_lease_rows(reader: AsyncEngine, holder: str | None = None) -> list[LeaseRow]:
    """The lease rows (of ``holder`` only, if given)."""
    query = select(db.leases)
    if holder is not None:
        query = query.where(db.leases.c.holder == holder)
    async with reader.connect() as conn:
        return [
            LeaseRow(
                row.job_id, row.lease_id, row.holder, row.first_seq, row.expires_at, row.granted_at
            )
            for row in await conn.execute(query)
        ]
