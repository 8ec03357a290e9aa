"""Jobs' log records: stored in batches under a lease, read back a page at a time.

Writes go through the group writer (``job_writes.append_records``: checked against the lease
and the batch rules in the transaction that stores them). Reads are answered, cheapest
first, from the newest records kept in memory (``log_tail``), from pages recently read
(``page_cache``), then from the database, one read shared by the followers that ask at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import partial

from pydantic import TypeAdapter
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from compound.coordinator.storage import db, job_writes, usage
from compound.coordinator.storage.log_tail import LogPage, LogTails
from compound.coordinator.storage.observer import NoObserver, StoreObserver
from compound.coordinator.storage.page_cache import PageCache, PageKey
from compound.coordinator.storage.reports import Violation
from compound.coordinator.storage.writer import GroupWriter
from compound.protocol import LogRecord

_records: TypeAdapter[list[LogRecord]] = TypeAdapter(list[LogRecord])


class LogStore:
    def __init__(
        self,
        reader: AsyncEngine,
        writer: GroupWriter,
        limits: usage.StoreLimits | None = None,
        observer: StoreObserver | None = None,
        tails: LogTails | None = None,
    ) -> None:
        self._observer = observer or NoObserver()
        self._reader = reader
        self._writer = writer
        self._limits = limits
        # The newest records in memory (``NoTails`` when other coordinators store records too).
        self._tails = LogTails() if tails is None else tails
        self._pages = PageCache()
        # Page reads in flight: followers that start together ask for the same pages at the
        # same moment, before any is cached; they share one read instead of each doing it.
        self._reading: dict[PageKey, asyncio.Task[LogPage]] = {}

    # ------------------------------------------------------------------ writes

    async def append(
        self,
        job_id: str,
        lease_id: str,
        holder: str,
        records: Sequence[LogRecord],
        max_log_bytes: int,
    ) -> int | Violation | None:
        """Store a batch ``holder`` reported under ``lease_id``; the job's last_seq to ack.

        A Violation stores nothing; None means the lease is not current. Past
        ``max_log_bytes`` for the job, or past its owner's database quota, records are
        accounted for but not stored, and one SYSTEM note takes the place of the first
        record dropped.
        """
        appended = await self._writer.run(
            partial(
                job_writes.append_records,
                job_id=job_id,
                lease_id=lease_id,
                holder=holder,
                records=records,
                max_log_bytes=max_log_bytes,
                limits=self._limits,
            )
        )
        if appended is None or isinstance(appended, Violation):
            return appended
        if appended.kept:
            self._tails.stored(job_id, appended.kept, appended.kept_sizes)
            self._observer.records_stored(len(appended.kept), sum(appended.kept_sizes))
        return appended.last_seq

    def noted(self, job_id: str, note: job_writes.Noted) -> None:
        """A note was committed after the job's last record (a move's, or one of its own)."""
        self._tails.stored(job_id, [note.record], [note.size])

    def ended(self, job_id: str) -> None:
        """The job ended: no record follows; its tail's memory goes to running jobs."""
        self._tails.forget(job_id)

    def forget(self, job_ids: Sequence[str]) -> None:
        """Drop what is cached of these jobs' logs: retention removed them."""
        for job_id in job_ids:
            self._tails.forget(job_id)
        self._pages.clear()

    # ------------------------------------------------------------------ reads

    async def last_seq(self, job_id: str) -> int:
        """The highest sequence number accounted for (-1 before any record)."""
        async with self._reader.connect() as conn:
            last_seq = await conn.scalar(select(db.jobs.c.last_seq).where(db.jobs.c.id == job_id))
        return int(last_seq if last_seq is not None else -1)

    async def read(self, job_id: str, after: int, limit: int, max_bytes: int) -> LogPage:
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
                select(
                    db.log_records.c.seq,
                    db.log_records.c.stream,
                    db.log_records.c.data,
                    db.log_records.c.attempt,
                )
                .where(db.log_records.c.job_id == job_id)
                .where(db.log_records.c.seq > after)
                .where(db.log_records.c.seq <= last)
                .order_by(db.log_records.c.seq)
            )
            rows = [
                {"seq": seq, "stream": stream, "data": data, "attempt": attempt}
                for seq, stream, data, attempt in result
            ]
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
