"""Why a queued job waits, and when it may start: answered from memory, never by a scan.

``LendingCounts`` counts the connected contributors by what they lend; the session registry
updates it as sessions come, go and change what they lend, so a job's view costs a few
comparisons, not a pass over 10,000 sessions. ``StartRate`` counts the jobs started in the
last few minutes, in buckets, so the estimate of a job's start is its place in the queue
over the recent rate.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from compound.protocol import Lending, WaitingReason

START_RATE_WINDOW_S = 300.0
START_RATE_BUCKET_S = 10.0


@dataclass
class LendingCounts:
    """Connected contributors, by what they lend (kept as sessions change)."""

    online: int = 0
    # Paused or draining: they take no job.
    not_lending: int = 0
    # Those that install packages (hello's ``deps``): all of them, and the lending ones.
    with_deps: int = 0
    lending_with_deps: int = 0

    def count(self, lending: Lending, deps: bool, sign: int) -> None:
        """Add (``sign`` 1) or take away (-1) one contributor lending ``lending``."""
        active = lending is Lending.ACTIVE
        self.online += sign
        self.not_lending += sign * (not active)
        self.with_deps += sign * deps
        self.lending_with_deps += sign * (deps and active)

    @property
    def lending(self) -> int:
        return self.online - self.not_lending


def waiting_reason(counts: LendingCounts, needs_packages: bool) -> WaitingReason:
    """Why a queued job (with requirements: ``needs_packages``) is not running."""
    if counts.online <= 0:
        return WaitingReason.NO_CONTRIBUTOR
    if counts.lending <= 0:
        return WaitingReason.ALL_PAUSED
    if needs_packages and counts.lending_with_deps <= 0:
        # Some that install packages are paused: they are why it waits, not a missing feature.
        return WaitingReason.ALL_PAUSED if counts.with_deps > 0 else WaitingReason.NO_PACKAGES
    return WaitingReason.ALL_BUSY


def estimated_start_s(position: int, starts_per_s: float | None) -> float | None:
    """Seconds until the job at ``position`` (1: next) starts at the recent rate; None
    when nothing started lately (the rate is unknown)."""
    if starts_per_s is None or starts_per_s <= 0:
        return None
    return float(round(position / starts_per_s))


class StartRate:
    """Jobs started per second over the last ``window_s``, kept in ``bucket_s`` buckets
    (bounded memory however many jobs start)."""

    def __init__(
        self,
        window_s: float = START_RATE_WINDOW_S,
        bucket_s: float = START_RATE_BUCKET_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._window_s = window_s
        self._bucket_s = bucket_s
        self._clock = clock
        self._since = clock()
        # (bucket number, jobs started in it), oldest first.
        self._buckets: deque[list[int]] = deque()

    def started(self, count: int = 1) -> None:
        bucket = int(self._clock() // self._bucket_s)
        if self._buckets and self._buckets[-1][0] == bucket:
            self._buckets[-1][1] += count
        else:
            self._buckets.append([bucket, count])
        self._forget_old(bucket)

    def per_s(self) -> float | None:
        """The recent rate; None when no job started within the window."""
        now = self._clock()
        self._forget_old(int(now // self._bucket_s))
        started = sum(count for _, count in self._buckets)
        if not started:
            return None
        # Over the window, or the time since counting began if shorter (but at least one
        # bucket: one start a moment ago is not a rate of thousands a minute).
        span_s = max(self._bucket_s, min(self._window_s, now - self._since))
        return started / span_s

    def _forget_old(self, bucket: int) -> None:
        oldest = bucket - int(self._window_s // self._bucket_s)
        while self._buckets and self._buckets[0][0] < oldest:
            self._buckets.popleft()
