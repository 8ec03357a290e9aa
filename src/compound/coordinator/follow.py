"""Following a job: its log from any point, then live records, then its end.

Each step re-reads after the last sequence number sent, so a late subscriber gets the full
history, then live records, with no gap and no duplicate, whatever the timing. A follower
holds one page at a time (cut by bytes, so no message nears the protocol's limit): one that
falls behind is served from the store page by page, never buffered.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from compound.coordinator.log_tail import LogPage
from compound.coordinator.state import CoordinatorState
from compound.protocol import FollowEnd, FollowStatus, JobView

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
    view = await _current_view(state, job_id)
    yield FollowStatus(job=view)
    while True:
        changed = state.hub.watch(job_id)
        page = await state.store.read_logs(job_id, after, PAGE_RECORDS, PAGE_BYTES)
        if page.records:
            if page.records[-1].seq <= after:  # never loop on a page that does not advance
                raise RuntimeError(f"log page of job {job_id} did not advance past {after}")
            after = page.records[-1].seq
            yield page
            continue
        current = await _current_view(state, job_id)
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
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), IDLE_RECHECK_S)


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
