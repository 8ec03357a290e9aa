"""Caps on open followers of job logs: each holds up to a page of memory."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field


class TooManyFollowers(Exception):
    """The follower caps are reached; ``reason`` is a sentence for the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class FollowerLimits:
    """Caps on open followers, per job and in all (each holds up to a page of memory)."""

    per_job: int
    total: int
    _counts: dict[str, int] = field(default_factory=dict)
    _open: int = 0

    @property
    def open(self) -> int:
        return self._open

    @contextlib.contextmanager
    def admit(self, job_id: str) -> Iterator[None]:
        if self._open >= self.total:
            raise TooManyFollowers("the coordinator has too many followers; try again later")
        if self._counts.get(job_id, 0) >= self.per_job:
            raise TooManyFollowers("this job has too many followers; try again later")
        self._counts[job_id] = self._counts.get(job_id, 0) + 1
        self._open += 1
        try:
            yield
        finally:
            self._open -= 1
            remaining = self._counts[job_id] - 1
            if remaining:
                self._counts[job_id] = remaining
            else:
                del self._counts[job_id]
