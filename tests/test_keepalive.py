"""Keepalive pings: none on contributor sockets (heartbeats prove liveness), kept elsewhere.

A real uvicorn server on port 0 with the coordinator's own protocol classes and a short ping
interval; the client is websockets' sans-I/O protocol over a plain socket, so every frame
the server sends, pings included, is seen as it is.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.uri import parse_uri

from compound.coordinator.server import UNPINGED_PATHS
from uvicorn_thread import serving_in_thread

PING_INTERVAL_S = 0.2
pytestmark = pytest.mark.timeout(30)


async def _hold_open(websocket: WebSocket) -> None:
    await websocket.accept()
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass


@contextmanager
def server() -> Iterator[int]:
    """A uvicorn server with the coordinator's protocol classes; yields its port."""
    app = Starlette(
        routes=[
            WebSocketRoute("/ws/contributor", _hold_open),
            WebSocketRoute("/api/v1/jobs/x/follow", _hold_open),
        ]
    )
    with serving_in_thread(
        app,
        UNPINGED_PATHS,
        lifespan="off",
        ws_ping_interval=PING_INTERVAL_S,
        ws_ping_timeout=PING_INTERVAL_S * 10,
    ) as port:
        yield port


def frames_received(port: int, path: str, seconds: float) -> list[Frame]:
    """Open a WebSocket on ``path``, read for ``seconds`` (answering pings), return the frames."""
    protocol = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}{path}"))
    frames: list[Frame] = []
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        protocol.send_request(protocol.connect())
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for data in protocol.data_to_send():
                sock.sendall(data)
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            assert chunk, "the server closed the connection"
            protocol.receive_data(chunk)
            frames += [event for event in protocol.events_received() if isinstance(event, Frame)]
    return frames


def pings(frames: list[Frame]) -> int:
    return sum(frame.opcode is Opcode.PING for frame in frames)


def test_contributor_sockets_get_no_pings_while_other_sockets_do() -> None:
    """/ws/contributor gets no keepalive pings; a follow socket on the same server does."""
    with server() as port:
        assert pings(frames_received(port, "/api/v1/jobs/x/follow", PING_INTERVAL_S * 6)) >= 2
        assert pings(frames_received(port, "/ws/contributor", PING_INTERVAL_S * 6)) == 0
