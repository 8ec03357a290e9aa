"""Leases: who may report on a running job, until when.

The ``leases`` table is the single source of truth; :class:`LeaseBook` mirrors it in memory
so that checking a report or finding idle contributors costs no query. The book is changed
only after the store has committed the matching change, by the scheduler alone.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass
class Lease:
    job_id: str
    lease_id: str
    holder: str  # contributor (node) id
    first_seq: int
    expires_at: float  # time.time()

    def expired(self, now: float) -> bool:
        return self.expires_at <= now


class LeaseBook:
    def __init__(self) -> None:
        self._by_job: dict[str, Lease] = {}
        self._by_holder: dict[str, set[str]] = {}
        # Jobs whose expiry moved since it was last written to the database.
        self._renewed: set[str] = set()

    def add(self, lease: Lease) -> None:
        self.remove(lease.job_id)
        self._by_job[lease.job_id] = lease
        self._by_holder.setdefault(lease.holder, set()).add(lease.job_id)

    def remove(self, job_id: str) -> Lease | None:
        lease = self._by_job.pop(job_id, None)
        if lease is not None:
            held = self._by_holder.get(lease.holder)
            if held is not None:
                held.discard(job_id)
                if not held:
                    del self._by_holder[lease.holder]
            self._renewed.discard(job_id)
        return lease

    def get(self, job_id: str) -> Lease | None:
        return self._by_job.get(job_id)

    def current(self, job_id: str, lease_id: str | None, holder: str) -> Lease | None:
        """The lease if ``holder`` holds exactly ``lease_id`` on ``job_id``; else None.

        A report without a lease id never matches: the edge fills it in for seed agents.
        """
        lease = self._by_job.get(job_id)
        if lease is None or lease_id is None:
            return None
        if lease.holder != holder or lease.lease_id != lease_id:
            return None
        return lease

    def held_by(self, holder: str) -> set[str]:
        return set(self._by_holder.get(holder, ()))

    def held_count(self, holder: str) -> int:
        return len(self._by_holder.get(holder, ()))

    def renew(self, holder: str, expires_at: float) -> None:
        for job_id in self._by_holder.get(holder, ()):
            self._by_job[job_id].expires_at = expires_at
            self._renewed.add(job_id)

    def take_renewed(self) -> dict[str, float]:
        """Expiries changed since the last call, to be written back; clears the set."""
        renewed = {job_id: self._by_job[job_id].expires_at for job_id in self._renewed}
        self._renewed.clear()
        return renewed

    def expired(self, now: float | None = None) -> list[Lease]:
        moment = time.time() if now is None else now
        return [lease for lease in self._by_job.values() if lease.expired(moment)]

    def all(self) -> Iterable[Lease]:
        return list(self._by_job.values())

    def __len__(self) -> int:
        return len(self._by_job)
