"""The newest log records of each job, kept in memory for followers.

Live followers almost always ask for "everything after the record I just got": that is the
tail of what was just stored. Serving it from memory saves a database read and a validation
per follower and batch. The tail holds only records already committed, contiguous by
sequence number, so an answer from it is exactly what the database would give; anything it
does not cover (older records, a job it has not seen) is answered with None: ask the DB.
"""

from __future__ import annotations

from collections.abc import Sequence

from compound.protocol import LogRecord

DEFAULT_RECORDS_PER_JOB = 20_000


class LogTails:
    def __init__(self, records_per_job: int = DEFAULT_RECORDS_PER_JOB) -> None:
        self._records_per_job = records_per_job
        self._tails: dict[str, list[LogRecord]] = {}

    def stored(self, job_id: str, last_seq_before: int, records: Sequence[LogRecord]) -> None:
        """``records`` were committed; those past ``last_seq_before`` are new."""
        fresh = [record for record in records if record.seq > last_seq_before]
        if not fresh:
            return
        tail = self._tails.get(job_id)
        if tail is None or tail[-1].seq != fresh[0].seq - 1:
            # Not contiguous with what we hold (first batch, or after a restart): start over.
            tail = self._tails[job_id] = []
        tail.extend(fresh)
        if len(tail) > 2 * self._records_per_job:  # trim rarely: amortized O(1) per record
            del tail[: len(tail) - self._records_per_job]

    def after(self, job_id: str, after: int, limit: int) -> list[LogRecord] | None:
        """Records with seq > ``after`` if the tail covers them; None if it cannot say."""
        tail = self._tails.get(job_id)
        if not tail or after + 1 < tail[0].seq:
            return None
        start = after + 1 - tail[0].seq
        return tail[start : start + limit]

    def forget(self, job_id: str) -> None:
        self._tails.pop(job_id, None)
