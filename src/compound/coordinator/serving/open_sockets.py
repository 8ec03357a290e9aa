"""Every open WebSocket, so a shutdown can close each one with a code its client understands.

An ASGI middleware registers each WebSocket connection; the endpoints need not know. On
shutdown `OpenSockets.close_all` sends each a close frame (1001, "going away") through the
connection's own ASGI `send`, then cancels the handlers that do not return by themselves,
so no client, however silent or slow, can hold the process open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect

log = logging.getLogger("compound.coordinator")

CLOSE_GOING_AWAY = 1001
# How long cancelled handlers get to unwind.
CANCEL_GRACE_S = 1.0


class OpenSocket:
    """One WebSocket connection: its ASGI `send` and the task running its handler."""

    def __init__(
        self, send: Send, task: asyncio.Task[Any] | None, token_name: str | None = None
    ) -> None:
        self._send = send
        self.task = task
        # The token the connection authenticated with, so revoking it can close the socket.
        self.token_name = token_name
        self.accepted = False
        # Set once a close frame (the handler's or ours) has gone out.
        self.closed = False
        self.stopped_by_shutdown = False

    async def send(self, message: Message) -> None:
        """The handler's `send`: passes through until shutdown has closed the socket."""
        if self.stopped_by_shutdown:
            if message["type"] == "websocket.close":
                return  # already closed for the shutdown; nothing more to say
            raise WebSocketDisconnect(CLOSE_GOING_AWAY, "coordinator shutting down")
        await self._send(message)
        self._note(message["type"])

    async def close(self, code: int, reason: str) -> None:
        """Send a close frame (or refuse a socket not yet accepted) unless one went out."""
        self.stopped_by_shutdown = True
        if self.closed:
            return
        self.closed = True
        await self._send({"type": "websocket.close", "code": code, "reason": reason})

    def _note(self, message_type: str) -> None:
        if message_type == "websocket.accept":
            self.accepted = True
        elif message_type in ("websocket.close", "websocket.http.response.start"):
            self.closed = True


class OpenSockets:
    """The coordinator's open WebSocket connections."""

    def __init__(self) -> None:
        self._sockets: set[OpenSocket] = set()

    @property
    def count(self) -> int:
        # Not __len__: an empty registry must not be falsy (`sockets or OpenSockets()`).
        return len(self._sockets)

    def add(self, socket: OpenSocket) -> None:
        self._sockets.add(socket)

    def discard(self, socket: OpenSocket) -> None:
        self._sockets.discard(socket)

    async def close_all(self, code: int, reason: str, timeout_s: float) -> None:
        """Close every open socket with `code`; handlers still running after `timeout_s`
        are cancelled. Returns within `timeout_s` + `CANCEL_GRACE_S`."""
        sockets = list(self._sockets)
        if not sockets:
            return
        log.info("closing %d WebSocket(s): %s", len(sockets), reason)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        closes = {asyncio.create_task(_close_one(s, code, reason)) for s in sockets}
        # A client that never reads can leave a close frame stuck behind a full buffer.
        _, stuck = await asyncio.wait(closes, timeout=timeout_s / 2)
        # Handlers that are not reading (waiting on a job, say) would only notice the
        # close at their next send: give them the rest of the time, then cancel them.
        handlers = {s.task for s in sockets if s.task is not None and not s.task.done()}
        pending: set[asyncio.Task[Any]] = set()
        if handlers:
            _, pending = await asyncio.wait(handlers, timeout=max(0.0, deadline - loop.time()))
        for task in pending | stuck:
            task.cancel()
        if pending | stuck:
            await asyncio.wait(pending | stuck, timeout=CANCEL_GRACE_S)

    async def close_tokens(self, names: set[str], code: int, reason: str, timeout_s: float) -> int:
        """Close the sockets opened with any of the token ``names``; returns how many."""
        sockets = [s for s in self._sockets if s.token_name in names]
        if sockets:
            await asyncio.wait(
                {asyncio.create_task(_close_one(s, code, reason)) for s in sockets},
                timeout=timeout_s,
            )
        return len(sockets)


async def _close_one(socket: OpenSocket, code: int, reason: str) -> None:
    # A socket the client or handler is closing right now may refuse a second close.
    with contextlib.suppress(Exception):
        await socket.close(code, reason)


class OpenSocketsMiddleware:
    """ASGI middleware: registers each WebSocket connection in `OpenSockets` while it runs."""

    def __init__(self, app: ASGIApp, sockets: OpenSockets) -> None:
        self.app = app
        self.sockets = sockets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        principal = scope.get("compound.principal")
        token_name = principal.name if principal is not None and principal.authenticated else None
        socket = OpenSocket(send, asyncio.current_task(), token_name)
        self.sockets.add(socket)
        try:
            await self.app(scope, receive, socket.send)
        except asyncio.CancelledError:
            # Our own cancellation (see close_all) ends the handler, not the server.
            if not socket.stopped_by_shutdown:
                raise
        except WebSocketDisconnect:
            if not socket.stopped_by_shutdown:
                raise
        finally:
            self.sockets.discard(socket)
