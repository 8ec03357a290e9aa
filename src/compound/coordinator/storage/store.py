"""Durable state: jobs with their status history, their leases, and their log records.

Status changes go only through the verbs named for their intent (``claim_queued``, ``requeue``,
``finish``, ``fail``, ``cancel_queued``). Each checks the legal moves of
``compound.protocol.status``, records the change in ``job_events`` and creates or deletes
the job's lease, all in one transaction: a job is RUNNING exactly while it has a lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from compound.coordinator.scheduling.job_queue import JobQueue, QueuedJob
from compound.coordinator.scheduling.leases import Lease
from compound.coordinator.scheduling.reports import Violation
from compound.coordinator.storage import db, job_writes
from compound.coordinator.storage.contributors import ContributorStore
from compound.coordinator.storage.log_tail import LogPage, LogTails, record_size
from compound.coordinator.storage.page_cache import PageCache, PageKey
from compound.coordinator.storage.writer import GroupWriter
from compound.protocol import (
    IllegalTransition,
    InputsRef,
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
    requirements: list[str] = field(default_factory=list)
    inputs: InputsRef | None = None


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
    attempts: int
    cancel_requested: bool
    last_seq: int
    log_bytes: int
    owner: str | None
    requirements: list[str]
    inputs_sha256: str | None = None
    inputs_size: int | None = None
    files_removed_at: float | None = None

    # Why the stored row cannot be run (unparsable args or env), if it cannot.
    damaged: str | None = None

    @classmethod
    def from_mapping(cls, row: Any) -> JobRow:
        values = {name: row[name] for name in cls.__dataclass_fields__ if name != "damaged"}
        values["status"] = JobStatus(values["status"])
        values["cancel_requested"] = bool(values["cancel_requested"])
        try:
            values["args"] = json.loads(values["args"])
            values["env"] = json.loads(values["env"])
            values["requirements"] = json.loads(values["requirements"])
        except ValueError:
            values["args"], values["env"], values["requirements"] = [], {}, []
            values["damaged"] = "the stored job cannot be read (its arguments or environment)"
        return cls(**values)

    @property
    def inputs(self) -> InputsRef | None:
        if self.inputs_sha256 is None or self.inputs_size is None:
            return None
        return InputsRef(sha256=self.inputs_sha256, size=self.inputs_size)

    def files_expire_at(self, retention_s: float | None) -> float | None:
        if retention_s is None or self.finished_at is None or self.files_removed_at is not None:
            return None
        return self.finished_at + retention_s

    def view(self, queue_position: int | None = None, retention_s: float | None = None) -> JobView:
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
            requirements=self.requirements,
            inputs=self.inputs,
            files_expire_at=self.files_expire_at(retention_s),
            files_removed_at=self.files_removed_at,
        )


log = logging.getLogger("compound.coordinator")

# How stale the database size a quota compares with may be.
DATABASE_SIZE_MAX_AGE_S = 1.0
_records: TypeAdapter[list[LogRecord]] = TypeAdapter(list[LogRecord])


# The columns of a JobRow, in the order ``get_job`` selects them.
_JOB_COLUMNS = tuple(name for name in JobRow.__dataclass_fields__ if name != "damaged")
_SELECT_JOB_ROW = f"SELECT {', '.join(_JOB_COLUMNS)} FROM jobs WHERE id = ?"


class Store:
    def __init__(
        self,
        engine: AsyncEngine,
        reader: AsyncEngine | None = None,
        retention_s: float | None = None,
        writer: GroupWriter | None = None,
    ) -> None:
        self._engine = engine
        # Create, claim and finish: group-committed on a connection of their own.
        database = engine.url.database
        assert writer is not None or database, "a store needs a database file"
        self._database_path = Path(str(database))
        self._writer = writer or GroupWriter(self._database_path)
        # The database's size on disk and when it was read (time.monotonic()).
        self._size: tuple[int, float] = (0, -DATABASE_SIZE_MAX_AGE_S)
        # The jobs waiting, oldest first, mirrored from their rows (see job_queue.py).
        self.queue = JobQueue()
        # Shown in job views: when a finished job's files go.
        self._retention_s = retention_s
        # Reads that need no transaction of their own go to the reader pool.
        self._reader = reader or engine
        self._tails = LogTails()
        self._pages = PageCache()
        # Page reads in flight: followers that start together ask for the same pages at the
        # same moment, before any is cached; they share one read instead of each doing it.
        self._reading: dict[PageKey, asyncio.Task[LogPage]] = {}
        self.contributors = ContributorStore(engine, self._reader)

    def database_bytes(self) -> int:
        """The database's size on disk, its write-ahead log included; read at most once
        per ``DATABASE_SIZE_MAX_AGE_S`` (two stat calls per submission were 5 % of the
        coordinator's time at a few hundred jobs a second)."""
        size, read_at = self._size
        now = time.monotonic()
        if now - read_at < DATABASE_SIZE_MAX_AGE_S:
            return size
        size = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(FileNotFoundError):
                size += os.stat(f"{self._database_path}{suffix}").st_size
        self._size = (size, now)
        return size

    async def close(self) -> None:
        await self._writer.close()
        await self._engine.dispose()
        if self._reader is not self._engine:
            await self._reader.dispose()

    # ------------------------------------------------------------------ jobs

    async def create_job(self, job_id: str, new: NewJob, owner: str | None = None) -> JobRow:
        """Queue a new job; returns once its row is committed (durable)."""
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
        row = await self._writer.run(partial(job_writes.insert_job, job=values))
        job = JobRow.from_mapping(row)
        self._queued(job)
        return job

    def _queued(self, job: JobRow) -> None:
        self.queue.add(QueuedJob(job.number, job.id, job.owner, plain=not job.requirements))

    async def load_queue(self) -> None:
        """Mirror the queued rows in memory (at start, and when the sweep finds a gap)."""
        async with self._reader.connect() as conn:
            result = await conn.execute(
                select(db.jobs.c.number, db.jobs.c.id, db.jobs.c.owner, db.jobs.c.requirements)
                .where(db.jobs.c.status == JobStatus.QUEUED.value)
                .order_by(db.jobs.c.number)
            )
            self.queue.replace_all(
                [
                    QueuedJob(number, job_id, owner, plain=requirements == "[]")
                    for number, job_id, owner, requirements in result
                ]
            )

    async def get_job(self, job_id: str) -> JobRow | None:
        # The driver's own query, in one trip to its thread: followers read a job row at
        # every change of their job, and SQLAlchemy's statement and result handling cost
        # more than the read itself (~400 µs of CPU against ~150 µs).
        async with self._reader.connect() as conn:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            rows = await driver.execute_fetchall(_SELECT_JOB_ROW, (job_id,))
        for row in rows:
            return JobRow.from_mapping(dict(zip(_JOB_COLUMNS, row, strict=True)))
        return None

    async def view_job(self, job: JobRow) -> JobView:
        position = await self.queue_position(job) if job.status is JobStatus.QUEUED else None
        return job.view(position, self._retention_s)

    async def queue_position(self, job: JobRow) -> int:
        return self.queue.position(job.number)

    async def list_jobs(self, limit: int, owner: str | None = None) -> list[JobView]:
        """The newest jobs (of ``owner`` only, if given)."""
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
        return [row.view(positions.get(row.id), self._retention_s) for row in rows]

    async def jobs_with_status(self, status: JobStatus) -> list[JobRow]:
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

    def count_queued(self, owner: str | None = None) -> int:
        """Queued jobs in all, or of ``owner``: counted in memory, no query."""
        if owner is not None:
            return self.queue.count(owner, of_owner=True)
        return self.queue.count()

    async def job_events(self, job_id: str) -> list[tuple[str, float, str | None]]:
        async with self._reader.connect() as conn:
            result = await conn.execute(
                select(db.job_events.c.status, db.job_events.c.at, db.job_events.c.reason)
                .where(db.job_events.c.job_id == job_id)
                .order_by(db.job_events.c.id)
            )
            return [(status, at, reason) for status, at, reason in result]

    # ------------------------------------------------------------------ leases

    async def leases(self) -> list[Lease]:
        async with self._reader.connect() as conn:
            result = await conn.execute(select(db.leases))
            return [
                Lease(
                    job_id=row.job_id,
                    lease_id=row.lease_id,
                    holder=row.holder,
                    first_seq=row.first_seq,
                    expires_at=row.expires_at,
                )
                for row in result
            ]

    def take_queued(self, plain_only: bool) -> QueuedJob | None:
        """Take the oldest queued job (without requirements if ``plain_only``) out of the
        in-memory queue, to be claimed with ``claim_queued``. Synchronous, so concurrent
        claimers take different jobs, in FIFO order."""
        return self.queue.take(plain_only)

    async def claim_queued(
        self, entry: QueuedJob, holder: str, lease_id: str, expires_at: float
    ) -> tuple[JobRow, Lease] | None:
        """Claim a job taken with ``take_queued``; None if its row is no longer queued
        (cancelled meanwhile) or cannot be run (then it is failed, so it never blocks the
        queue). If the write fails, the job goes back to the queue."""
        try:
            claimed = await self._writer.run(
                partial(
                    job_writes.claim_job,
                    job_id=entry.id,
                    holder=holder,
                    lease_id=lease_id,
                    expires_at=expires_at,
                )
            )
        except BaseException:
            self.queue.add(entry)
            raise
        if isinstance(claimed, str):
            log.error("job %s failed: %s", entry.id, claimed)
            return None
        if claimed is None:
            return None
        row, lease = claimed
        return JobRow.from_mapping(row), lease

    async def renew(self, expiries: dict[str, float]) -> None:
        """Write back lease expiries renewed in memory (one statement for all)."""
        if not expiries:
            return
        async with self._engine.begin() as conn:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            await driver.executemany(
                "UPDATE leases SET expires_at = ? WHERE job_id = ?",
                [(expires_at, job_id) for job_id, expires_at in expiries.items()],
            )

    async def requeue(
        self, job_id: str, reason: str, *, note: str | None = None, count_attempt: bool = True
    ) -> JobRow | None:
        """Put a running job back in the queue, its lease gone. None if it is not running."""
        async with self._engine.begin() as conn:
            job = await self._get(conn, job_id)
            if job.status is not JobStatus.RUNNING:
                return None
            if note is not None:
                await self._insert_note(conn, job_id, note)
            attempts = job.attempts if count_attempt else max(0, job.attempts - 1)
            requeued = await self._move(
                conn, job, JobStatus.QUEUED, reason, contributor_id=None, attempts=attempts
            )
        self._queued(requeued)
        return requeued

    async def finish(
        self,
        job_id: str,
        lease_id: str,
        status: JobStatus,
        *,
        exit_code: int | None,
        error: str | None,
        last_seq: int | None,
    ) -> JobRow | Violation | None:
        """End a running job as its lease holder reported; None if that lease is not current,
        a Violation if records it announced (up to ``last_seq``) never arrived."""
        ended = await self._writer.run(
            partial(
                job_writes.finish_job,
                job_id=job_id,
                lease_id=lease_id,
                status=status,
                exit_code=exit_code,
                error=error,
                last_seq=last_seq,
            )
        )
        if ended is None or isinstance(ended, Violation):
            return ended
        self._tails.forget(job_id)
        return JobRow.from_mapping(ended)

    async def fail(
        self, job_id: str, reason: str, *, error: str, note: str | None = None
    ) -> JobRow | None:
        """Fail a queued or running job with ``error``; None if it already ended."""
        async with self._engine.begin() as conn:
            job = await self._get(conn, job_id)
            if job.status.is_terminal:
                return None
            if note is not None:
                await self._insert_note(conn, job_id, note)
            failed = await self._move(conn, job, JobStatus.FAILED, reason, error=error)
        self.queue.discard(job_id)
        return failed

    async def cancel(self, job_id: str, reason: str, error: str | None = None) -> JobRow | None:
        """Cancel a queued job, or a running one at once (its contributor is gone)."""
        async with self._engine.begin() as conn:
            job = await self._get(conn, job_id)
            if job.status.is_terminal:
                return None
            cancelled = await self._move(conn, job, JobStatus.CANCELLED, reason, error=error)
        self.queue.discard(job_id)
        return cancelled

    async def request_cancel(self, job_id: str) -> JobRow:
        async with self._engine.begin() as conn:
            await conn.execute(
                update(db.jobs).where(db.jobs.c.id == job_id).values(cancel_requested=True)
            )
            return await self._get(conn, job_id)

    async def _move(
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
        if job.status is JobStatus.RUNNING:
            await conn.execute(delete(db.leases).where(db.leases.c.job_id == job.id))
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

    # ------------------------------------------------------------------ logs

    def forget_logs(self, job_ids: Sequence[str]) -> None:
        """Drop what is cached of these jobs' logs: retention removed them."""
        for job_id in job_ids:
            self._tails.forget(job_id)
        self._pages.clear()

    async def stored_last_seq(self, job_id: str) -> int:
        async with self._reader.connect() as conn:
            return await self._last_seq(conn, job_id)

    async def append_logs(
        self, job_id: str, lease_id: str, records: Sequence[LogRecord], max_log_bytes: int
    ) -> int | Violation | None:
        """Store a batch reported under ``lease_id``; returns the job's last_seq to ack.

        The batch is checked (``reports.check_batch``) against what is stored, in the
        transaction that stores it: a Violation stores nothing; None means the lease is not
        current. Past ``max_log_bytes`` for the job, records are accounted for but not
        stored, and one SYSTEM note takes the place of the first record dropped.
        Group-committed with the jobs' other writes (``writer.py``).
        """
        appended = await self._writer.run(
            partial(
                job_writes.append_records,
                job_id=job_id,
                lease_id=lease_id,
                records=records,
                max_log_bytes=max_log_bytes,
            )
        )
        if appended is None or isinstance(appended, Violation):
            return appended
        if appended.kept:
            self._tails.stored(job_id, appended.kept, appended.kept_sizes)
        return appended.last_seq

    async def _lease_first_seq(
        self, conn: AsyncConnection, job_id: str, lease_id: str
    ) -> int | None:
        first_seq = await conn.scalar(
            select(db.leases.c.first_seq)
            .where(db.leases.c.job_id == job_id)
            .where(db.leases.c.lease_id == lease_id)
        )
        return None if first_seq is None else int(first_seq)

    async def append_note(self, job_id: str, text: str) -> int:
        """Add a SYSTEM record after the job's last one (a note from Compound itself)."""
        async with self._engine.begin() as conn:
            note, size = await self._insert_note(conn, job_id, text)
        self._tails.stored(job_id, [note], [size])
        return note.seq

    async def _insert_note(
        self, conn: AsyncConnection, job_id: str, text: str
    ) -> tuple[LogRecord, int]:
        # The tail no longer covers the job's newest record: answer from the database.
        self._tails.forget(job_id)
        # Numbered inside the transaction that stores it: no other record can take its seq.
        seq = await self._last_seq(conn, job_id) + 1
        note = LogRecord(seq=seq, stream=Stream.SYSTEM, data=text + "\n")
        size = record_size(note)
        await self._insert_records(conn, job_id, [note], [size])
        await conn.execute(update(db.jobs).where(db.jobs.c.id == job_id).values(last_seq=seq))
        return note, size

    async def _insert_records(
        self,
        conn: AsyncConnection,
        job_id: str,
        records: Sequence[LogRecord],
        sizes: Sequence[int],
    ) -> None:
        if not records:
            return
        # The driver's own executemany, inside this transaction: every log batch goes
        # through here, and SQLAlchemy's per-row work would triple its cost.
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        await driver.executemany(
            job_writes.INSERT_RECORD,
            [
                (job_id, r.seq, r.stream.value, size, r.data)
                for r, size in zip(records, sizes, strict=True)
            ],
        )

    async def _last_seq(self, conn: AsyncConnection, job_id: str) -> int:
        last_seq = await conn.scalar(select(db.jobs.c.last_seq).where(db.jobs.c.id == job_id))
        return int(last_seq if last_seq is not None else -1)

    async def read_logs(self, job_id: str, after: int, limit: int, max_bytes: int) -> LogPage:
        """Records with seq > ``after``: at most ``limit`` of them and about ``max_bytes``
        of data (always at least one record, if there is one)."""
        cached = self._tails.after(job_id, after, limit, max_bytes)
        if cached is not None:
            return cached
        key = (job_id, after, limit, max_bytes)
        shared = self._pages.get(key)
        if shared is not None:
            return shared
        reading = self._reading.get(key)
        if reading is None:
            # A task of its own: a follower that leaves mid-read does not cancel the others'.
            reading = asyncio.ensure_future(self._read_page(job_id, after, limit, max_bytes))
            self._reading[key] = reading
            reading.add_done_callback(lambda _: self._reading.pop(key, None))
        return await asyncio.shield(reading)

    async def _read_page(self, job_id: str, after: int, limit: int, max_bytes: int) -> LogPage:
        key = (job_id, after, limit, max_bytes)
        async with self._reader.connect() as conn:
            # Sizes first (cheap: no overflow pages read), then the data that fits.
            sizes = await conn.execute(
                select(db.log_records.c.seq, db.log_records.c.size)
                .where(db.log_records.c.job_id == job_id)
                .where(db.log_records.c.seq > after)
                .order_by(db.log_records.c.seq)
                .limit(limit + 1)
            )
            rows_sizes = [(row[0], row[1]) for row in sizes]
            last, more = _page_end(rows_sizes, limit, max_bytes)
            if last is None:
                return LogPage([], more=False)
            result = await conn.execute(
                select(db.log_records.c.seq, db.log_records.c.stream, db.log_records.c.data)
                .where(db.log_records.c.job_id == job_id)
                .where(db.log_records.c.seq > after)
                .where(db.log_records.c.seq <= last)
                .order_by(db.log_records.c.seq)
            )
            rows = [{"seq": seq, "stream": stream, "data": data} for seq, stream, data in result]
        # Validated in one call in pydantic-core: several times faster than a model per row.
        page = LogPage(_records.validate_python(rows, strict=False), more=more)
        self._pages.put(key, page, sum(size for seq, size in rows_sizes if seq <= last))
        return page


def _page_end(sizes: list[tuple[int, int]], limit: int, max_bytes: int) -> tuple[int | None, bool]:
    """The last seq of a page over (seq, size) rows, and whether more rows follow it."""
    budget = max_bytes
    last: int | None = None
    for index, (seq, size) in enumerate(sizes[:limit]):
        if index > 0 and size > budget:
            return last, True
        budget -= size
        last = seq
    return last, len(sizes) > limit
