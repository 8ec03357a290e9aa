"""Who is asking, and what they may do: the edge where every request gets a principal.

An ASGI middleware resolves each request to a :class:`Principal` from its bearer token
(HTTP ``Authorization`` header, or the ``compound.bearer.TOKEN`` WebSocket subprotocol) and
refuses requests without a valid one (401 / close 4401) while auth is on. Endpoints then
ask for roles (403 / close 4403) and for ownership: another submitter's job answers exactly
as an unknown one (404 / 4404).

With no token in the data directory the coordinator is open (it then listens on loopback
only, unless started with ``--insecure-open``): everyone is an unauthenticated admin, as in
the seed.
"""

from __future__ import annotations

from fastapi import HTTPException
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from compound.coordinator.storage.tokens import Principal, TokenBook, describe_roles
from compound.protocol import CLOSE_FORBIDDEN, CLOSE_UNAUTHORIZED
from compound.protocol.auth import (
    SUBPROTOCOL,
    Role,
    token_from_authorization,
    token_from_subprotocols,
)

PRINCIPAL_KEY = "compound.principal"
# What needs a token; pages, fonts, /healthz and the API docs do not.
_PROTECTED_PREFIXES = ("/api/", "/ws/", "/submit-job")
_AUTH_REQUIRED = "a valid token is required: send Authorization: Bearer TOKEN"


class AccessMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        state = getattr(scope["app"].state, "compound", None)
        tokens: TokenBook | None = getattr(state, "tokens", None)
        offered = _offered_subprotocols(scope)
        principal = _resolve(scope, tokens, offered)
        if scope["type"] == "websocket" and SUBPROTOCOL in offered:
            send = _answering_subprotocol(send)
        if principal is None and scope["path"].startswith(_PROTECTED_PREFIXES):
            await _refuse(scope, receive, send)
            return
        if principal is not None:
            scope[PRINCIPAL_KEY] = principal
        await self.app(scope, receive, send)


def _offered_subprotocols(scope: Scope) -> list[str]:
    if scope["type"] != "websocket":
        return []
    return [str(item) for item in scope.get("subprotocols", [])]


def _resolve(scope: Scope, tokens: TokenBook | None, offered: list[str]) -> Principal | None:
    if tokens is None or not tokens.auth_on:
        client = scope.get("client")
        return Principal(client[0] if client else "unknown", Role.ADMIN, authenticated=False)
    headers = dict(scope.get("headers", []))
    raw = headers.get(b"authorization")
    token = token_from_authorization(raw.decode("latin-1") if raw else None)
    token = token or token_from_subprotocols(offered)
    return tokens.verify(token) if token else None


def _answering_subprotocol(send: Send) -> Send:
    """Browsers drop a socket whose answer names none of the subprotocols they offered."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "websocket.accept" and not message.get("subprotocol"):
            message = {**message, "subprotocol": SUBPROTOCOL}
        await send(message)

    return wrapped


async def _refuse(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        response = JSONResponse(
            {"detail": _AUTH_REQUIRED}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
        )
        await response(scope, receive, send)
        return
    websocket = WebSocket(scope, receive, send)
    await websocket.accept()
    await websocket.close(code=CLOSE_UNAUTHORIZED, reason="a valid token is required")


def principal_of(connection: HTTPConnection) -> Principal:
    principal: Principal | None = connection.scope.get(PRINCIPAL_KEY)
    if principal is None:  # a route the middleware does not protect asked anyway
        raise HTTPException(401, _AUTH_REQUIRED, headers={"WWW-Authenticate": "Bearer"})
    return principal


def require(connection: HTTPConnection, *roles: Role) -> Principal:
    """The caller, if its role is one of ``roles`` (admins always are); else 403."""
    principal = principal_of(connection)
    if principal.is_admin or principal.role in roles:
        return principal
    raise HTTPException(
        403, f"a {principal.role.value} token cannot do this: it needs {describe_roles(roles)}"
    )


async def require_on_socket(websocket: WebSocket, *roles: Role) -> Principal | None:
    """As :func:`require`, for an accepted WebSocket: None after closing it with 4403."""
    principal: Principal | None = websocket.scope.get(PRINCIPAL_KEY)
    if principal is not None and (principal.is_admin or principal.role in roles):
        return principal
    await websocket.close(code=CLOSE_FORBIDDEN, reason=f"needs a {describe_roles(roles)} token")
    return None


def may_see(principal: Principal, owner: str | None) -> bool:
    """Whether ``principal`` may see a job owned by ``owner``."""
    return principal.is_admin or (principal.role is Role.SUBMITTER and owner == principal.name)
