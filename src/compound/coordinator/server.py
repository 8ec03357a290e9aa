"""Running the coordinator: uvicorn on the configured address, the real port announced."""

from __future__ import annotations

import asyncio
import logging
import sys

import uvicorn

from compound.coordinator.app import create_app
from compound.coordinator.settings import CoordinatorSettings
from compound.protocol import MAX_MESSAGE_BYTES


def serve(settings: CoordinatorSettings, log_level: str = "info") -> None:
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(message)s")
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        ws_max_size=MAX_MESSAGE_BYTES,
        ws_ping_interval=20,
        ws_ping_timeout=20,
        access_log=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    asyncio.run(_serve(server))


async def _serve(server: uvicorn.Server) -> None:
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            await task
            sys.exit(1)
        await asyncio.sleep(0.02)
    # Port 0 means "any free port": tell whoever started us which one we got.
    sockets = [s for srv in server.servers for s in srv.sockets]
    host, port = sockets[0].getsockname()[:2]
    print(f"Compound coordinator listening on http://{host}:{port}", flush=True)
    await task
