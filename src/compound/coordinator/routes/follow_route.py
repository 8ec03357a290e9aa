"""The follow socket (/api/v1/jobs/{job_id}/follow) opened ahead of FastAPI's router.

Every job a person or a benchmark watches opens one; in a burst of short jobs, FastAPI's
router, dependency solving and exception layers cost about as much per socket as the
follow's own work. This pure ASGI middleware hands exactly that path to the endpoint's own
function (``api.follow_answer``), so the ``after`` check, roles, ownership, follower caps and
close codes are the route's; it sits inside the browser guard, the access check and the
open-socket registry, which apply as to every socket. The path and query are read as
Starlette's router reads them (a job id is one path segment; of repeated ``after`` values the
last counts). The FastAPI route stays: it answers when this middleware is absent.
"""

from __future__ import annotations

import re

from starlette.datastructures import QueryParams
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from compound.coordinator.routes.api import follow_answer
from compound.coordinator.state import CoordinatorState

# As Starlette compiles "/api/v1/jobs/{job_id}/follow": a parameter is one path segment.
PATH = re.compile(r"^/api/v1/jobs/([^/]+)/follow$")


class FollowRouteMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = PATH.match(scope["path"]) if scope["type"] == "websocket" else None
        state: CoordinatorState | None = None
        if match is not None:
            state = getattr(scope["app"].state, "compound", None)
        if match is None or state is None:  # another route, or no state built yet
            await self.app(scope, receive, send)
            return
        after = QueryParams(scope.get("query_string", b"")).get("after", "-1")
        await follow_answer(WebSocket(scope, receive, send), state, match.group(1), after)
