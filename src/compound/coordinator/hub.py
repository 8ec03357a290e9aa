"""Wakes followers of a job when that job changed, or when queue positions moved.

Two kinds of change, because they cost a follower differently:

- ``notify(job_id)``: the job itself changed (new records, status, attempts, contributor).
  Its followers re-read it from the database at once: this is what a person watching a job
  start or print waits for.
- ``queue_moved()``: jobs left or re-entered the queue, so the positions of queued jobs may
  have moved. A follower of a queued job recomputes its position from the in-memory queue
  (no query), at most once per throttle window (see ``follow.py``). Only followers that armed
  ``watch_queue`` are woken, so a claim no longer wakes the followers of running jobs.

A queued job that is claimed, cancelled, failed or requeued is both: ``notify(job_id,
queue_moved=True)``.

The database is the source of truth: a follower always re-reads records after the last
sequence number it sent, so a missed or spurious wake-up can never cause a gap or a duplicate.
``queue_generation`` counts movements, so one that happens while a follower is not listening
(inside its throttle window) is still seen the next time it looks.
"""

from __future__ import annotations

import asyncio


class Wakeup:
    """One follower's alarm: set by a change of its job (``job_changed``), by a queue
    movement if armed with ``ChangeHub.watch_queue``, or by its own timeout."""

    __slots__ = ("_event", "job_changed")

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.job_changed = False

    def reset(self) -> None:
        """Call *before* reading state: a change during the read sets the alarm again."""
        self._event.clear()
        self.job_changed = False

    def ring(self, job_changed: bool) -> None:
        self.job_changed = self.job_changed or job_changed
        self._event.set()

    async def wait(self, timeout_s: float) -> None:
        """Until rung or ``timeout_s`` passed (a timer, not a task: this runs for every
        follower on every wake-up). Clears the alarm but not ``job_changed``."""
        if not self._event.is_set():
            timer = asyncio.get_running_loop().call_later(max(0.0, timeout_s), self._event.set)
            try:
                await self._event.wait()
            finally:
                timer.cancel()
        self._event.clear()


class ChangeHub:
    def __init__(self) -> None:
        self._job_watchers: dict[str, set[Wakeup]] = {}
        self._queue_watchers: set[Wakeup] = set()
        # How many times queue positions moved: a follower compares it with the value it
        # last looked at, so it never misses a movement while it was not armed.
        self.queue_generation = 0

    def watch(self, job_id: str, wakeup: Wakeup) -> None:
        """Ring ``wakeup`` at every change of ``job_id`` until ``unwatch``."""
        self._job_watchers.setdefault(job_id, set()).add(wakeup)

    def watch_queue(self, wakeup: Wakeup) -> None:
        """Ring ``wakeup`` once, at the next queue movement."""
        self._queue_watchers.add(wakeup)

    def unwatch(self, job_id: str, wakeup: Wakeup) -> None:
        self._queue_watchers.discard(wakeup)
        watchers = self._job_watchers.get(job_id)
        if watchers is not None:
            watchers.discard(wakeup)
            if not watchers:
                del self._job_watchers[job_id]

    def notify(self, job_id: str, *, queue_moved: bool = False) -> None:
        """``job_id`` changed; with ``queue_moved``, it also entered or left the queue."""
        for wakeup in self._job_watchers.get(job_id, ()):
            wakeup.ring(job_changed=True)
        if queue_moved:
            self.queue_moved()

    def queue_moved(self) -> None:
        """Positions in the queue may have moved: wake the followers that asked."""
        self.queue_generation += 1
        watchers, self._queue_watchers = self._queue_watchers, set()
        for wakeup in watchers:
            wakeup.ring(job_changed=False)

    def watching(self) -> int:
        """How many alarms are registered (for tests: none may outlive its follower)."""
        return sum(len(w) for w in self._job_watchers.values()) + len(self._queue_watchers)
