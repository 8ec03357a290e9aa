"""Durable state: jobs with their status history, and their log records.

Every status change goes through :meth:`Store.transition`, which enforces the legal moves of
``compound.protocol.status`` and records the change in ``job_events`` in the same transaction.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from compound.coordinator import db
from compound.coordinator.contributor_store import ContributorStore
from compound.coordinator.log_tail import LogTails
from compound.protocol import (
    IllegalTransition,
    JobStatus,
    JobView,
    LogRecord,
    Stream,
    check_transition,
)


@dataclass(frozen=True)
class NewJob:
    script: str
    args: list[str]
    env: dict[str, str]
    timeout_s: float | None = None
    name: str | None = None


@dataclass(frozen=True)
class JobRow:
    number: int
    id: str
    status: JobStatus
    script: str
    args: list[str]
    env: dict[str, str]
    timeout_s: float | None
    name: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    exit_code: int | None
    error: str | None
    contributor_id: str | None
    lease_id: str | None
    attempts: int
    cancel_requested: bool
    last_seq: int

    @classmethod
    def from_mapping(cls, row: Any) -> JobRow:
        values = dict(row)
        values["status"] = JobStatus(values["status"])
        values["args"] = json.loads(values["args"])
        values["env"] = json.loads(values["env"])
        values["cancel_requested"] = bool(values["cancel_requested"])
        return cls(**values)

    def view(self, queue_position: int | None = None) -> JobView:
        return JobView(
            id=self.id,
            status=self.status,
            exit_code=self.exit_code,
            error=self.error,
            created_at=self.created_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            contributor_id=self.contributor_id,
            attempts=self.attempts,
            queue_position=queue_position,
            args=self.args,
            timeout_s=self.timeout_s,
            name=self.name,
        )


_records: TypeAdapter[list[LogRecord]] = TypeAdapter(list[LogRecord])


class Store:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._tails = LogTails()
        self.contributors = ContributorStore(engine)

    async def close(self) -> None:
        await self._engine.dispose()

    # ------------------------------------------------------------------ jobs

    async def create_job(self, job_id: str, new: NewJob) -> JobRow:
        now = time.time()
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(db.jobs).values(
                    id=job_id,
                    status=JobStatus.QUEUED.value,
                    script=new.script,
                    args=json.dumps(new.args),
                    env=json.dumps(new.env),
                    timeout_s=new.timeout_s,
                    name=new.name,
                    created_at=now,
                    attempts=0,
                    cancel_requested=False,
                    last_seq=-1,
                )
            )
            await self._record_event(conn, job_id, JobStatus.QUEUED, "submitted", now)
            return await self._get(conn, job_id)

    async def get_job(self, job_id: str) -> JobRow | None:
        async with self._engine.connect() as conn:
            result = await conn.execute(select(db.jobs).where(db.jobs.c.id == job_id))
            row = result.mappings().first()
        return JobRow.from_mapping(row) if row else None

    async def view_job(self, job: JobRow) -> JobView:
        return job.view(await self.queue_position(job) if job.status is JobStatus.QUEUED else None)

    async def queue_position(self, job: JobRow) -> int:
        async with self._engine.connect() as conn:
            ahead = await conn.scalar(
                select(func.count())
                .select_from(db.jobs)
                .where(db.jobs.c.status == JobStatus.QUEUED.value)
                .where(db.jobs.c.number < job.number)
            )
        return int(ahead or 0) + 1

    async def list_jobs(self, limit: int) -> list[JobView]:
        async with self._engine.connect() as conn:
            result = await conn.execute(
                select(db.jobs).order_by(db.jobs.c.number.desc()).limit(limit)
            )
            rows = [JobRow.from_mapping(row) for row in result.mappings()]
            queued = await conn.execute(
                select(db.jobs.c.id)
                .where(db.jobs.c.status == JobStatus.QUEUED.value)
                .order_by(db.jobs.c.number)
            )
            positions = {job_id: index + 1 for index, job_id in enumerate(queued.scalars())}
        return [row.view(positions.get(row.id)) for row in rows]

    async def jobs_with_status(self, status: JobStatus) -> list[JobRow]:
        async with self._engine.connect() as conn:
            result = await conn.execute(
                select(db.jobs).where(db.jobs.c.status == status.value).order_by(db.jobs.c.number)
            )
            return [JobRow.from_mapping(row) for row in result.mappings()]

    async def count_by_status(self) -> dict[str, int]:
        async with self._engine.connect() as conn:
            result = await conn.execute(
                select(db.jobs.c.status, func.count()).group_by(db.jobs.c.status)
            )
            return {status: count for status, count in result.tuples()}

    async def claim_next_queued(self, contributor_id: str, lease_id: str) -> JobRow | None:
        """Move the oldest queued job to RUNNING under a new lease held by ``contributor_id``."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                select(db.jobs)
                .where(db.jobs.c.status == JobStatus.QUEUED.value)
                .order_by(db.jobs.c.number)
                .limit(1)
            )
            row = result.mappings().first()
            if row is None:
                return None
            job = JobRow.from_mapping(row)
            return await self._transition(
                conn,
                job,
                JobStatus.RUNNING,
                f"assigned to {contributor_id}",
                contributor_id=contributor_id,
                lease_id=lease_id,
                attempts=job.attempts + 1,
                started_at=job.started_at or time.time(),
            )

    async def transition(
        self,
        job_id: str,
        target: JobStatus,
        reason: str | None = None,
        *,
        expect_lease: str | None = None,
        **fields: Any,
    ) -> JobRow:
        """Move a job to ``target``; raises IllegalTransition, or KeyError if it is unknown.

        With ``expect_lease`` the move only happens while that lease is still the job's.
        """
        async with self._engine.begin() as conn:
            job = await self._get(conn, job_id)
            if expect_lease is not None and job.lease_id != expect_lease:
                raise IllegalTransition(job.status, target)
            return await self._transition(conn, job, target, reason, **fields)

    async def request_cancel(self, job_id: str) -> JobRow:
        async with self._engine.begin() as conn:
            await conn.execute(
                update(db.jobs).where(db.jobs.c.id == job_id).values(cancel_requested=True)
            )
            return await self._get(conn, job_id)

    async def _transition(
        self,
        conn: AsyncConnection,
        job: JobRow,
        target: JobStatus,
        reason: str | None,
        **fields: Any,
    ) -> JobRow:
        check_transition(job.status, target)
        now = time.time()
        if target.is_terminal:
            fields.setdefault("finished_at", now)
        # The status in the WHERE clause makes the move atomic against a concurrent one.
        result = await conn.execute(
            update(db.jobs)
            .where(db.jobs.c.id == job.id)
            .where(db.jobs.c.status == job.status.value)
            .values(status=target.value, **fields)
        )
        if result.rowcount != 1:
            raise IllegalTransition(job.status, target)
        await self._record_event(conn, job.id, target, reason, now)
        if target.is_terminal:
            self._tails.forget(job.id)
        return await self._get(conn, job.id)

    async def _get(self, conn: AsyncConnection, job_id: str) -> JobRow:
        result = await conn.execute(select(db.jobs).where(db.jobs.c.id == job_id))
        row = result.mappings().first()
        if row is None:
            raise KeyError(job_id)
        return JobRow.from_mapping(row)

    async def _record_event(
        self, conn: AsyncConnection, job_id: str, status: JobStatus, reason: str | None, at: float
    ) -> None:
        await conn.execute(
            insert(db.job_events).values(job_id=job_id, status=status.value, at=at, reason=reason)
        )

    async def job_events(self, job_id: str) -> list[tuple[str, float, str | None]]:
        async with self._engine.connect() as conn:
            result = await conn.execute(
                select(db.job_events.c.status, db.job_events.c.at, db.job_events.c.reason)
                .where(db.job_events.c.job_id == job_id)
                .order_by(db.job_events.c.id)
            )
            return [(status, at, reason) for status, at, reason in result.tuples()]

    # ------------------------------------------------------------------ logs

    async def append_logs(self, job_id: str, records: Sequence[LogRecord]) -> int:
        """Store records (a record already stored is ignored); returns the job's last_seq."""
        async with self._engine.begin() as conn:
            before = await self._last_seq(conn, job_id)
            last_seq = await self._insert_logs(conn, job_id, records)
        self._tails.stored(job_id, before, records)
        return last_seq

    async def append_note(self, job_id: str, text: str) -> int:
        """Add a SYSTEM record after the job's last one (a note from Compound itself)."""
        async with self._engine.begin() as conn:
            # Numbered inside the transaction that stores it: no other record can take its seq.
            before = await self._last_seq(conn, job_id)
            note = LogRecord(seq=before + 1, stream=Stream.SYSTEM, data=text + "\n")
            last_seq = await self._insert_logs(conn, job_id, [note])
        self._tails.stored(job_id, before, [note])
        return last_seq

    async def _insert_logs(
        self, conn: AsyncConnection, job_id: str, records: Sequence[LogRecord]
    ) -> int:
        if records:
            # The driver's own executemany, inside this transaction: every log batch goes
            # through here, and SQLAlchemy's per-row work would triple its cost.
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            await driver.executemany(
                "INSERT OR IGNORE INTO log_records (job_id, seq, stream, data) VALUES (?, ?, ?, ?)",
                [(job_id, r.seq, r.stream.value, r.data) for r in records],
            )
            highest = max(record.seq for record in records)
            await conn.execute(
                update(db.jobs)
                .where(db.jobs.c.id == job_id)
                .where(db.jobs.c.last_seq < highest)
                .values(last_seq=highest)
            )
        return await self._last_seq(conn, job_id)

    async def _last_seq(self, conn: AsyncConnection, job_id: str) -> int:
        last_seq = await conn.scalar(select(db.jobs.c.last_seq).where(db.jobs.c.id == job_id))
        return int(last_seq if last_seq is not None else -1)

    async def read_logs(self, job_id: str, after: int, limit: int) -> list[LogRecord]:
        cached = self._tails.after(job_id, after, limit)
        if cached is not None:
            return cached
        async with self._engine.connect() as conn:
            result = await conn.execute(
                select(db.log_records.c.seq, db.log_records.c.stream, db.log_records.c.data)
                .where(db.log_records.c.job_id == job_id)
                .where(db.log_records.c.seq > after)
                .order_by(db.log_records.c.seq)
                .limit(limit)
            )
            rows = [{"seq": seq, "stream": stream, "data": data} for seq, stream, data in result]
        # Validated in one call in pydantic-core: several times faster than a model per row.
        return _records.validate_python(rows)
