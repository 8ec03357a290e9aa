"""The versioned HTTP + WebSocket API (/api/v1) and the health check."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, WebSocket

from compound import __version__
from compound.coordinator.follow.follower import Following, follow_job
from compound.coordinator.follow.followers import TooManyFollowers
from compound.coordinator.routes.access import may_see, require, require_on_socket
from compound.coordinator.routes.audit_route import note_cancel
from compound.coordinator.routes.files import check_inputs
from compound.coordinator.routes.socket import close_quietly, send_until_disconnect
from compound.coordinator.routes.submission import JobSubmission, read_submission
from compound.coordinator.scheduling.quotas import QuotaExceeded
from compound.coordinator.state import CoordinatorState, get_state, state_of
from compound.coordinator.storage.contributors import ContributorRow
from compound.coordinator.storage.job_rows import JobRow
from compound.coordinator.storage.log_tail import LogPage
from compound.coordinator.storage.tokens import Principal
from compound.protocol import (
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_TRY_AGAIN_LATER,
    CLOSE_UNKNOWN_JOB,
    MAX_INT64,
    ContributorState,
    JobStatus,
    JobView,
    serialize,
)
from compound.protocol.auth import Role
from compound.protocol.limits import (
    JOB_LIST_DEFAULT,
    JOB_LIST_MAX,
    LOG_PAGE_RECORDS_DEFAULT,
    LOG_PAGE_RECORDS_MAX,
)
from compound.protocol.responses import (
    ContributorAdminView,
    ContributorList,
    ContributorView,
    Health,
    JobList,
    JobLogs,
)

log = logging.getLogger("compound.coordinator")

router = APIRouter()
LOG_PAGE_BYTES = 4 * 1024 * 1024
State = Annotated[CoordinatorState, Depends(get_state)]
INTERNAL_ERROR = "the coordinator hit an internal error"


async def submit(request: Request, state: CoordinatorState) -> JobRow:
    """Shared by POST /api/v1/jobs and the seed's POST /submit-job. The job belongs to the
    submitting token (open mode: to the client's address, which quotas count by)."""
    principal = require(request, Role.SUBMITTER)
    new = await read_submission(request, state.settings)
    if new.inputs is not None:
        await check_inputs(state, principal, new.inputs)
    try:
        state.quotas.check_new_job(principal.name)
        job = await state.scheduler.submit(state.job_ids.next(), new, principal.name)
    except QuotaExceeded as exc:
        raise HTTPException(429, str(exc)) from None
    # Debug, as its dispatch: two lines a job were 8 % of the coordinator's time at load.
    log.debug("job %s queued (%d bytes) for %s", job.id, len(new.script), principal.name)
    return job


async def visible_job(state: CoordinatorState, principal: Principal, job_id: str) -> JobRow | None:
    """The job if it exists and ``principal`` may see it; another's job is as unknown."""
    job = await state.jobs.get(job_id)
    return job if job is not None and may_see(principal, job.owner) else None


async def _job_or_404(request: Request, state: CoordinatorState, job_id: str) -> JobRow:
    principal = require(request, Role.SUBMITTER)
    job = await visible_job(state, principal, job_id)
    if job is None:
        raise HTTPException(404, f"no job with id {job_id[:64]!r}")
    return job


@router.post(
    "/api/v1/jobs",
    status_code=201,
    response_model=JobView,
    # The body is read by hand (bounded, with one-sentence errors); this documents it.
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": JobSubmission.model_json_schema()}},
        }
    },
)
async def create_job(request: Request, state: State) -> Response:
    """Queue a Python script. It starts as soon as a contributor is idle."""
    return await create_job_answer(request, state)


async def create_job_answer(request: Request, state: CoordinatorState) -> Response:
    """POST /api/v1/jobs itself; ``submit_route`` calls it ahead of FastAPI's router."""
    job = await submit(request, state)
    view = state.scheduler.view(job)
    # Serialized here: returned as a model, FastAPI would validate it again first.
    return Response(view.model_dump_json(), status_code=201, media_type="application/json")


