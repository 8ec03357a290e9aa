"""``/local/api/window``: the pages drive the app's native window through the local server.

The title bar's traffic lights POST an action; the self-check's page script POSTs what it
rendered; a page asks GET for the window's state (and learns that there is a native window
at all: without one, as with ``--browser``, every route answers 404). Requests pass the
local server's guard like the rest of ``/local/api`` (cookie, Host, and for a POST the
page's own origin and a JSON content type).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from compound.desktop.bridge import WindowControls, WindowNotOpen

MAX_REPORT_BYTES = 4 * 1024
NO_WINDOW = "The app runs without a window of its own (in a browser)."

router = APIRouter(prefix="/local/api/window")

# The traffic lights' actions, by the path segment the page posts to.
ACTIONS: dict[str, Callable[[WindowControls], object]] = {
    "close": WindowControls.close,
    "minimize": WindowControls.minimize,
    "restore": WindowControls.restore,
    "toggle-maximize": WindowControls.toggle_maximize,
}


def _controls(request: Request) -> WindowControls | None:
    controls: WindowControls | None = request.app.state.local.window
    return controls


def _error(status_code: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status_code)


@router.get("", response_model=None)
async def get_window(request: Request) -> dict[str, Any] | JSONResponse:
    """``{"state": "normal" | "minimized" | "maximized"}``; 404 without a native window."""
    controls = _controls(request)
    if controls is None:
        return _error(404, NO_WINDOW)
    return {"state": controls.state().value}


@router.post("/rendered", response_model=None)
async def post_rendered(request: Request) -> dict[str, Any] | JSONResponse:
    """The self-check's page script reports what it rendered (a JSON object, 4 KiB at most)."""
    controls = _controls(request)
    if controls is None:
        return _error(404, NO_WINDOW)
    body = await request.body()
    try:
        report = json.loads(body) if len(body) <= MAX_REPORT_BYTES else None
    except ValueError:
        report = None
    if not isinstance(report, dict):
        return _error(400, "Send a JSON object of at most 4 KiB.")
    controls.report_rendered(report)
    return {"state": controls.state().value}


@router.post("/{action}", response_model=None)
async def post_action(action: str, request: Request) -> dict[str, Any] | JSONResponse:
    """Close, minimise, restore or toggle-maximise the window; answers the state after it."""
    controls = _controls(request)
    if controls is None:
        return _error(404, NO_WINDOW)
    act = ACTIONS.get(action)
    if act is None:
        return _error(404, f"No window action {action!r}: use one of {', '.join(ACTIONS)}.")
    try:
        # pywebview's window calls may wait on the GUI thread: never in the event loop.
        result = await asyncio.to_thread(act, controls)
    except WindowNotOpen as exc:
        return _error(409, str(exc))
    state = result if action == "toggle-maximize" else controls.state()
    return {"state": str(state)}
