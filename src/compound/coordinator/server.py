"""Running the coordinator: uvicorn on a socket we bind ourselves, the real port announced."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys

import uvicorn

from compound.coordinator.app import create_app
from compound.coordinator.settings import CoordinatorSettings
from compound.protocol import MAX_MESSAGE_BYTES


class StartupError(Exception):
    """A sentence for the operator: why the coordinator cannot start."""


def serve(settings: CoordinatorSettings, log_level: str = "info") -> int:
    """Serve until stopped; returns the process exit code."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(message)s")
    try:
        _prepare_data_dir(settings)
        listener = _bind(settings.host, settings.port)
    except StartupError as exc:
        print(f"compound coordinator: {exc}", file=sys.stderr)
        return 1
    config = uvicorn.Config(
        create_app(settings),
        log_level=log_level,
        ws_max_size=MAX_MESSAGE_BYTES,
        ws_ping_interval=20,
        ws_ping_timeout=20,
        access_log=False,
        lifespan="on",
    )
    return asyncio.run(_serve(uvicorn.Server(config), listener))


def _prepare_data_dir(settings: CoordinatorSettings) -> None:
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        probe = settings.data_dir / ".write-test"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise StartupError(
            f"cannot use {settings.data_dir} for its database: {exc.strerror}"
        ) from None


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    listener.listen(2048)
    return listener


async def _serve(server: uvicorn.Server, listener: socket.socket) -> int:
    task = asyncio.create_task(server.serve(sockets=[listener]))
    while not server.started:
        if task.done():
            return _exit_code(task)
        await asyncio.sleep(0.02)
    # Port 0 means "any free port": tell whoever started us which one we got.
    host, port = listener.getsockname()[:2]
    print(f"Compound coordinator listening on http://{host}:{port}", flush=True)
    await asyncio.wait({task})
    return _exit_code(task)


def _exit_code(task: asyncio.Task[None]) -> int:
    # uvicorn reports a failed start-up (logged already) as SystemExit.
    error = task.exception()
    if isinstance(error, SystemExit):
        return error.code if isinstance(error.code, int) else 1
    if error is not None:
        raise error
    return 0
