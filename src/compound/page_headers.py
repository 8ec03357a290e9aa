"""The headers the web UI's pages and static files are served with: a strict CSP and friends.

Used by both servers of the pages: the coordinator and the desktop app's local server. The
policy lets a page load scripts, styles, fonts and images from its own origin only, run no
inline script, style or event-handler attribute and no ``eval``, talk (fetch, WebSocket) only
to its own origin, never be framed, and submit forms only to itself. So markup that slips into
a page runs nothing, and a page cannot be pointed at, or leak to, another server.

The desktop app's native window gets the same policy, ``eval`` refused too: its window
controls go through the local server's ``/local/api/window``, not through pywebview's
JS <-> Python bridge (which needs ``eval``; see ``compound.desktop.bridge``).
"""

from __future__ import annotations

import re

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# A Host header that can go into the policy verbatim: a name or an address, and a port.
_HOST = re.compile(r"^(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::\d{1,5})?$")

_FIXED = (
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self'",
    "font-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
)


def content_security_policy(host: str, scheme: str) -> str:
    """The policy for a page served to ``host`` (the Host header) over ``scheme``.

    ``connect-src 'self'`` already covers the page's own ws:/wss: origin in CSP 3 browsers;
    the origin is also named explicitly for engines that predate that rule.
    """
    connect = ["'self'"]
    if _HOST.match(host):
        connect.append(f"{'wss' if scheme in ('https', 'wss') else 'ws'}://{host}")
    return "; ".join([*_FIXED, f"connect-src {' '.join(connect)}"])


class PageHeaders:
    """ASGI wrapper for the app that serves the pages: each HTTP answer gets the headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = Headers(scope=scope).get("host", "")
        policy = content_security_policy(host, str(scope.get("scheme", "http")))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("content-security-policy", policy)
                headers.setdefault("x-content-type-options", "nosniff")
                # Same-origin only: the Back button compares the referrer with its own origin.
                headers.setdefault("referrer-policy", "same-origin")
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except HTTPException as exc:
            # StaticFiles raises its 404 and 405; answered here, they get the headers too
            # (the same JSON an API 404 is).
            refusal = JSONResponse(
                {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
            )
            await refusal(scope, receive, send_with_headers)
