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

from compound.coordinator.hub import Wakeup
from compound.coordinator.log_tail import LogPage
from compound.coordinator.state import CoordinatorState
from compound.protocol import FollowEnd, FollowStatus, JobStatus, JobView

PAGE_RECORDS = 2000
# Data per page. JSON escaping can grow text up to 6x (control characters), so a page
# stays well under the 4 MiB message limit whatever the script printed.
PAGE_BYTES = 64 * 1024
# A safety net only: followers are woken by the hub, this bounds a missed wake-up.
IDLE_RECHECK_S = 5.0


class UnknownJob(KeyError):
    pass


async def follow_job(
    state: CoordinatorState, job_id: str, after: int
) -> AsyncIterator[LogPage | FollowStatus | FollowEnd]:
    """Status, pages of records (each page a ``records`` message), status changes, end."""
    wakeup = Wakeup()
    state.hub.watch(job_id, wakeup)  # before the first read: no change can slip between
    try:
        generation = state.hub.queue_generation
        view = await _current_view(state, job_id)
        yield FollowStatus(job=view)
        stale = False  # whether the job may have changed since ``view`` was read
        while True:
            stale = stale or wakeup.job_changed
            wakeup.reset()
            page = await state.store.read_logs(job_id, after, PAGE_RECORDS, PAGE_BYTES)
            if page.records:
                if page.records[-1].seq <= after:  # never loop on a page that does not advance
                    raise RuntimeError(f"log page of job {job_id} did not advance past {after}")
                after = page.records[-1].seq
                yield page
                continue
            if stale:
                generation = state.hub.queue_generation
                current = await _current_view(state, job_id)
                stale = False
                if _visible_change(view, current):
                    view = current
                    yield FollowStatus(job=view)
            if view.status.is_terminal:
                # Records are stored before the ending is, so one last read closes any race.
                page = await state.store.read_logs(job_id, after, PAGE_RECORDS, PAGE_BYTES)
                if page.records and page.records[-1].seq > after:
                    after = page.records[-1].seq
                    yield page
                    continue
                yield FollowEnd(job=view)
                return
            async for status in _until_job_changes(state, view, wakeup, generation):
                view = status.job
                yield status
            stale = True  # it returns when the job must be re-read
    finally:
        state.hub.unwatch(job_id, wakeup)


async def _until_job_changes(
    state: CoordinatorState, view: JobView, wakeup: Wakeup, generation: int
) -> AsyncIterator[FollowStatus]:
    """Waits until the job itself changed (or IDLE_RECHECK_S passed); meanwhile, if it is
    queued, its new position whenever the queue moved, throttled. ``generation`` is the
    hub's queue generation when ``view`` was read. Never touches the database."""
    hub = state.hub
    recheck_at = time.monotonic() + IDLE_RECHECK_S
    quiet_until = 0.0
    while not wakeup.job_changed:
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
        position = state.store.queue.position_of(view.id)
        if position is None:
            return  # no longer waiting in memory (being claimed, or gone): re-read it
        if position != view.queue_position:
            view = view.model_copy(update={"queue_position": position})
            quiet_until = now + state.settings.position_update_interval_s
            yield FollowStatus(job=view)


async def _current_view(state: CoordinatorState, job_id: str) -> JobView:
    job = await state.store.get_job(job_id)
    if job is None:
        raise UnknownJob(job_id)
    return await state.store.view_job(job)


def _visible_change(before: JobView, after: JobView) -> bool:
    return (before.status, before.queue_position, before.contributor_id, before.attempts) != (
        after.status,
        after.queue_position,
        after.contributor_id,
        after.attempts,
    )
