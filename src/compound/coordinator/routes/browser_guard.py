"""What a web page the user happens to visit may do with their coordinator: nothing.

Browsers let any page send a simple POST or open a WebSocket to any address, cookies or not,
and only hide the answer. So the coordinator refuses, with 403, every request whose
``Origin`` is neither its own nor named with ``--allow-origin``, WebSocket handshakes
included. In open mode (no tokens) it also requires a loopback ``Host``: a page on a domain
that resolves to 127.0.0.1 (DNS rebinding) is refused too.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

_LOOPBACK_NAMES = {"localhost", "localhost.", "ip6-localhost"}


class BrowserGuardMiddleware:
    def __init__(
        self, app: ASGIApp, allowed_origins: frozenset[str], check_host: bool = True
    ) -> None:
        self.app = app
        self.allowed_origins = frozenset(origin.rstrip("/") for origin in allowed_origins)
        # Off with --insecure-open: the operator chose to be reachable under other names.
        self.check_host = check_host

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        problem = self._problem(scope)
        if problem is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "http":
            await JSONResponse({"detail": problem}, status_code=403)(scope, receive, send)
        else:
            # Closing before accepting makes the server answer the handshake with 403.
            await send({"type": "websocket.close", "code": 1008, "reason": problem[:120]})

    def _problem(self, scope: Scope) -> str | None:
        headers = {name: value.decode("latin-1") for name, value in scope.get("headers", [])}
        host = headers.get(b"host", "")
        if self.check_host and not _auth_on(scope) and not is_loopback_host(host):
            return (
                f"this coordinator has no tokens and answers only to loopback names, not "
                f"{host[:80]!r}"
            )
        origin = headers.get(b"origin")
        if origin is None or origin.rstrip("/") in self.allowed_origins:
            return None
        if origin == _own_origin(scope, host):
            return None
        return f"requests from the web origin {origin[:80]!r} are not allowed (see --allow-origin)"


def _auth_on(scope: Scope) -> bool:
    state = getattr(scope["app"].state, "compound", None)
    tokens = getattr(state, "tokens", None)
    return bool(tokens is not None and tokens.auth_on)


def _own_origin(scope: Scope, host: str) -> str:
    scheme = {"ws": "http", "wss": "https"}.get(scope.get("scheme", "http"), scope["scheme"])
    return f"{scheme}://{host}"


def is_loopback_host(host: str) -> bool:
    """Whether a Host header (name or address, with or without a port) is this machine."""
    name = urlsplit(f"//{host}").hostname or ""
    if name.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
