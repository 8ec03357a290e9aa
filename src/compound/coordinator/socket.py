"""Small WebSocket helpers shared by the coordinator's socket endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.websockets import WebSocket

log = logging.getLogger("compound.coordinator")


class PeerGone(Exception):
    """The peer closed the socket or the connection dropped."""


async def receive_text_or_bytes(websocket: WebSocket) -> str | bytes:
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        raise PeerGone
    text = message.get("text")
    if text is not None:
        return str(text)
    return bytes(message.get("bytes") or b"")


async def send_until_disconnect(websocket: WebSocket, messages: AsyncIterator[str]) -> bool:
    """Send every message; stop early if the peer goes away. True if all were sent."""
    watcher = asyncio.create_task(_wait_for_disconnect(websocket))
    try:
        async for text in messages:
            if watcher.done():
                return False
            await websocket.send_text(text)
        return True
    except Exception as exc:  # a send on a socket the peer just closed
        log.debug("follower gone: %s", exc)
        return False
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


async def _wait_for_disconnect(websocket: WebSocket) -> None:
    # Followers have nothing to say; anything they send is ignored until they leave.
    with contextlib.suppress(PeerGone, Exception):
        while True:
            await receive_text_or_bytes(websocket)
