"""An ASGI app under uvicorn, with the coordinator's protocol classes, in a thread of the test."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from compound.coordinator.serving.connections import ConnectionGuard, protocol_classes


@contextmanager
def serving_in_thread(
    app: Any, unpinged_paths: frozenset[str] = frozenset(), **config: Any
) -> Iterator[int]:
    """Serve ``app`` on a loopback port chosen by the kernel; yields the port once started.
    ``config``: more uvicorn.Config settings (lifespan, ping interval...)."""
    http, ws = protocol_classes(ConnectionGuard(64, 5.0), unpinged_paths)
    server = uvicorn.Server(uvicorn.Config(app, http=http, ws=ws, log_level="warning", **config))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    thread = threading.Thread(
        target=lambda: asyncio.run(server.serve(sockets=[listener])), daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        assert thread.is_alive(), "the server stopped while starting"
        time.sleep(0.01)
    try:
        yield listener.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(20)