@router.get("/api/v1/jobs")
async def list_jobs(
    request: Request,
    state: State,
    limit: Annotated[int, Query(ge=1, le=JOB_LIST_MAX)] = JOB_LIST_DEFAULT,
) -> JobList:
    """Recent jobs, newest first: the caller's own (an admin's: everybody's)."""
    principal = require(request, Role.SUBMITTER)
    owner = None if principal.is_admin else principal.name
    views = await state.jobs.newest(limit, owner)
    return JobList(jobs=[_with_waiting(state, view) for view in views])


def _with_waiting(state: CoordinatorState, view: JobView) -> JobView:
    """A queued job's view with why it waits and when it may start."""
    if view.queue_position is None:
        return view
    reason, start_s = state.scheduler.waiting(view.queue_position, bool(view.requirements))
    return view.model_copy(update={"waiting_reason": reason, "estimated_start_s": start_s})


@router.get("/api/v1/jobs/{job_id}", response_model=JobView)
async def get_job(job_id: str, request: Request, state: State) -> JobView:
    return state.scheduler.view(await _job_or_404(request, state, job_id))


@router.get("/api/v1/jobs/{job_id}/logs")
async def get_logs(
    job_id: str,
    request: Request,
    state: State,
    after: Annotated[int, Query(ge=-1, le=MAX_INT64)] = -1,
    limit: Annotated[int, Query(ge=1, le=LOG_PAGE_RECORDS_MAX)] = LOG_PAGE_RECORDS_DEFAULT,
) -> JobLogs:
    """Log records with seq > after, at most ``limit`` and about 4 MiB of data a page.
    ``complete``: the job is over and nothing follows this page."""
    job = await _job_or_404(request, state, job_id)
    page = await state.logs.read(job_id, after, limit, LOG_PAGE_BYTES)
    records = page.records
    last_seq = records[-1].seq if records else after
    complete = job.status.is_terminal and not page.more
    return JobLogs(
        records=records,
        last_seq=last_seq,
        complete=complete,
        job=state.scheduler.view(job),
        last_attempt=job.last_attempt,
    )


@router.post("/api/v1/jobs/{job_id}/cancel", status_code=202, response_model=JobView)
async def cancel_job(job_id: str, request: Request, state: State) -> JobView:
    """Cancel a job: at once if it is queued, after its container stopped if it runs."""
    job = await _job_or_404(request, state, job_id)
    if job.status.is_terminal:
        raise HTTPException(409, f"job {job_id} already ended ({job.status.value})")
    await note_cancel(request, state, job)
    return state.scheduler.view(await state.scheduler.cancel(job))


