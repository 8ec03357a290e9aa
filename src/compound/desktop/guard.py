"""Access control for the local app server: per-launch token, session cookie, Host check.

The window opens ``http://127.0.0.1:PORT/?token=SECRET``. A request carrying the right token
gets an HttpOnly, SameSite=Strict cookie and a redirect to the same URL without the token;
from then on every HTTP request and WebSocket handshake needs that cookie (else 403). The
Host header must name this server exactly (127.0.0.1:PORT or localhost:PORT, else 400), so
a DNS-rebound hostname cannot reach the API from a web page, and a WebSocket must come from
one of those origins.

The cookie alone does not stop cross-site request forgery here: a site ignores ports, so a
page on any other 127.0.0.1 port is "same-site" and its requests carry a SameSite=Strict
cookie. So every state-changing request (POST, PUT, PATCH, DELETE) must also come from this
server's own origin when the browser says where it comes from (``Origin``; ``Sec-Fetch-Site``
must then be ``same-origin``), else 403; and it may not have a content type a page can send
without a CORS preflight (``text/plain``, form encodings), else 415: the pages send JSON or
bytes with a type of their own. A client that is not a browser sends neither header and
still needs the cookie.
"""

from __future__ import annotations

import secrets
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, urlencode

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

COOKIE_NAME = "compound_session"
TOKEN_PARAM = "token"
CLOSE_POLICY_VIOLATION = 1008
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# What an HTML form or a no-cors fetch may send without a preflight (the CORS "simple" types).
SIMPLE_CONTENT_TYPES = frozenset(
    {"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"}
)


class LocalAccessGuard:
    """Pure ASGI middleware; ``port`` is set once the server socket is bound."""

    def __init__(self, app: ASGIApp, secret: str, port: int) -> None:
        self.app = app
        self.secret = secret
        self.port = port

    def allowed_hosts(self) -> frozenset[str]:
        return frozenset({f"127.0.0.1:{self.port}", f"localhost:{self.port}"})

    def allowed_origins(self) -> frozenset[str]:
        return frozenset(f"http://{host}" for host in self.allowed_hosts())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = self._refusal(scope, headers)
        if refusal is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            # Closing before accept makes the server answer the handshake with 403.
            await send({"type": "websocket.close", "code": CLOSE_POLICY_VIOLATION})
        else:
            await refusal(scope, receive, send)

    def _refusal(self, scope: Scope, headers: Headers) -> Response | None:
        """The response that refuses this request, or None when it may pass."""
        if headers.get("host", "") not in self.allowed_hosts():
            return PlainTextResponse("Bad Host header.", status_code=400)
        if scope["type"] == "websocket":
            origin = headers.get("origin")
            if origin is not None and origin not in self.allowed_origins():
                return PlainTextResponse("Forbidden origin.", status_code=403)
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            refusal = self._write_refusal(headers)
            if refusal is not None:
                return refusal
        if self._has_cookie(headers):
            return None
        if scope["type"] == "http" and self._has_token(scope):
            return self._grant(scope)
        return PlainTextResponse("Forbidden: open the app from its own window.", status_code=403)

    def _write_refusal(self, headers: Headers) -> Response | None:
        """Refuse a state-changing request another origin (another port included) could send."""
        origin = headers.get("origin")
        if origin is not None and origin not in self.allowed_origins():
            return PlainTextResponse("Forbidden origin.", status_code=403)
        fetch_site = headers.get("sec-fetch-site")
        if fetch_site is not None and fetch_site != "same-origin":
            return PlainTextResponse("Forbidden: not from this app's pages.", status_code=403)
        content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if content_type in SIMPLE_CONTENT_TYPES:
            return PlainTextResponse("Send JSON (application/json).", status_code=415)
        return None

    def _has_cookie(self, headers: Headers) -> bool:
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header is simply no cookie
            return False
        morsel = cookie.get(COOKIE_NAME)
        return morsel is not None and secrets.compare_digest(morsel.value, self.secret)

    def _has_token(self, scope: Scope) -> bool:
        query = scope.get("query_string", b"").decode("latin-1")
        token = dict(parse_qsl(query)).get(TOKEN_PARAM, "")
        return secrets.compare_digest(token, self.secret)

    def _grant(self, scope: Scope) -> Response:
        """Set the session cookie and redirect to the same URL without the token."""
        query = scope.get("query_string", b"").decode("latin-1")
        rest = [(k, v) for k, v in parse_qsl(query) if k != TOKEN_PARAM]
        target = scope.get("path", "/") + (f"?{urlencode(rest)}" if rest else "")
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            COOKIE_NAME, self.secret, httponly=True, samesite="strict", path="/", secure=False
        )
        response.headers["cache-control"] = "no-store"
        return response
