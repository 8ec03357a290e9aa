"""LISTEN/NOTIFY between coordinators sharing one PostgreSQL database: hints, never truth.

One channel, two connections of their own (psycopg, autocommit): one listens, one sends.
A notification is sent after the change it announces was committed, so a coordinator
woken by it reads the change. A notification may still be lost (a connection drops, a
coordinator restarts): whoever relies on one also polls, so a lost one costs latency only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from compound.coordinator.storage import backend
from compound.coordinator.storage.peers import application_name

log = logging.getLogger("compound.coordinator")

CHANNEL = "compound_changes"
# PostgreSQL's limit on a payload is 8000 bytes.
MAX_PAYLOAD_BYTES = 7900
RECONNECT_S = 1.0


class NotifyChannel:
    def __init__(self, url: str, name: str | None = None) -> None:
        self._url = backend.libpq_url(url)
        self._sender: Any = None
        # The listening connection names its coordinator: the others see it live (``peers``).
        self._listen_url = self._url
        if name is not None:
            from psycopg.conninfo import make_conninfo

            self._listen_url = make_conninfo(self._url, application_name=application_name(name))

    async def listen(self, received: Callable[[str], None], connected: Callable[[], None]) -> None:
        """Forever (until cancelled): ``received(payload)`` for each notification;
        ``connected()`` each time listening (re)starts, since notifications sent while
        it was not listening are lost."""
        import psycopg

        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self._listen_url, autocommit=True)
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    connected()
                    async for notification in conn.notifies():
                        received(notification.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("listening to the other coordinators failed (%s); retrying", exc)
            await asyncio.sleep(RECONNECT_S)

    async def send(self, payloads: list[str]) -> None:
        """Send each payload (at most MAX_PAYLOAD_BYTES); raises if the database fails."""
        import psycopg

        if self._sender is None or self._sender.closed or self._sender.broken:
            self._sender = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
        for payload in payloads:
            await self._sender.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))

    async def close(self) -> None:
        if self._sender is not None:
            await self._sender.close()
            self._sender = None
