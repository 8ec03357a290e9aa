"""Connected contributors: one session per open /ws/contributor socket."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from pydantic import BaseModel
from starlette.websockets import WebSocket

from compound.protocol import serialize

log = logging.getLogger("compound.coordinator")


@dataclass(eq=False)
class ContributorSession:
    contributor_id: str
    name: str
    websocket: WebSocket
    # A seed agent: no hello, no sequence numbers, no leases on its side.
    legacy: bool = False
    running: set[str] = field(default_factory=set)
    connected_at: float = field(default_factory=time.monotonic)
    last_seen: float = field(default_factory=time.monotonic)
    _send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def idle(self) -> bool:
        return not self.running

    async def send(self, message: BaseModel) -> bool:
        """Send one message; False if the socket is gone (the caller's lease logic recovers)."""
        async with self._send_lock:
            try:
                await self.websocket.send_text(serialize(message))
            except Exception as exc:  # any transport failure means the peer is gone
                log.info("send to contributor %s failed: %s", self.contributor_id, exc)
                return False
        return True


class SessionRegistry:
    """Which contributors are connected now, and which of them are idle."""

    def __init__(self) -> None:
        self._sessions: dict[str, ContributorSession] = {}

    def add(self, session: ContributorSession) -> ContributorSession | None:
        """Register ``session``; returns the session it replaces (same node reconnecting)."""
        previous = self._sessions.get(session.contributor_id)
        self._sessions[session.contributor_id] = session
        return previous

    def remove(self, session: ContributorSession) -> bool:
        """Forget ``session`` unless a newer one for the same node replaced it."""
        if self._sessions.get(session.contributor_id) is session:
            del self._sessions[session.contributor_id]
            return True
        return False

    def get(self, contributor_id: str | None) -> ContributorSession | None:
        return self._sessions.get(contributor_id) if contributor_id else None

    def idle_sessions(self) -> list[ContributorSession]:
        """Idle contributors, the one idle longest first (spreads work fairly)."""
        idle = [s for s in self._sessions.values() if s.idle]
        return sorted(idle, key=lambda s: s.connected_at)

    def all(self) -> list[ContributorSession]:
        return list(self._sessions.values())

    def __len__(self) -> int:
        return len(self._sessions)
