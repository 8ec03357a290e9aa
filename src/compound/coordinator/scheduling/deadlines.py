"""Deadlines the coordinator enforces itself: a running job's timeout, a cancel's grace.

An agent ends a job that runs past its ``timeout_s`` and stops one it is told to cancel; one
that does not (broken, or modified to keep its lease by heartbeating) would otherwise keep the
job running for ever. So the scheduler keeps, per running job, when it will end the job
itself: its claim plus ``timeout_s`` plus a grace for the agent to report, and, once a cancel
is sent, the moment plus that grace.

:class:`Deadlines` is a heap ordered by time, so the sweep looks at the earliest one and pops
only those that passed: no scan of every running job. A deadline belongs to one lease; it is
dropped when the lease goes (the job ended or was requeued), and the heap is rebuilt without
dropped entries once they are the majority, so it stays the size of the running jobs.
"""

from __future__ import annotations

import enum
import heapq
from dataclasses import dataclass


class DeadlineKind(enum.StrEnum):
    TIMEOUT = "timeout"  # the job ran past its timeout_s
    CANCEL = "cancel"  # a cancel was sent and not answered


@dataclass(frozen=True, order=True)
class Deadline:
    at: float  # time.time()
    job_id: str
    lease_id: str
    kind: DeadlineKind


# Below this many entries the heap is never rebuilt: dropped entries cost next to nothing.
_COMPACT_FLOOR = 64


class Deadlines:
    def __init__(self) -> None:
        self._heap: list[Deadline] = []
        # The current deadline of each (job, kind); heap entries not here are dropped ones.
        self._live: dict[tuple[str, DeadlineKind], Deadline] = {}

    def set(self, deadline: Deadline) -> None:
        """Keep ``deadline``; of two for the same lease and kind the earlier one stands."""
        key = (deadline.job_id, deadline.kind)
        current = self._live.get(key)
        if (
            current is not None
            and current.lease_id == deadline.lease_id
            and current.at <= deadline.at
        ):
            return
        self._live[key] = deadline
        heapq.heappush(self._heap, deadline)
        self._compact()

    def drop(self, job_id: str) -> None:
        """The job's lease is gone: none of its deadlines applies any more."""
        for kind in DeadlineKind:
            self._live.pop((job_id, kind), None)
        self._compact()

    def has(self, job_id: str, kind: DeadlineKind) -> bool:
        return (job_id, kind) in self._live

    def due(self, now: float) -> list[Deadline]:
        """The deadlines passed by ``now``, earliest first; each is handed out once."""
        passed: list[Deadline] = []
        while self._heap and self._heap[0].at <= now:
            deadline = heapq.heappop(self._heap)
            key = (deadline.job_id, deadline.kind)
            if self._live.get(key) is deadline:
                del self._live[key]
                passed.append(deadline)
        return passed

    def _compact(self) -> None:
        if len(self._heap) > _COMPACT_FLOOR and len(self._heap) > 2 * len(self._live):
            self._heap = list(self._live.values())
            heapq.heapify(self._heap)

    def __len__(self) -> int:
        return len(self._live)
