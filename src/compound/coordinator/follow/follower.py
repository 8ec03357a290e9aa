"""Following a job: its log from any point, then live records, then its end.

Each step re-reads after the last sequence number sent, so a late subscriber gets the full
history, then live records, with no gap and no duplicate, whatever the timing. A follower
holds one page at a time (cut by bytes, so no message nears the protocol's limit): one that
falls behind is served from the store page by page, never buffered.

While its job waits in the queue, a follower is told its position. Positions move with every
claim, so they come from the in-memory queue, not the database, and at most once per
``settings.position_update_interval_s``: N followers of queued jobs and N claims cost O(N)
reads, not O(N²). A change of the job itself (claimed, cancelled) is sent at once.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from compound.coordinator.scheduling.hub import Wakeup
from compound.coordinator.state import CoordinatorState
from compound.coordinator.storage.job_rows import JobRow
from compound.coordinator.storage.log_tail import LogPage
from compound.protocol import FollowEnd, FollowStatus, JobStatus, JobView

PAGE_RECORDS = 2000
# Data per page. JSON escaping can grow text up to 6x (control characters), so a page
# stays well under the 4 MiB message limit whatever the script printed.
PAGE_BYTES = 64 * 1024
# A safety net only: followers are woken by the hub, this bounds a missed wake-up.
IDLE_RECHECK_S = 5.0


class UnknownJob(KeyError):
    pass


class Following:
    """A follower's alarm on one job, set before the job's row is read (``open``), so no
    change between the two is missed; the row answers the ownership check and starts the
    follow without a second read. ``with`` removes the alarm, however the follow ended."""

    def __init__(self, state: CoordinatorState, job_id: str) -> None:
        self.state = state
        self.job_id = job_id
        self.wakeup = Wakeup()
        self.job: JobRow | None = None
        self.generation = 0  # the hub's queue generation when ``job`` was read

    async def open(self) -> JobRow | None:
        """The job's row, read after the alarm was set; None if there is no such job."""
        self.generation = self.state.hub.queue_generation
        self.job = await self.state.jobs.get(self.job_id)
        return self.job

    def __enter__(self) -> Following:
        self.state.hub.watch(self.job_id, self.wakeup)
        return self

    def __exit__(self, *_: object) -> None:
        self.state.hub.unwatch(self.job_id, self.wakeup)


async def follow_job(
    following: Following, after: int
) -> AsyncIterator[LogPage | FollowStatus | FollowEnd]:
    """Status, pages of records (each page a ``records`` message), status changes, end.

    The job row is read again only when the job itself changed (claimed, ended, ...); new
    records alone are read from the log (mostly from memory). Its ``last_seq`` says whether
    the log holds anything past what was sent, so a job that never ran costs no log read.
    """
    state, job_id, wakeup = following.state, following.job_id, following.wakeup
    job = following.job
    if job is None:
        raise UnknownJob(job_id)
    generation = following.generation
    view = state.scheduler.view(job)
    yield FollowStatus(job=view)
    stale = False  # whether the job may have changed since ``job`` was read
    checked = after  # every stored record up to this seq was sent
    while True:
        stale = stale or wakeup.job_changed
        records_added = wakeup.records_added
        wakeup.reset()  # before reading: a change during the reads rings again
        if stale:
            generation = state.hub.queue_generation
            job = await _read_job(state, job_id)
        if records_added or job.last_seq > checked:
            async for page in _pages_after(state, job_id, after):
                after = page.records[-1].seq
                yield page
            # The pages were read after ``job``: they hold whatever it announced.
            checked = max(after, job.last_seq)
        if stale:
            stale = False
            current = state.scheduler.view(job)
            if _visible_change(view, current):
                view = current
                yield FollowStatus(job=view)
        if view.status.is_terminal:
            # Records are stored before the ending is, and were read after it: all are sent.
            yield FollowEnd(job=view)
            return
        async for status in _until_job_changes(state, view, wakeup, generation):
            view = status.job
            yield status
        # Back without news of its own: the recheck timer, or it left the queue in memory.
        stale = not (wakeup.job_changed or wakeup.records_added)


async def _pages_after(state: CoordinatorState, job_id: str, after: int) -> AsyncIterator[LogPage]:
    """Pages of the records stored after ``after``, until one comes back empty."""
    while True:
        page = await state.logs.read(job_id, after, PAGE_RECORDS, PAGE_BYTES)
        if not page.records:
            return
        if page.records[-1].seq <= after:  # never loop on a page that does not advance
            raise RuntimeError(f"log page of job {job_id} did not advance past {after}")
        after = page.records[-1].seq
        yield page


async def _until_job_changes(
    state: CoordinatorState, view: JobView, wakeup: Wakeup, generation: int
) -> AsyncIterator[FollowStatus]:
    """Waits until the job itself changed or got records (or IDLE_RECHECK_S passed);
    meanwhile, if it is queued, its new position whenever the queue moved, throttled.
    ``generation`` is the hub's queue generation when ``view`` was read. Never touches
    the database."""
    hub = state.hub
    recheck_at = time.monotonic() + IDLE_RECHECK_S
    quiet_until = 0.0
    while not (wakeup.job_changed or wakeup.records_added):
        now = time.monotonic()
        if now >= recheck_at:
            return
        if view.status is not JobStatus.QUEUED:
            await wakeup.wait(recheck_at - now)
            continue
        if now < quiet_until:
            await wakeup.wait(min(recheck_at, quiet_until) - now)
            continue
        if hub.queue_generation == generation:
            hub.watch_queue(wakeup)
            await wakeup.wait(recheck_at - now)
            continue
        generation = hub.queue_generation
        position = state.scheduler.queue_position(view.id)
        if position is None:
            return  # no longer waiting in memory (being claimed, or gone): re-read it
        reason, start_s = state.scheduler.waiting(position, bool(view.requirements))
        if (position, reason, start_s) != (
            view.queue_position,
            view.waiting_reason,
            view.estimated_start_s,
        ):
            view = view.model_copy(
                update={
                    "queue_position": position,
                    "waiting_reason": reason,
                    "estimated_start_s": start_s,
                }
            )
            quiet_until = now + state.settings.position_update_interval_s
            yield FollowStatus(job=view)


async def _read_job(state: CoordinatorState, job_id: str) -> JobRow:
    job = await state.jobs.get(job_id)
    if job is None:
        raise UnknownJob(job_id)
    return job


def _visible_change(before: JobView, after: JobView) -> bool:
    return _visible(before) != _visible(after)


def _visible(view: JobView) -> tuple[object, ...]:
    """What a follower is told again when it changes."""
    return (
        view.status,
        view.queue_position,
        view.contributor_id,
        view.attempts,
        view.waiting_reason,
        view.estimated_start_s,
    )
