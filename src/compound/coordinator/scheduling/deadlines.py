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

from compound.protocol import JobStatus


class DeadlineKind(enum.StrEnum):
    TIMEOUT = "timeout"  # the job ran past its timeout_s
    CANCEL = "cancel"  # a cancel was sent and not answered


@dataclass(frozen=True, order=True)
class Deadline:
    at: float  # time.time()
    job_id: str
    lease_id: str
    kind: DeadlineKind

    def ending(self, grace_s: float) -> tuple[JobStatus, str]:
        """The status the coordinator ends the job with, and why (its error and note)."""
        if self.kind is DeadlineKind.TIMEOUT:
            status, what = JobStatus.TIMED_OUT, "ran past its timeout"
        else:
            status, what = JobStatus.CANCELLED, "was cancelled"
        return status, (
            f"{status.value.replace('_', ' ')} by the coordinator: its contributor did not "
            f"end the job within {grace_s:g} s after it {what}"
        )


# Below this many entries the heap is never rebuilt: dropped entries cost next to nothing.
_COMPACT_FLOOR = 64


class Deadlines:
    def __init__(self, grace_s: float = 0.0) -> None:
        # What a contributor gets, past a deadline's moment, to report the job's end.
        self.grace_s = grace_s
        self._heap: list[Deadline] = []
        # The current deadline of each (job, kind); heap entries not here are dropped ones.
        self._live: dict[tuple[str, DeadlineKind], Deadline] = {}

    # ------------------------------------------------------------------ the verbs

    def started(self, job_id: str, lease_id: str, timeout_s: float | None, at: float) -> None:
        """The job was claimed under ``lease_id`` at ``at``: it ends ``timeout_s`` (if any)
        plus the grace later."""
        if timeout_s is not None:
            self.set(
                Deadline(at + timeout_s + self.grace_s, job_id, lease_id, DeadlineKind.TIMEOUT)
            )

    def cancel_sent(self, job_id: str, lease_id: str, at: float) -> None:
        """A cancel went to the holder at ``at``: the job ends the grace later."""
        self.set(Deadline(at + self.grace_s, job_id, lease_id, DeadlineKind.CANCEL))

    def restored(
        self,
        job_id: str,
        lease_id: str,
        *,
        timeout_s: float | None,
        granted_at: float,
        cancel_requested: bool,
        back_by: float,
    ) -> None:
        """At a coordinator's start, from the job's rows: its timeout from its claim, a cancel
        asked for before the restart. Neither passes before ``back_by`` (its agent's lease
        time to come back and report: it may have ended the job while the coordinator was
        away)."""
        if timeout_s is not None:
            at = max(granted_at + timeout_s + self.grace_s, back_by)
            self.set(Deadline(at, job_id, lease_id, DeadlineKind.TIMEOUT))
        if cancel_requested:
            self.cancel_sent(job_id, lease_id, back_by)

    def cancel_pending(self, job_id: str) -> bool:
        """A cancel was sent for the job and is not answered yet."""
        return (job_id, DeadlineKind.CANCEL) in self._live

    # ------------------------------------------------------------------ the heap

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
