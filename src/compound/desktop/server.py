"""The local app server: the web UI plus the desktop-only ``/local/api``, on 127.0.0.1.

It listens on a random free port with a per-launch secret (see ``guard``), runs uvicorn in a
background thread, and is the only way the web pages reach the agent sidecar and settings.
It also forwards the coordinator's API and sockets (``proxy``), so the pages call their own
origin and the stored access token is added there, never handed to the pages.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import APIRouter, FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from starlette.staticfiles import StaticFiles

import compound
from compound.desktop.bridge import WindowControls
from compound.desktop.controls import control_routes
from compound.desktop.guard import LocalAccessGuard
from compound.desktop.proxy import CoordinatorProxy, proxy_routes
from compound.desktop.settings import (
    SettingsError,
    SettingsStore,
    public_view,
    settings_from_dict,
    validate_token,
)
from compound.desktop.sidecar import AgentSidecar, EventDict, SidecarError
from compound.desktop.window_routes import router as window_router
from compound.page_headers import PageHeaders

log = logging.getLogger(__name__)

WEB_DIR = Path(compound.__file__).parent / "web"
MAX_BODY_BYTES = 16 * 1024
# A WebSocket client this far behind is dropped rather than buffered without bound.
MAX_QUEUED_EVENTS = 2000
CLOSE_TRY_AGAIN_LATER = 1013
STARTUP_TIMEOUT_S = 10.0
# The largest message the pages send or receive on a proxied socket (protocol max + margin).
MAX_WS_MESSAGE_BYTES = 5 * 1024 * 1024


@dataclass
class LocalAppState:
    """Everything the local API needs, built once per launch and handed to the routes."""

    store: SettingsStore
    sidecar: AgentSidecar
    # The native window's controls; None when the app has no window (browser, serve-only).
    window: WindowControls | None = None
    proxy: CoordinatorProxy = field(init=False)

    def __post_init__(self) -> None:
        self.proxy = CoordinatorProxy(self.store)


def _state(request: Request | WebSocket) -> LocalAppState:
    state: LocalAppState = request.app.state.local
    return state


def _error(status_code: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status_code)


async def _json_object(request: Request) -> dict[str, Any] | None:
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        return None
    try:
        raw = json.loads(body or b"{}")
    except ValueError:
        return None
    return raw if isinstance(raw, dict) else None


router = APIRouter(prefix="/local/api")


@router.get("/settings")
async def get_settings(request: Request) -> dict[str, Any]:
    return public_view(_state(request).store.load())


@router.put("/settings", response_model=None)
async def put_settings(request: Request) -> dict[str, Any] | JSONResponse:
    raw = await _json_object(request)
    if raw is None:
        return _error(400, "Send a JSON object of at most 16 KiB.")
    store = _state(request).store
    try:
        settings = settings_from_dict(raw, base=store.load())
    except SettingsError as exc:
        return _error(422, str(exc))
    store.save(settings)
    return public_view(settings)


@router.put("/token", response_model=None)
async def put_token(request: Request) -> dict[str, Any] | JSONResponse:
    """Remember an access token for the current coordinator (the proxy adds it from now on)."""
    raw = await _json_object(request)
    if raw is None or "token" not in raw:
        return _error(400, 'Send a JSON object {"token": "..."} of at most 16 KiB.')
    try:
        token = validate_token(raw["token"])
    except SettingsError as exc:
        return _error(422, str(exc))
    store = _state(request).store
    settings = store.load().with_token(token)
    store.save(settings)
    return public_view(settings)


@router.delete("/token")
async def delete_token(request: Request) -> dict[str, Any]:
    """Forget the current coordinator's access token."""
    store = _state(request).store
    settings = store.load().with_token(None)
    store.save(settings)
    return public_view(settings)


@router.get("/agent")
async def get_agent(request: Request) -> dict[str, Any]:
    return _state(request).sidecar.status().as_dict()


@router.post("/agent/start", response_model=None)
async def start_agent(request: Request) -> dict[str, Any] | JSONResponse:
    state = _state(request)
    try:
        status = await asyncio.to_thread(state.sidecar.start, state.store.load())
    except SidecarError as exc:
        return _error(503, str(exc))
    return status.as_dict()


@router.post("/agent/stop")
async def stop_agent(request: Request) -> dict[str, Any]:
    status = await asyncio.to_thread(_state(request).sidecar.stop)
    return status.as_dict()


@router.websocket("/events")
async def events(websocket: WebSocket) -> None:
    """Replay the kept agent events, then stream new ones, one JSON object per message."""
    await websocket.accept()
    loop = asyncio.get_running_loop()
    # Unbounded by maxsize so the overflow marker always fits; bounded by the check below.
    queue: asyncio.Queue[EventDict | None] = asyncio.Queue()

    def enqueue(event: EventDict) -> None:
        queue.put_nowait(event if queue.qsize() < MAX_QUEUED_EVENTS else None)

    def deliver(event: EventDict) -> None:
        loop.call_soon_threadsafe(enqueue, event)

    sidecar = _state(websocket).sidecar
    replay = sidecar.subscribe(deliver)
    try:
        for event in replay:
            await websocket.send_json(event)
        await _stream(websocket, queue)
    except WebSocketDisconnect:
        pass
    finally:
        sidecar.unsubscribe(deliver)


async def _stream(websocket: WebSocket, queue: asyncio.Queue[EventDict | None]) -> None:
    while True:
        event = await queue.get()
        if event is None:
            await websocket.close(code=CLOSE_TRY_AGAIN_LATER, reason="too far behind")
            return
        await websocket.send_json(event)


def create_app(state: LocalAppState, web_dir: Path = WEB_DIR) -> FastAPI:
    """The local ASGI app without the access guard (``LocalServer`` wraps it)."""
    app = FastAPI(title="Compound desktop", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.local = state
    app.include_router(router)
    app.include_router(window_router)
    app.include_router(control_routes(state.sidecar))
    app.router.routes.extend(proxy_routes())
    # The pages' strict CSP, the same as the coordinator's (page_headers).
    pages = PageHeaders(StaticFiles(directory=web_dir, html=True))
    app.mount("/", pages, name="web")
    return app


class LocalServer:
    """uvicorn on 127.0.0.1:<random port> in a daemon thread, guarded by a launch secret."""

    def __init__(self, state: LocalAppState, web_dir: Path = WEB_DIR) -> None:
        self.secret = secrets.token_urlsafe(32)
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        guarded = LocalAccessGuard(create_app(state, web_dir), self.secret, self.port)
        config = uvicorn.Config(
            guarded,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=2,
            ws_max_size=MAX_WS_MESSAGE_BYTES,
            ws_max_queue=16,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="local-server", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def launch_url(self, path: str = "/") -> str:
        """The URL the window opens once: it carries the secret that buys the cookie."""
        return f"{self.base_url}{path}?token={self.secret}"

    def _run(self) -> None:
        self._server.run(sockets=[self._socket])

    def start(self) -> None:
        """Start serving; returns once the socket accepts requests."""
        self._thread.start()
        deadline = threading.Event()
        for _ in range(int(STARTUP_TIMEOUT_S / 0.02)):
            if self._server.started or not self._thread.is_alive():
                break
            deadline.wait(0.02)
        if not self._server.started:
            raise RuntimeError("The local app server did not start.")

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        with contextlib.suppress(OSError):
            self._socket.close()
