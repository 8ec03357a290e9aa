"""The queue of jobs waiting for a contributor, kept in memory in FIFO order.

The job rows stay the source of truth (a job is queued while its row says so, and every
status move is an atomic ``UPDATE ... WHERE status``); this book mirrors them so that a
claim, a quota check or a queue position costs no query. Only what ordering and counting
need is kept (a job's number, id, owner, whether it needs packages), never its script, so
100,000 queued jobs cost a few tens of MiB at most.

A job taken from here may turn out not to be queued any more (cancelled meanwhile): the
claim's ``WHERE status`` refuses it and the claimer takes the next. A job queued in the
database but missing here would wait forever, so the sweep compares counts and reloads.
A reload reads the rows while jobs keep coming and going: what was added or discarded while
it read (``reload_journal``) is applied again over what it read (``replace_all``).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

# One reload's record of the adds (the job) and discards (its id) made while it read the rows.
Journal = list["QueuedJob | str"]


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
        self._journals: list[Journal] = []  # of the reloads under way
        self.clear()

    def clear(self) -> None:
        self._jobs = {}
        self._numbers = []  # sorted
        self._plain = []  # sorted: the jobs without requirements
        self._by_id = {}
        self._per_owner = {}

    def add(self, job: QueuedJob) -> None:
        """Queue ``job`` in its place by number (idempotent)."""
        for journal in self._journals:
            journal.append(job)
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
        for journal in self._journals:
            journal.append(job_id)
        return self._discard(job_id)

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

    def get(self, job_id: str) -> QueuedJob | None:
        """Job ``job_id``'s entry, if it is in this queue."""
        number = self._by_id.get(job_id)
        return None if number is None else self._jobs[number]

    def reload_journal(self) -> Journal:
        """Call before reading the rows of a reload; hand the result to ``replace_all``."""
        journal: Journal = []
        self._journals.append(journal)
        return journal

    def end_reload(self, journal: Journal) -> None:
        """Stop recording into ``journal`` (its reload ended, or failed)."""
        self._journals = [other for other in self._journals if other is not journal]

    def replace_all(self, jobs: list[QueuedJob], journal: Journal | None = None) -> None:
        """The queue as ``jobs`` (rows read by a reload), then the adds and discards made
        while they were read, in order."""
        if journal is not None:
            self.end_reload(journal)
        self.clear()
        for job in jobs:
            self._add(job)
        for item in journal or []:
            if isinstance(item, QueuedJob):
                self._add(item)
            else:
                self._discard(item)

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
