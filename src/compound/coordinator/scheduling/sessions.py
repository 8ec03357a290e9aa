"""Connected contributors: one session per open /ws/contributor socket.

Nothing outside this module waits on a contributor's socket. ``send`` only queues; one
writer task per session sends in order, each send bounded by a timeout. A contributor that
stops reading fills its queue or times a send out and is closed, so the dispatcher, the
sweeper and the other contributors never wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from pydantic import BaseModel
from starlette.websockets import WebSocket

from compound.coordinator.scheduling.listings import Listings
from compound.coordinator.scheduling.waiting import LendingCounts
from compound.protocol import CLOSE_POLICY, Lending, serialize

log = logging.getLogger("compound.coordinator")

SEND_TIMEOUT_S = 30.0
CLOSE_TIMEOUT_S = 5.0
# Messages waiting for a contributor; acks are small, a job is at most one message limit.
MAX_QUEUED_MESSAGES = 1024


@dataclass(eq=False)
class ContributorSession:
    contributor_id: str
    name: str
    websocket: WebSocket
    # A seed agent: no hello, no sequence numbers, no leases on its side.
    legacy: bool = False
    # It installs jobs' Python packages (hello's ``deps``): only then does it get jobs with
    # requirements.
    deps: bool = False
    # Jobs it runs at once (hello's ``slots``): it stays idle until it holds this many leases.
    slots: int = 1
    # What it lends now (its hello, then availability messages): only an active one gets jobs.
    lending: Lending = Lending.ACTIVE
    lending_reason: str | None = None
    connected_at: float = field(default_factory=time.monotonic)
    last_seen: float = field(default_factory=time.monotonic)
    closed: bool = False
    # The leases its heartbeats list: a job it stops listing is given back.
    listings: Listings = field(default_factory=Listings)
    _outbox: asyncio.Queue[str] = field(default_factory=lambda: asyncio.Queue(MAX_QUEUED_MESSAGES))
    _writer: asyncio.Task[None] | None = None
    _closer: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write_forever(), name=f"to-{self.name}")

    def send(self, message: BaseModel) -> bool:
        """Queue one message; False if the session is closed or its peer stopped reading."""
        if self.closed:
            return False
        try:
            self._outbox.put_nowait(serialize(message))
        except asyncio.QueueFull:
            self.close(CLOSE_POLICY, "not reading its messages")
            return False
        return True

    def close(self, code: int, reason: str) -> None:
        """Close the socket in the background, bounded by a timeout; idempotent."""
        if self.closed:
            return
        self.closed = True
        if self._writer is not None:
            self._writer.cancel()
        self._closer = asyncio.create_task(self._close(code, reason), name=f"close-{self.name}")

    async def wait_closed(self) -> None:
        """Let the writer and closer tasks finish (the handler calls this on its way out)."""
        if self._writer is not None:
            self._writer.cancel()
        tasks = [task for task in (self._writer, self._closer) if task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _close(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                self.websocket.close(code=code, reason=reason[:120]), CLOSE_TIMEOUT_S
            )

    async def _write_forever(self) -> None:
        while True:
            text = await self._outbox.get()
            try:
                await asyncio.wait_for(self.websocket.send_text(text), SEND_TIMEOUT_S)
            except TimeoutError:
                log.warning("contributor %s is not reading; closing", self.name)
                self.close(CLOSE_POLICY, "not reading its messages")
                return
            except Exception as exc:  # any transport failure means the peer is gone
                log.info("send to contributor %s failed: %s", self.contributor_id, exc)
                self.closed = True
                return


class SessionRegistry:
    """Which contributors are connected now, and which of them have gone silent.

    Besides the sessions by contributor id, the registry keeps them in the order they were
    last heard from (``heard`` moves one to the back: a dict delete and insert), so finding
    the silent ones walks only those and stops at the first that is not: the sweep costs
    what changed, not a pass over 10,000 sessions every second. For the same reason it
    counts the registered sessions by what they lend (``counts``), as they come, go and
    change (``set_lending``).
    """

    def __init__(self) -> None:
        self._sessions: dict[str, ContributorSession] = {}
        self.counts = LendingCounts()
        # Registered sessions, least recently heard from first; values unused.
        self._by_last_seen: dict[ContributorSession, None] = {}

    def add(self, session: ContributorSession) -> ContributorSession | None:
        """Register ``session``; returns the session it replaces (same node reconnecting)."""
        previous = self._sessions.get(session.contributor_id)
        if previous is not None:
            self._by_last_seen.pop(previous, None)
            self.counts.count(previous.lending, previous.deps, -1)
        self._sessions[session.contributor_id] = session
        self.counts.count(session.lending, session.deps, 1)
        # Silence counts from registration: a hello that waited on our database for long
        # is not the contributor's silence.
        self.heard(session)
        return previous

    def remove(self, session: ContributorSession) -> bool:
        """Forget ``session`` unless a newer one for the same node replaced it."""
        if self._sessions.get(session.contributor_id) is session:
            del self._sessions[session.contributor_id]
            self._by_last_seen.pop(session, None)
            self.counts.count(session.lending, session.deps, -1)
            return True
        return False

    def set_lending(
        self, session: ContributorSession, lending: Lending, reason: str | None
    ) -> None:
        """``session`` lends ``lending`` from now on (``reason``: why, as its agent said)."""
        registered = self._sessions.get(session.contributor_id) is session
        if registered:
            self.counts.count(session.lending, session.deps, -1)
        session.lending, session.lending_reason = lending, reason
        if registered:
            self.counts.count(session.lending, session.deps, 1)

    def heard(self, session: ContributorSession, now: float | None = None) -> None:
        """``session`` said something at ``now`` (time.monotonic()); a session that is not
        registered (replaced, or gone) only has its ``last_seen`` set."""
        session.last_seen = time.monotonic() if now is None else now
        if self._sessions.get(session.contributor_id) is session:
            self._by_last_seen.pop(session, None)
            self._by_last_seen[session] = None

    def silent(self, now: float, timeout_s: float) -> list[ContributorSession]:
        """The registered sessions not heard from for more than ``timeout_s``, least recent
        first; they stay registered until removed."""
        found: list[ContributorSession] = []
        for session in self._by_last_seen:
            if now - session.last_seen <= timeout_s:
                break
            found.append(session)
        return found

    def get(self, contributor_id: str | None) -> ContributorSession | None:
        return self._sessions.get(contributor_id) if contributor_id else None

    def all(self) -> list[ContributorSession]:
        return list(self._sessions.values())

    def __len__(self) -> int:
        return len(self._sessions)
