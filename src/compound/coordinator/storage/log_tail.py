"""The newest log records of running jobs, kept in memory for followers.

Live followers almost always ask for "everything after the record I just got": that is the
tail of what was just stored. Serving it from memory saves a database read per follower and
batch. A tail holds only committed records, contiguous by sequence number, so an answer from
it is exactly what the database would give; whatever it does not cover (older records, a
job it has not seen) is answered with None: ask the database.

Memory is bounded twice: bytes per job, and bytes over all jobs (the least recently written
job's tail is dropped first).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from compound.protocol import FollowRecords, LogRecord, serialize

DEFAULT_BYTES_PER_JOB = 4 * 1024 * 1024
DEFAULT_BYTES_TOTAL = 64 * 1024 * 1024


@dataclass
class LogPage:
    records: list[LogRecord]
    # More records follow the page (it was cut by count or size).
    more: bool
    # The page as a follow message's JSON, encoded once however many followers read it.
    text: str | None = field(default=None, compare=False, repr=False)

    def as_text(self) -> str:
        if self.text is None:
            self.text = serialize(FollowRecords(records=self.records))
        return self.text


def record_size(record: LogRecord) -> int:
    return len(record.data.encode("utf-8"))


@dataclass
class _Tail:
    records: list[LogRecord] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    bytes: int = 0

    def append(self, records: Sequence[LogRecord], sizes: Sequence[int]) -> None:
        self.records.extend(records)
        self.sizes.extend(sizes)
        self.bytes += sum(sizes)

    def trim_to(self, limit: int) -> int:
        """Drop the oldest records until at most ``limit`` bytes remain; returns bytes freed."""
        drop = 0
        freed = 0
        while drop < len(self.sizes) - 1 and self.bytes - freed > limit:
            freed += self.sizes[drop]
            drop += 1
        if drop:
            del self.records[:drop]
            del self.sizes[:drop]
            self.bytes -= freed
        return freed


class LogTails:
    def __init__(
        self, bytes_per_job: int = DEFAULT_BYTES_PER_JOB, bytes_total: int = DEFAULT_BYTES_TOTAL
    ) -> None:
        self._bytes_per_job = bytes_per_job
        self._bytes_total = bytes_total
        self._bytes = 0
        self._tails: OrderedDict[str, _Tail] = OrderedDict()

    def stored(self, job_id: str, records: Sequence[LogRecord], sizes: Sequence[int]) -> None:
        """``records`` (in order, contiguous, all new) were committed for ``job_id``."""
        if not records:
            return
        tail = self._tails.get(job_id)
        if tail is None or not tail.records or tail.records[-1].seq != records[0].seq - 1:
            # Not contiguous with what we hold (first batch, a restart, a quota gap).
            self.forget(job_id)
            tail = self._tails[job_id] = _Tail()
        self._tails.move_to_end(job_id)
        tail.append(records, sizes)
        self._bytes += sum(sizes)
        # Trim rarely (at twice the limit): amortized O(1) per record.
        if tail.bytes > 2 * self._bytes_per_job:
            self._bytes -= tail.trim_to(self._bytes_per_job)
        while self._bytes > self._bytes_total and len(self._tails) > 1:
            oldest = next(iter(self._tails))
            self.forget(oldest)

    def after(self, job_id: str, after: int, limit: int, max_bytes: int) -> LogPage | None:
        """Records with seq > ``after`` if the tail covers them; None if it cannot say."""
        tail = self._tails.get(job_id)
        if tail is None or not tail.records or after + 1 < tail.records[0].seq:
            return None
        start = after + 1 - tail.records[0].seq
        end = min(len(tail.records), start + limit)
        budget = max_bytes
        stop = start
        while stop < end and (stop == start or tail.sizes[stop] <= budget):
            budget -= tail.sizes[stop]
            stop += 1
        return LogPage(tail.records[start:stop], more=stop < len(tail.records))

    def forget(self, job_id: str) -> None:
        tail = self._tails.pop(job_id, None)
        if tail is not None:
            self._bytes -= tail.bytes


class NoTails(LogTails):
    """Keeps nothing, answers nothing: every read goes to the database. For coordinators
    sharing one database, where another coordinator may store a job's next records, so a
    tail held here could miss them."""

    def stored(self, job_id: str, records: Sequence[LogRecord], sizes: Sequence[int]) -> None:
        return None

    def after(self, job_id: str, after: int, limit: int, max_bytes: int) -> LogPage | None:
        return None
