"""Leases: who may report on a running job, until when — owned by one object.

A lease is granted with the claim that starts a job and its row is deleted with the move that
ends or requeues it (``storage.job_writes``); that row is what a report is checked against,
once, in the transaction that stores the report. :class:`Leases` is the scheduler's view of
the same leases in memory, so finding a contributor's free slots or the expired leases costs
no query. Nobody changes a lease but through its verbs: ``grant``, ``renew``, ``check``,
``release``, ``expired``. Renewals are kept here and written back in batches
(``take_renewed``): a heartbeat costs no write.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Lease:
    job_id: str
    lease_id: str
    holder: str  # contributor (node) id
    first_seq: int  # the first sequence number this attempt reports
    expires_at: float  # time.time()

    def expired(self, now: float) -> bool:
        return self.expires_at <= now


class Leases:
    def __init__(self) -> None:
        self._by_job: dict[str, Lease] = {}
        self._by_holder: dict[str, set[str]] = {}
        # Jobs whose expiry moved since it was last written to the database.
        self._renewed: set[str] = set()

    def grant(self, lease: Lease) -> None:
        """``lease`` was committed with its job's claim (or adopted at start)."""
        self.release(lease.job_id)
        self._by_job[lease.job_id] = lease
        self._by_holder.setdefault(lease.holder, set()).add(lease.job_id)

    def release(self, job_id: str) -> Lease | None:
        """The job's lease is gone (ended, requeued, lost); the lease it was, if any."""
        lease = self._by_job.pop(job_id, None)
        if lease is not None:
            held = self._by_holder.get(lease.holder)
            if held is not None:
                held.discard(job_id)
                if not held:
                    del self._by_holder[lease.holder]
            self._renewed.discard(job_id)
        return lease

    def renew(self, holder: str, expires_at: float) -> None:
        """Every lease ``holder`` holds now lasts until ``expires_at``."""
        for job_id in self._by_holder.get(holder, ()):
            self._by_job[job_id] = replace(self._by_job[job_id], expires_at=expires_at)
            self._renewed.add(job_id)

    def check(self, job_id: str, lease_id: str | None, holder: str) -> Lease | None:
        """The lease if ``holder`` holds exactly ``lease_id`` on ``job_id``; else None.

        A claim without a lease id never matches."""
        lease = self._by_job.get(job_id)
        if lease is None or lease_id is None:
            return None
        if lease.holder != holder or lease.lease_id != lease_id:
            return None
        return lease

    def expired(self, now: float | None = None) -> list[Lease]:
        """The leases whose holder has been silent past their expiry (still held)."""
        moment = time.time() if now is None else now
        return [lease for lease in self._by_job.values() if lease.expired(moment)]

    def of(self, job_id: str) -> Lease | None:
        return self._by_job.get(job_id)

    def held_by(self, holder: str) -> list[Lease]:
        return [self._by_job[job_id] for job_id in sorted(self._by_holder.get(holder, ()))]

    def held_count(self, holder: str) -> int:
        return len(self._by_holder.get(holder, ()))

    def take_renewed(self) -> dict[str, float]:
        """Expiries changed since the last call, to be written back; clears the set."""
        renewed = {job_id: self._by_job[job_id].expires_at for job_id in self._renewed}
        self._renewed.clear()
        return renewed

    def all(self) -> Iterable[Lease]:
        return list(self._by_job.values())

    def __len__(self) -> int:
        return len(self._by_job)
