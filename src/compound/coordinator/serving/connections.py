"""Bounds on client connections: deadlines for request headers and bodies, and a cap on open
connections.

uvicorn accepts every connection and waits for ever for its first request, so clients that
connect and never finish their headers pile up until the process runs out of file
descriptors. `ConnectionGuard` counts every open connection (plain HTTP and WebSocket) and:

- closes a connection whose request headers are not complete `header_timeout_s` after its
  first byte (or after connecting), answering 408;
- closes a connection whose request body does not keep coming: it has `body_timeout_s`,
  plus a second for every `BODY_MIN_BYTES_PER_S` bytes received (Apache's mod_reqtimeout
  rule), so a client trickling a body cannot hold a slot for ever. While the application
  has not taken what came (uvicorn paused reading, or awaits its `100 Continue`), the wait
  is ours and the clock starts over;
- at `max_connections`, makes room by closing the oldest connection still waiting for its
  headers (the likely culprit of a flood), so a prompt client such as a /healthz probe still
  gets in; only when every slot holds a real request or socket is a newcomer refused, with
  a 503 and a one-sentence JSON detail;
- keeps `reserved_for_http` slots that WebSockets cannot take, so API calls and /healthz
  keep working when many sockets are open.

The guard works through subclasses of uvicorn's httptools and websockets-sansio protocols
(`protocol_classes`), handed to `uvicorn.Config(http=..., ws=...)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from typing import Any, ClassVar, Protocol

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

log = logging.getLogger("compound.coordinator")

AT_CAPACITY = "The coordinator is at its connection limit; try again shortly."
HEADERS_TOO_SLOW = "The request headers did not arrive in time."
BODY_TOO_SLOW = "The request body did not arrive in time."
# Once a WebSocket's handler is done, its peer gets this long to take what is still buffered
# (a close frame, the last page) before the connection is aborted.
CLOSE_LINGER_S = 2.0
# A request body slower than this on average, past its first `body_timeout_s`, is dropped.
BODY_MIN_BYTES_PER_S = 500


class Waiting(Protocol):
    """A connection the guard counts and may drop: an HTTP one, or one in its TLS handshake."""

    @property
    def transport(self) -> asyncio.Transport: ...

    def refuse(self, status: int, detail: str) -> None: ...


class ConnectionGuard:
    """The set of open connections and the rules for admitting new ones."""

    def __init__(
        self, max_connections: int, header_timeout_s: float, body_timeout_s: float = 20.0
    ) -> None:
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        self.body_timeout_s = body_timeout_s
        self.reserved_for_http = max(1, min(64, max_connections // 16))
        self._open: set[asyncio.BaseTransport] = set()
        self._websockets: set[asyncio.BaseTransport] = set()
        # Connections waiting for request headers (or a TLS handshake), oldest first.
        self._waiting: dict[Waiting, None] = {}

    @property
    def open_count(self) -> int:
        return len(self._open)

    def admit(self, protocol: Waiting) -> bool:
        """Count a new connection in; False if it must be refused."""
        if len(self._open) >= self.max_connections:
            if not self._waiting:
                log.warning("connection limit (%d) reached: refusing", self.max_connections)
                return False
            oldest = next(iter(self._waiting))
            log.warning(
                "connection limit (%d) reached: closed the oldest connection still "
                "waiting for its request headers",
                self.max_connections,
            )
            oldest.refuse(503, AT_CAPACITY)
        self._open.add(protocol.transport)
        return True

    def waiting(self, protocol: Waiting) -> None:
        self._waiting[protocol] = None

    def done_waiting(self, protocol: Waiting) -> None:
        self._waiting.pop(protocol, None)

    def may_upgrade(self) -> bool:
        """Whether one more WebSocket fits outside the slots kept for plain HTTP."""
        return len(self._websockets) < self.max_connections - self.reserved_for_http

    def upgraded(self, transport: asyncio.BaseTransport) -> None:
        self._websockets.add(transport)

    def release(self, transport: asyncio.BaseTransport) -> None:
        self._open.discard(transport)
        self._websockets.discard(transport)


def http_response(status: int, reason: str, detail: str) -> bytes:
    """A complete HTTP/1.1 response with a JSON `detail`, closing the connection."""
    body = json.dumps({"detail": detail}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


_REASONS = {408: "Request Timeout", 503: "Service Unavailable"}


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with header and body deadlines and a place in the guard."""

    guard: ClassVar[ConnectionGuard]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        # Since when the body has been the client's to send, and how much came since.
        self._body_since = 0.0
        self._body_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        _limit_send_buffer(transport)
        if not self.guard.admit(self):
            self.refuse(503, AT_CAPACITY)
            return
        self._await_headers()

    def data_received(self, data: bytes) -> None:
        # A new request on a kept-alive connection gets the same deadline as the first.
        between_requests = self.cycle is None or self.cycle.response_complete
        if self._header_timer is None and between_requests and not self.transport.is_closing():
            self._await_headers()
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._stop_waiting()
        super().on_headers_complete()
        if not (self.parser.should_upgrade() and self._should_upgrade()):
            self._start_body_clock()

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._stop_body_clock()
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        self._stop_body_clock()
        if not self.guard.may_upgrade():
            log.warning("WebSocket limit reached: refusing an upgrade")
            self.refuse(503, AT_CAPACITY)
            return
        self.guard.upgraded(self.transport)
        super().handle_websocket_upgrade()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        self._stop_body_clock()
        self.guard.release(self.transport)
        super().connection_lost(exc)

    def refuse(self, status: int, detail: str) -> None:
        """Answer `status` with a one-sentence detail and close."""
        self._stop_waiting()
        if not self.transport.is_closing():
            self.transport.write(http_response(status, _REASONS[status], detail))
            self.transport.close()

    def _await_headers(self) -> None:
        self.guard.waiting(self)
        self._header_timer = self.loop.call_later(
            self.guard.header_timeout_s, self.refuse, 408, HEADERS_TOO_SLOW
        )

    def _stop_waiting(self) -> None:
        self.guard.done_waiting(self)
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _start_body_clock(self) -> None:
        self._stop_body_clock()
        self._body_since, self._body_bytes = self.loop.time(), 0
        self._body_timer = self.loop.call_later(self.guard.body_timeout_s, self._check_body)

    def _stop_body_clock(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _check_body(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if cycle is None or not cycle.more_body or self.transport.is_closing():
            return
        now = self.loop.time()
        if self.flow.read_paused or cycle.body or cycle.waiting_for_100_continue:
            # The application has not taken what came: the wait is not the client's.
            self._body_since, self._body_bytes = now, 0
        allowed = self.guard.body_timeout_s + self._body_bytes / BODY_MIN_BYTES_PER_S
        deadline = self._body_since + allowed
        if now < deadline:
            self._body_timer = self.loop.call_later(deadline - now, self._check_body)
        elif cycle.response_started:
            self.transport.close()
        else:
            self.refuse(408, BODY_TOO_SLOW)


class GuardedWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets protocol, giving its slot back to the guard when it closes,
    sending no keepalive pings on `unpinged_paths`, and aborting a connection whose peer
    does not read once its handler is done."""

    guard: ClassVar[ConnectionGuard]
    # Sockets whose peers prove they are alive on their own (contributors heartbeat, and
    # the scheduler's silence sweep closes one that stops, dead TCP peer included): a ping
    # timer each is 500 timers, pings and pongs a second at 10,000 contributors for nothing.
    unpinged_paths: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._linger_timer: asyncio.TimerHandle | None = None

    def start_keepalive(self) -> None:
        if self.scope["path"] in self.unpinged_paths:
            return
        super().start_keepalive()

    async def run_asgi(self) -> None:
        await super().run_asgi()
        # The handler is done (a follower dropped for not reading, say). A transport's
        # close waits for its buffered bytes to go out: a peer that never reads would keep
        # the descriptor for ever.
        if not self.disconnected:
            self._linger_timer = self.loop.call_later(CLOSE_LINGER_S, self._abort_if_stuck)

    def _abort_if_stuck(self, final: bool = False) -> None:
        self._linger_timer = None
        if self.disconnected:
            return
        if final or self.transport.get_write_buffer_size() > 0:
            log.info("WebSocket peer not reading after its handler ended; aborted")
            self.transport.abort()
            return
        # Nothing buffered here (a TLS transport may hold it below, though): the peer's
        # close reply has uvicorn's close timeout to come, and then this is over anyway.
        self._linger_timer = self.loop.call_later(self.close_timeout, self._abort_if_stuck, True)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        self.guard.release(self.transport)
        super().connection_lost(exc)


def protocol_classes(
    guard: ConnectionGuard, unpinged_paths: frozenset[str] = frozenset()
) -> tuple[type[GuardedHttpProtocol], type[GuardedWebSocketProtocol]]:
    """HTTP and WebSocket protocol classes for `uvicorn.Config`, bound to `guard`; WebSockets
    on `unpinged_paths` get no keepalive pings."""
    http = type("GuardedHttp", (GuardedHttpProtocol,), {"guard": guard})
    attributes = {"guard": guard, "unpinged_paths": unpinged_paths}
    ws = type("GuardedWebSocket", (GuardedWebSocketProtocol,), attributes)
    return http, ws


# The kernel's send buffer on loopback grows to megabytes: a follower that never reads would
# make us read and encode that much of a log before its sends block. A bounded buffer keeps
# what a stalled peer costs to a few pages.
SEND_BUFFER_BYTES = 256 * 1024


def _limit_send_buffer(transport: asyncio.Transport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
