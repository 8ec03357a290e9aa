"""Small WebSocket helpers shared by the coordinator's socket endpoints.

Every send and close here is bounded by a timeout, and a follower's leaving is noticed
while it waits for news, not only when the next message is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator

from starlette.websockets import WebSocket

log = logging.getLogger("compound.coordinator")

# A follower that cannot take one message (at most a page, ~256 KiB) in this long is
# dropped (the default; the coordinator's --follower-send-timeout-s); it reconnects with
# after=<last seq> and loses nothing.
SEND_TIMEOUT_S = 30.0
CLOSE_TIMEOUT_S = 5.0


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


async def close_quietly(websocket: WebSocket, code: int, reason: str = "") -> None:
    """Close with ``code``, giving up after CLOSE_TIMEOUT_S; a gone peer is not an error."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await websocket.close(code=code, reason=reason[:120])
    except Exception as exc:
        log.debug("close failed: %s", exc)


async def send_until_disconnect(
    websocket: WebSocket,
    messages: AsyncGenerator[str, None],
    send_timeout_s: float = SEND_TIMEOUT_S,
) -> bool:
    """Send every message; stop as soon as the peer goes away, or when one message is not
    taken within ``send_timeout_s``. True if all were sent."""
    sender = asyncio.create_task(_send_all(websocket, messages, send_timeout_s))
    watcher = asyncio.create_task(_wait_for_disconnect(websocket))
    try:
        await asyncio.wait({sender, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sender, watcher):
            task.cancel()
        await asyncio.gather(sender, watcher, return_exceptions=True)
        with contextlib.suppress(Exception):
            await messages.aclose()
    if sender.done() and not sender.cancelled() and sender.exception() is None:
        return sender.result()
    return False


async def _send_all(
    websocket: WebSocket, messages: AsyncGenerator[str, None], send_timeout_s: float
) -> bool:
    try:
        async for text in messages:
            # A timeout scope, not wait_for: on Python 3.11 wait_for runs each send as a
            # task of its own, and every follower sends several messages.
            async with asyncio.timeout(send_timeout_s):
                await websocket.send_text(text)
    except TimeoutError:
        # The handler returns; the server aborts the connection (serving.connections).
        log.info("follower not reading for %.0f s; dropped", send_timeout_s)
        return False
    except Exception as exc:  # a send on a socket the peer just closed
        log.debug("follower gone: %s", exc)
        return False
    return True


async def _wait_for_disconnect(websocket: WebSocket) -> None:
    # Followers have nothing to say; anything they send is ignored until they leave.
    with contextlib.suppress(PeerGone, Exception):
        while True:
            await receive_text_or_bytes(websocket)
