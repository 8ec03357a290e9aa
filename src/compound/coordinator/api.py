"""The versioned HTTP + WebSocket API (/api/v1) and the health check."""

from __future__ import annotations

import logging
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, WebSocket

from compound import __version__
from compound.coordinator.contributor_store import ContributorRow
from compound.coordinator.follow import follow_job
from compound.coordinator.socket import send_until_disconnect
from compound.coordinator.state import CoordinatorState, get_state
from compound.coordinator.store import JobRow
from compound.coordinator.submission import JobSubmission, read_submission
from compound.protocol import CLOSE_NORMAL, CLOSE_UNKNOWN_JOB, JobStatus, JobView, serialize

log = logging.getLogger("compound.coordinator")

router = APIRouter()
State = Annotated[CoordinatorState, Depends(get_state)]


def new_job_id() -> str:
    return uuid.uuid4().hex[:16]


async def submit(request: Request, state: CoordinatorState) -> JobRow:
    """Shared by POST /api/v1/jobs and the seed's POST /submit-job."""
    new = await read_submission(request, state.settings)
    job = await state.store.create_job(new_job_id(), new)
    log.info("job %s queued (%d bytes)", job.id, len(new.script))
    await state.scheduler.dispatch()
    return job


async def _job_or_404(state: CoordinatorState, job_id: str) -> JobRow:
    job = await state.store.get_job(job_id)
    if job is None:
        raise HTTPException(404, f"no job with id {job_id!r}")
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
async def create_job(request: Request, state: State) -> JobView:
    """Queue a Python script. It starts as soon as a contributor is idle."""
    job = await submit(request, state)
    return await state.store.view_job(job)


@router.get("/api/v1/jobs")
async def list_jobs(
    state: State, limit: Annotated[int, Query(ge=1, le=1000)] = 50
) -> dict[str, Any]:
    """Recent jobs, newest first."""
    return {"jobs": [view.model_dump() for view in await state.store.list_jobs(limit)]}


@router.get("/api/v1/jobs/{job_id}", response_model=JobView)
async def get_job(job_id: str, state: State) -> JobView:
    return await state.store.view_job(await _job_or_404(state, job_id))


@router.get("/api/v1/jobs/{job_id}/logs")
async def get_logs(
    job_id: str,
    state: State,
    after: Annotated[int, Query(ge=-1)] = -1,
    limit: Annotated[int, Query(ge=1, le=20000)] = 5000,
) -> dict[str, Any]:
    """Log records with seq > after. ``complete``: the job is over and nothing follows."""
    job = await _job_or_404(state, job_id)
    records = await state.store.read_logs(job_id, after, limit)
    last_seq = records[-1].seq if records else after
    complete = job.status.is_terminal and last_seq >= job.last_seq
    return {
        "records": [record.model_dump() for record in records],
        "last_seq": last_seq,
        "complete": complete,
        "job": (await state.store.view_job(job)).model_dump(),
    }


@router.post("/api/v1/jobs/{job_id}/cancel", status_code=202, response_model=JobView)
async def cancel_job(job_id: str, state: State) -> JobView:
    """Cancel a job: at once if it is queued, after its container stopped if it runs."""
    job = await _job_or_404(state, job_id)
    if job.status.is_terminal:
        raise HTTPException(409, f"job {job_id} already ended ({job.status.value})")
    return await state.store.view_job(await state.scheduler.cancel(job))


@router.get("/api/v1/contributors")
async def list_contributors(state: State) -> dict[str, Any]:
    rows = await state.store.contributors.list()
    return {"contributors": [_contributor_view(row) for row in rows]}


def _contributor_view(row: ContributorRow) -> dict[str, Any]:
    view = dict(row.__dict__)
    view["state"] = row.state.value
    return view


@router.get("/healthz")
async def healthz(state: State) -> dict[str, Any]:
    counts = await state.store.count_by_status()
    return {
        "status": "ok",
        "version": __version__,
        "queued": counts.get(JobStatus.QUEUED.value, 0),
        "running": counts.get(JobStatus.RUNNING.value, 0),
        "contributors_online": len(state.sessions),
    }


@router.websocket("/api/v1/jobs/{job_id}/follow")
async def follow(websocket: WebSocket, job_id: str, after: int = -1) -> None:
    """Status, every log record after ``after`` exactly once, then ``end``."""
    state = get_state(websocket)
    await websocket.accept()
    messages = (serialize(message) async for message in follow_job(state, job_id, max(after, -1)))
    if await state.store.get_job(job_id) is None:
        await websocket.close(code=CLOSE_UNKNOWN_JOB, reason="unknown job")
        return
    if await send_until_disconnect(websocket, messages):
        await websocket.close(code=CLOSE_NORMAL)