@router.get("/api/v1/contributors")
async def list_contributors(
    request: Request,
    state: State,
    after: Annotated[int, Query(ge=0, le=MAX_INT64)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ContributorList:
    """The machines, a page at a time in registration order: what a submitter needs to know
    of them; an admin also sees who runs what (node ids, current jobs, the registering
    token). ``next``: the ``after`` of the next page, null on the last."""
    principal = require(request, Role.SUBMITTER, Role.CONTRIBUTOR)
    rows, following = await state.contributors.page(after, limit)
    # Several coordinators: those connected to the others run the jobs of their lease rows.
    others = [row for row in rows if state.cluster.shared and state.sessions.get(row.id) is None]
    await state.cluster.know(
        {row.coordinator for row in others if row.state is not ContributorState.OFFLINE}
    )
    elsewhere = await state.cluster.jobs_held([row.id for row in others])
    return ContributorList(
        contributors=[_contributor_view(state, row, principal, elsewhere) for row in rows],
        next=following,
    )


_WITH_REASON = frozenset({ContributorState.PAUSED, ContributorState.DRAINING})


def _contributor_view(
    state: CoordinatorState,
    row: ContributorRow,
    principal: Principal,
    elsewhere: dict[str, list[str]],
) -> ContributorView:
    held = [lease.job_id for lease in state.scheduler.leases_of(row.id)]
    # A connected one's state is in memory (busy or idle changes with every job); an
    # offline one's is its row, with the state it was in when it left.
    session = state.sessions.get(row.id)
    if session is not None and not session.closed:
        now, reason, last_state = (
            state.scheduler.contributor_state(session),
            session.lending_reason,
            None,
        )
    else:
        now, reason, last_state = _row_state(state, row, elsewhere.get(row.id, []))
        held = held or elsewhere.get(row.id, [])
    if (last_state or now) not in _WITH_REASON:
        reason = None  # a reason is why it pauses or drains, nothing else
    public = ContributorView(
        name=row.name,
        state=now,
        reason=reason,
        last_state=last_state,
        cores=row.cores,
        memory_bytes=row.memory_bytes,
        runtime=row.runtime,
        version=row.version,
        cpu_percent=row.cpu_percent,
        ram_free_bytes=row.ram_free_bytes,
        ram_total_bytes=row.ram_total_bytes,
        last_seen=row.last_seen,
        busy=bool(held),
    )
    if not principal.is_admin:
        return public
    return ContributorAdminView(
        **public.model_dump(),
        id=row.id,
        token_name=row.token_name,
        current_job_id=held[0] if held else None,
        coordinator=row.coordinator,
    )


def _row_state(
    state: CoordinatorState, row: ContributorRow, jobs_elsewhere: list[str]
) -> tuple[ContributorState, str | None, ContributorState | None]:
    """State, reason and last state of a contributor not connected here, from its row: one
    connected to another coordinator is busy if it holds leases; one whose coordinator is
    gone (SIGKILLed: nothing marked its row) is offline, its row's state its last."""
    if not state.cluster.shared or row.state is ContributorState.OFFLINE:
        return row.state, row.state_reason, row.last_state
    if not state.cluster.is_live(row.coordinator):
        return ContributorState.OFFLINE, row.state_reason, row.state
    if row.state is ContributorState.IDLE and jobs_elsewhere:
        return ContributorState.BUSY, row.state_reason, None
    return row.state, row.state_reason, None


@router.get("/healthz")
async def healthz(state: State) -> Health:
    """Liveness, answered from memory: job counts are as of the last lease sweep (≤ 1 s)."""
    counts = state.scheduler.job_counts
    return Health(
        status="ok",
        version=__version__,
        queued=counts.get(JobStatus.QUEUED.value, 0),
        running=counts.get(JobStatus.RUNNING.value, 0),
        contributors_online=len(state.sessions),
        followers=state.followers.open,
        max_input_bytes=state.settings.max_input_bytes,
        coordinators=len(state.cluster.peers),
    )


@router.websocket("/api/v1/jobs/{job_id}/follow")
async def follow(websocket: WebSocket, job_id: str, after: str = "-1") -> None:
    """Status, every log record after ``after`` exactly once, then ``end``."""
    await follow_answer(websocket, state_of(websocket), job_id, after)


async def follow_answer(
    websocket: WebSocket, state: CoordinatorState, job_id: str, after: str
) -> None:
    """The follow socket itself; ``follow_route`` calls it ahead of FastAPI's router."""
    await websocket.accept()
    start = _follow_start(after)
    if start is None:
        await close_quietly(websocket, CLOSE_POLICY, "after must be an integer from -1")
        return
    await serve_follower(
        websocket, state, job_id, lambda following: _follow_messages(following, start)
    )


async def _follow_messages(following: Following, after: int) -> AsyncGenerator[str, None]:
    async for message in follow_job(following, after):
        yield message.as_text() if isinstance(message, LogPage) else serialize(message)


def _follow_start(after: str) -> int | None:
    try:
        value = int(after)
    except ValueError:
        return None
    return value if -1 <= value <= MAX_INT64 else None


async def serve_follower(
    websocket: WebSocket,
    state: CoordinatorState,
    job_id: str,
    messages: Callable[[Following], AsyncGenerator[str, None]],
) -> None:
    """Shared by the follow socket and the seed's submitter socket: role, unknown (or
    another's) job, caps, sending until the end or the follower leaves, a bounded close.
    The row read for the ownership check is the one the follow starts from."""
    principal = await require_on_socket(websocket, Role.SUBMITTER)
    if principal is None:
        return
    with Following(state, job_id) as following:
        job = await following.open()
        if job is None or not may_see(principal, job.owner):
            await close_quietly(websocket, CLOSE_UNKNOWN_JOB, "unknown job")
            return
        try:
            with state.followers.admit(job_id):
                sent = await send_until_disconnect(
                    websocket, messages(following), state.settings.follower_send_timeout_s
                )
                if sent:
                    await close_quietly(websocket, CLOSE_NORMAL)
        except TooManyFollowers as exc:
            await close_quietly(websocket, CLOSE_TRY_AGAIN_LATER, exc.reason)
