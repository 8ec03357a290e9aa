"""The coordinator behind the local server: its API and sockets, same-origin for the pages.

A coordinator refuses requests from other web origins, and the desktop pages come from
``http://127.0.0.1:PORT``. So the local server forwards ``/api/*``, ``/healthz`` and
``/submit-job`` (HTTP) and the follow and seed-submitter WebSockets to the coordinator URL in
the settings, adding ``Authorization: Bearer TOKEN`` when a token is stored for it. The
pages' own ``Authorization`` header (a token being tried) wins over the stored one.

Request bodies are streamed upstream and cut at ``MAX_BODY_BYTES`` (413); responses are
streamed back as they come. A WebSocket is pumped both ways with bounded queues, each
side's close code passed to the other; an unreachable coordinator is close 1014 (bad
gateway), which the pages treat as "try again". Neither the local session cookie nor the
page's Origin travel upstream, and tokens are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from compound.coordinators import CoordinatorList, parse_coordinators
from compound.desktop.settings import AppSettings, SettingsStore
from compound.protocol import MAX_MESSAGE_BYTES
from compound.protocol.auth import SUBPROTOCOL, token_from_subprotocols
from compound.tls import (
    TlsConfigError,
    certificate_problem,
    client_ssl_context,
    default_ca_file,
    websocket_ssl_options,
)

log = logging.getLogger(__name__)

# Far above any coordinator's script limit (JSON escaping can grow a 1 MiB script ~6x).
MAX_BODY_BYTES = 16 * 1024 * 1024
# Input files go up as one tar: the coordinator applies its own (lower) cap and answers 413.
MAX_INPUTS_BODY_BYTES = 4 * 1024 * 1024 * 1024
_INPUTS_PATH = "/api/v1/inputs"
# Messages a WebSocket side may have waiting while the other side is slow.
MAX_QUEUED_MESSAGES = 16
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0
CLOSE_BAD_GATEWAY = 1014
_UNSENDABLE_CLOSE_CODES = {1005, 1006, 1015}
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
_REQUEST_HEADERS = (
    "accept",
    "authorization",
    "content-length",
    "content-type",
    "x-compound-sha256",
)
_RESPONSE_HEADERS = (
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-length",
    "content-security-policy",
    "content-type",
    "retry-after",
    "www-authenticate",
    "x-compound-sha256",
    "x-content-type-options",
)


@dataclass
class CoordinatorProxy:
    """The upstream HTTP clients, made on first use in the server's event loop.

    https coordinators are verified with ``compound.tls.client_ssl_context``: the system
    store plus ``$COMPOUND_CA_FILE``, read when the first https request goes out.
    """

    store: SettingsStore
    # The settings' coordinators (several: tried in turn), rebuilt when the setting changes.
    _coordinators: CoordinatorList | None = field(default=None, init=False)
    _plain: httpx.AsyncClient | None = field(default=None, init=False)
    _tls: httpx.AsyncClient | None = field(default=None, init=False)
    _ssl: ssl.SSLContext | None = field(default=None, init=False)

    def ssl_context(self) -> ssl.SSLContext:
        """Raises TlsConfigError (one sentence) when the CA file cannot be used."""
        if self._ssl is None:
            self._ssl = client_ssl_context(default_ca_file())
        return self._ssl

    def coordinators(self, settings: AppSettings) -> CoordinatorList:
        """The coordinators of ``settings``, the one that worked last first."""
        urls = parse_coordinators(settings.coordinator_url)
        if self._coordinators is None or self._coordinators.urls != urls:
            self._coordinators = CoordinatorList(urls)
        return self._coordinators

    def client(self, url: str) -> httpx.AsyncClient:
        timeout = httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
        if url.startswith("https://"):
            if self._tls is None:
                self._tls = httpx.AsyncClient(
                    timeout=timeout, verify=self.ssl_context(), trust_env=False
                )
            return self._tls
        if self._plain is None:
            self._plain = httpx.AsyncClient(timeout=timeout, trust_env=False)
        return self._plain


def _proxy(connection: Request | WebSocket) -> CoordinatorProxy:
    proxy: CoordinatorProxy = connection.app.state.local.proxy
    return proxy


def _unreachable(url: str, exc: BaseException | None = None) -> str:
    problem = None
    if isinstance(exc, TlsConfigError):
        problem = str(exc)
    elif exc is not None:
        problem = certificate_problem(exc)
    if problem:
        return f"Can't reach the coordinator at {url}: {problem}."
    return f"Can't reach the coordinator at {url}. Check that it is running, then try again."


# ------------------------------------------------------------------ HTTP


class _BodyTooBig(Exception):
    pass


def _body_limit(request: Request) -> int:
    return MAX_INPUTS_BODY_BYTES if request.url.path == _INPUTS_PATH else MAX_BODY_BYTES


async def _bounded(request: Request) -> AsyncIterator[bytes]:
    size = 0
    limit = _body_limit(request)
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _BodyTooBig
        yield chunk


def _upstream_headers(request: Request, settings: AppSettings) -> dict[str, str]:
    headers = {name: request.headers[name] for name in _REQUEST_HEADERS if name in request.headers}
    token = settings.token()
    if "authorization" not in headers and token:
        headers["authorization"] = f"Bearer {token}"
    return headers


async def forward_http(request: Request) -> Response:
    """Send this request to the coordinator and stream its answer back."""
    proxy = _proxy(request)
    settings = proxy.store.load()
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > _body_limit(request):
        return _too_big()
    has_body = request.method not in ("GET", "HEAD")
    query = request.url.query
    coordinators = proxy.coordinators(settings)
    # Another coordinator of the list when one cannot be reached: a request without a body
    # whatever failed, one with a body only when its connection was refused (nothing sent).
    for tries_left in reversed(range(len(coordinators.urls))):
        coordinator = coordinators.current
        url = coordinator + request.url.path + (f"?{query}" if query else "")
        try:
            client = proxy.client(url)
        except TlsConfigError as exc:
            return JSONResponse({"detail": _unreachable(coordinator, exc)}, 502)
        upstream_request = client.build_request(
            request.method,
            url,
            headers=_upstream_headers(request, settings),
            content=_bounded(request) if has_body else None,
        )
        try:
            upstream = await client.send(upstream_request, stream=True)
        except _BodyTooBig:
            return _too_big()
        except httpx.HTTPError as exc:
            if tries_left and (not has_body or isinstance(exc, httpx.ConnectError)):
                log.warning("coordinator %s unreachable: trying the next", coordinator)
                coordinators.failed()
                continue
            return _upstream_failed(coordinator, request, exc)
        coordinators.succeeded()
        break
    headers = {k: upstream.headers[k] for k in _RESPONSE_HEADERS if k in upstream.headers}
    return StreamingResponse(
        upstream.aiter_raw(),
        status_code=upstream.status_code,
        headers=headers,
        background=BackgroundTask(upstream.aclose),
    )


def _upstream_failed(coordinator: str, request: Request, exc: httpx.HTTPError) -> JSONResponse:
    if isinstance(exc, httpx.TimeoutException):
        log.warning("coordinator %s timed out on %s", coordinator, request.url.path)
        return JSONResponse({"detail": _unreachable(coordinator)}, status_code=504)
    detail = _unreachable(coordinator, exc)
    log.warning("%s (%s)", detail, type(exc).__name__)
    return JSONResponse({"detail": detail}, status_code=502)


def _too_big() -> JSONResponse:
    detail = f"the request body is over the app's {MAX_BODY_BYTES // (1024 * 1024)} MiB limit"
    return JSONResponse({"detail": detail}, status_code=413)


# ------------------------------------------------------------------ WebSocket


def _ws_url(coordinator_url: str, websocket: WebSocket) -> str:
    scheme, rest = coordinator_url.split("://", 1)
    query = websocket.url.query
    ws_scheme = "wss" if scheme == "https" else "ws"
    return f"{ws_scheme}://{rest}{websocket.url.path}" + (f"?{query}" if query else "")


def _sendable(code: int | None, otherwise: int) -> int:
    return otherwise if code is None or code in _UNSENDABLE_CLOSE_CODES else code


async def _close_downstream(websocket: WebSocket, code: int, reason: str = "") -> None:
    with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
        await websocket.close(code=code, reason=reason[:120])


async def forward_websocket(websocket: WebSocket) -> None:
    """Open the same socket on the coordinator, then pump messages both ways until one ends."""
    proxy = _proxy(websocket)
    settings = proxy.store.load()
    offered = [str(item) for item in websocket.scope.get("subprotocols", [])]
    token = token_from_subprotocols(offered) or settings.token()
    upstream = await _connect_upstream(proxy, settings, websocket, token)
    if upstream is None:
        await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
        await _close_downstream(websocket, CLOSE_BAD_GATEWAY, "can't reach the coordinator")
        return
    async with upstream:
        await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
        await _pump(websocket, upstream)


async def _connect_upstream(
    proxy: CoordinatorProxy, settings: AppSettings, websocket: WebSocket, token: str | None
) -> ClientConnection | None:
    """The same socket on the first coordinator of the list that takes it; None if none."""
    coordinators = proxy.coordinators(settings)
    for _ in coordinators.urls:
        coordinator = coordinators.current
        url = _ws_url(coordinator, websocket)
        try:
            tls = proxy.ssl_context() if url.startswith("wss:") else None
            upstream = await connect(
                url,
                additional_headers={"Authorization": f"Bearer {token}"} if token else None,
                # The coordinator answers "compound" when it refuses a token: offer it always.
                subprotocols=[Subprotocol(SUBPROTOCOL)],
                max_size=MAX_MESSAGE_BYTES,
                max_queue=MAX_QUEUED_MESSAGES,
                open_timeout=CONNECT_TIMEOUT_S,
                **websocket_ssl_options(tls),
                compression=None,
            )
        except (OSError, TimeoutError, InvalidHandshake, TlsConfigError) as exc:
            status = exc.response.status_code if isinstance(exc, InvalidStatus) else None
            log.warning("%s (%s)", _unreachable(coordinator, exc), status or exc)
            coordinators.failed()
            continue
        coordinators.succeeded()
        return upstream
    return None


async def _pump(websocket: WebSocket, upstream: ClientConnection) -> None:
    down = asyncio.create_task(_upstream_to_browser(upstream, websocket))
    up = asyncio.create_task(_browser_to_upstream(websocket, upstream))
    try:
        await asyncio.wait({down, up}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (down, up):
            task.cancel()
        await asyncio.gather(down, up, return_exceptions=True)
        # Whichever side ended, the other one is closed too (a no-op when it already is).
        await upstream.close()
        await _close_downstream(websocket, 1001)


async def _upstream_to_browser(upstream: ClientConnection, websocket: WebSocket) -> None:
    try:
        async for message in upstream:
            if isinstance(message, str):
                await websocket.send_text(message)
            else:
                await websocket.send_bytes(message)
    except ConnectionClosed:
        pass
    except (RuntimeError, OSError, WebSocketDisconnect):
        return  # the browser is gone; the pump closes the coordinator's side
    code = _sendable(upstream.close_code, CLOSE_BAD_GATEWAY)
    await _close_downstream(websocket, code, upstream.close_reason or "")


async def _browser_to_upstream(websocket: WebSocket, upstream: ClientConnection) -> None:
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                code = _sendable(message.get("code"), 1001)
                await upstream.close(code=code, reason=str(message.get("reason") or "")[:120])
                return
            if message.get("text") is not None:
                await upstream.send(message["text"])
            elif message.get("bytes") is not None:
                await upstream.send(message["bytes"])
    except ConnectionClosed:
        return


def proxy_routes() -> list[BaseRoute]:
    """The routes that reach the coordinator through the local server."""
    return [
        Route("/api/{rest:path}", forward_http, methods=_METHODS),
        Route("/healthz", forward_http, methods=_METHODS),
        Route("/submit-job", forward_http, methods=_METHODS),
        WebSocketRoute("/api/v1/jobs/{job_id}/follow", forward_websocket),
        WebSocketRoute("/ws/submitter/{job_id}", forward_websocket),
    ]
