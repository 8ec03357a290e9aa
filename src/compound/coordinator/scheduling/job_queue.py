"""The queue of jobs waiting for a contributor, kept in memory in FIFO order.

The job rows stay the source of truth (a job is queued while its row says so, and every
status move is an atomic ``UPDATE ... WHERE status``); this book mirrors them so that a
claim, a quota check or a queue position costs no query. Only what ordering and counting
need is kept (a job's number, id, owner, whether it needs packages), never its script, so
100,000 queued jobs cost a few tens of MiB at most.

A job taken from here may turn out not to be queued any more (cancelled meanwhile): the
claim's ``WHERE status`` refuses it and the claimer takes the next. A job queued in the
database but missing here would wait forever, so the sweep compares counts and reloads.

A reload reads the rows while this coordinator keeps queuing and taking jobs: its snapshot
may predate a job queued here meanwhile (which would vanish) or a job taken or cancelled
here meanwhile (which would come back). So the changes made here while a reload's read is in
flight are noted and replayed onto its snapshot (``begin_reload`` / ``finish_reload``).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass


@dataclass(frozen=True)
class QueuedJob:
    number: int  # the row's integer key: FIFO order
    id: str
    owner: str | None
    plain: bool  # needs no packages: any contributor may take it


class JobQueue:
    def __init__(self) -> None:
        self._jobs: dict[int, QueuedJob] = {}
        self._numbers: list[int] = []
        self._plain: list[int] = []
        self._by_id: dict[str, int] = {}
        self._per_owner: dict[str | None, int] = {}
        # While reloads read the rows: this queue's own changes, (job, added), in order.
        self._reloads = 0
        self._changes: list[tuple[QueuedJob, bool]] = []
        self.clear()

    def clear(self) -> None:
        self._jobs = {}
        self._numbers = []  # sorted
        self._plain = []  # sorted: the jobs without requirements
        self._by_id = {}
        self._per_owner = {}

    def add(self, job: QueuedJob) -> None:
        """Queue ``job`` in its place by number (idempotent)."""
        if self._reloads:
            self._changes.append((job, True))
        self._add(job)

    def _add(self, job: QueuedJob) -> None:
        if job.number in self._jobs:
            return
        self._jobs[job.number] = job
        self._by_id[job.id] = job.number
        _insert(self._numbers, job.number)
        if job.plain:
            _insert(self._plain, job.number)
        self._per_owner[job.owner] = self._per_owner.get(job.owner, 0) + 1

    def discard(self, job_id: str) -> QueuedJob | None:
        """Remove job ``job_id`` if it is here; it, or None."""
        job = self._discard(job_id)
        if self._reloads:  # even if not here: a reload's snapshot may still hold it
            self._changes.append((job or QueuedJob(-1, job_id, None, plain=False), False))
        return job

    def _discard(self, job_id: str) -> QueuedJob | None:
        number = self._by_id.get(job_id)
        if number is None:
            return None
        job = self._jobs.pop(number)
        del self._by_id[job_id]
        _remove(self._numbers, number)
        if job.plain:
            _remove(self._plain, number)
        left = self._per_owner[job.owner] - 1
        if left:
            self._per_owner[job.owner] = left
        else:
            del self._per_owner[job.owner]
        return job

    def take(self, plain_only: bool) -> QueuedJob | None:
        """Remove and return the oldest job (the oldest without requirements if
        ``plain_only``), or None."""
        numbers = self._plain if plain_only else self._numbers
        if not numbers:
            return None
        return self.discard(self._jobs[numbers[0]].id)

    def oldest(self) -> QueuedJob | None:
        """The job queued first (by number), left in place."""
        return self._jobs[self._numbers[0]] if self._numbers else None

    def has(self, plain_only: bool) -> bool:
        return bool(self._plain if plain_only else self._numbers)

    def count(self, owner: str | None = None, *, of_owner: bool = False) -> int:
        """All queued jobs, or (``of_owner``) those of ``owner``."""
        if of_owner:
            return self._per_owner.get(owner, 0)
        return len(self._numbers)

    def position(self, number: int) -> int:
        """1 + how many queued jobs are older than job ``number``."""
        return bisect.bisect_left(self._numbers, number) + 1

    def position_of(self, job_id: str) -> int | None:
        """Job ``job_id``'s position, or None if it is not in this queue (taken for a
        claim, or no longer queued)."""
        number = self._by_id.get(job_id)
        return None if number is None else self.position(number)

    def replace_all(self, jobs: list[QueuedJob]) -> None:
        self.clear()
        for job in jobs:
            self._add(job)

    def begin_reload(self) -> int:
        """A reload starts reading the rows: from now on this queue's changes are noted.
        Returns the mark to hand to ``finish_reload``."""
        self._reloads += 1
        return len(self._changes)

    def finish_reload(self, mark: int, jobs: list[QueuedJob] | None) -> None:
        """``jobs`` (the rows read since ``begin_reload`` gave ``mark``) become the queue,
        then the changes made here since are replayed onto them; None (the read failed)
        leaves the queue as it is."""
        changes = self._changes[mark:]
        self._reloads -= 1
        if not self._reloads:
            self._changes = []
        if jobs is None:
            return
        self.replace_all(jobs)
        for job, added in changes:
            if added:
                self._add(job)
            else:
                self._discard(job.id)

    def __len__(self) -> int:
        return len(self._numbers)


def _insert(numbers: list[int], number: int) -> None:
    if not numbers or numbers[-1] < number:
        numbers.append(number)  # a new job: the common case, O(1)
    else:
        bisect.insort(numbers, number)


def _remove(numbers: list[int], number: int) -> None:
    index = bisect.bisect_left(numbers, number)
    if index < len(numbers) and numbers[index] == number:
        del numbers[index]
