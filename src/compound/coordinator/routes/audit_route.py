"""`GET /api/v1/audit` (admins): the audit trail; and the edge's own entries in it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from compound.coordinator.routes.access import principal_of, require
from compound.coordinator.state import CoordinatorState, get_state
from compound.coordinator.storage.audit import AuditAction
from compound.coordinator.storage.job_rows import JobRow
from compound.protocol.auth import Role

router = APIRouter()
AUDIT_LIST_MAX = 1000


@router.get("/api/v1/audit")
async def list_audit(
    request: Request,
    state: Annotated[CoordinatorState, Depends(get_state)],
    limit: Annotated[int, Query(ge=1, le=AUDIT_LIST_MAX)] = 100,
) -> dict[str, list[dict[str, Any]]]:
    """The newest ``limit`` entries, oldest first: tokens created and revoked, cancels of
    other submitters' jobs."""
    require(request, Role.ADMIN)
    return {"entries": [entry.as_dict() for entry in await state.audit.newest(limit)]}


async def note_cancel(request: Request, state: CoordinatorState, job: JobRow) -> None:
    """A cancel of a job its caller did not submit (an admin's) goes in the audit trail."""
    principal = principal_of(request)
    if job.owner != principal.name:
        await state.audit.record(
            principal.name, AuditAction.JOB_CANCELLED, job.id, f"owner {job.owner}"
        )
