"""Wakes followers of a job when that job changed, or when queue positions moved.

Two kinds of change, because they cost a follower differently:

- ``notify(job_id)``: the job itself changed (new records, status, attempts, contributor).
  Its followers re-read it from the database at once: this is what a person watching a job
  start or print waits for.
- ``records_added(job_id)``: new log records of the job were stored, nothing else changed.
  Its followers read the records (mostly from memory, ``log_tail.py``) but not the job row:
  a job printing in many batches costs its followers no row read per batch.
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
    """One follower's alarm: set by a change of its job (``job_changed``), by new records
    of it (``records_added``), by a queue movement if armed with ``ChangeHub.watch_queue``,
    or by its own timeout."""

    __slots__ = ("_event", "job_changed", "records_added")

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.job_changed = False
        self.records_added = False

    def reset(self) -> None:
        """Call *before* reading state: a change during the read sets the alarm again."""
        self._event.clear()
        self.job_changed = False
        self.records_added = False

    def ring(self, job_changed: bool, records_added: bool = False) -> None:
        self.job_changed = self.job_changed or job_changed
        self.records_added = self.records_added or records_added
        self._event.set()

    @property
    def news(self) -> bool:
        """Whether its job changed or got records since the last ``reset``."""
        return self.job_changed or self.records_added

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

    def records_added(self, job_id: str) -> None:
        """New records of ``job_id`` were committed; the job row changed only its counters."""
        for wakeup in self._job_watchers.get(job_id, ()):
            wakeup.ring(job_changed=False, records_added=True)

    def job_queued(self, job_id: str) -> None:
        """``job_id`` entered the queue (submitted, requeued, handed back). Nothing to wake
        here (its own ``notify`` does); a hub shared by several coordinators (``cluster``)
        tells the others, whose queue mirrors do not know it yet."""

    def cancel_requested(self, job_id: str) -> None:
        """A cancel of ``job_id`` was stored while another coordinator holds its lease.
        Nothing to do here; a hub shared by several coordinators (``cluster``) tells the
        others, and the one holding the lease sends the cancel to its contributor."""

    def queue_moved(self) -> None:
        """Positions in the queue may have moved: wake the followers that asked."""
        self.queue_generation += 1
        watchers, self._queue_watchers = self._queue_watchers, set()
        for wakeup in watchers:
            wakeup.ring(job_changed=False)

    def watching(self) -> int:
        """How many alarms are registered (for tests: none may outlive its follower)."""
        return sum(len(w) for w in self._job_watchers.values()) + len(self._queue_watchers)
