"""`GET /metrics`: the Prometheus text exposition, for loopback clients and admin tokens.

The counters were moved as things happened; the levels are read here, at scrape time, from
the in-memory state (scheduler, sessions, followers, open sockets) plus one indexed read of
the oldest queued job's submission time.
"""

from __future__ import annotations

import ipaddress
import time
from collections import Counter

from fastapi import APIRouter, HTTPException, Request, Response

from compound.coordinator.routes.access import PRINCIPAL_KEY
from compound.coordinator.serving.metrics import CONTENT_TYPE, Snapshot
from compound.coordinator.state import CoordinatorState, state_of
from compound.coordinator.storage.tokens import Principal

router = APIRouter()
_FORBIDDEN = "metrics are for loopback clients and admin tokens"


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    if not _may_scrape(request):
        raise HTTPException(403, _FORBIDDEN)
    state = state_of(request)
    snapshot = await _snapshot(request, state)
    return Response(state.metrics.render(snapshot), media_type=CONTENT_TYPE)


def _may_scrape(request: Request) -> bool:
    principal: Principal | None = request.scope.get(PRINCIPAL_KEY)
    if principal is not None and principal.is_admin and principal.authenticated:
        return True
    client = request.client
    try:
        return client is not None and ipaddress.ip_address(client.host).is_loopback
    except ValueError:
        return False


async def _snapshot(request: Request, state: CoordinatorState) -> Snapshot:
    scheduler = state.scheduler
    lending: Counter[str] = Counter()
    busy = idle = 0
    for session in state.sessions.all():
        lending[session.lending.value] += 1
        held = min(len(scheduler.leases_of(session.contributor_id)), session.slots)
        busy += held
        idle += session.slots - held
    oldest_age_s = 0.0
    oldest = scheduler.oldest_queued()
    job = await state.jobs.get(oldest) if oldest is not None else None
    if job is not None:
        oldest_age_s = max(0.0, time.time() - job.created_at)
    app_state = request.app.state
    connections = getattr(app_state, "connections", None)
    sockets = getattr(app_state, "open_sockets", None)
    return Snapshot(
        queued=scheduler.count_queued(),
        running=scheduler.job_counts.get("running", 0),
        oldest_queued_age_s=oldest_age_s,
        contributors=dict(lending),
        slots_busy=busy,
        slots_idle=idle,
        http_connections=connections.open_count if connections is not None else 0,
        websockets=sockets.count if sockets is not None else 0,
        followers=state.followers.open,
    )
