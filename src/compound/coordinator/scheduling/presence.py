"""Presence: what contributors' heartbeats said, kept in memory and written back in batches.

At 10,000 contributors heartbeating every 5 s, one database write per heartbeat is 2,000
write transactions a second, all queued behind the single writer: logs and dispatch would
wait on them. Whether a contributor is alive is decided in memory (its session's
``last_seen``); the database only keeps the latest figures for the contributors page, so the
scheduler's sweep writes them back in one statement every sweep, and once more on shutdown.
A crash loses at most one sweep interval of heartbeat figures, never a job or a log record.
"""

from __future__ import annotations

import time

from compound.coordinator.storage.contributors import Seen
from compound.protocol import Heartbeat


class PresenceBook:
    """Heartbeats since the last write-back: only the latest per contributor is kept."""

    def __init__(self) -> None:
        self._pending: dict[str, Seen] = {}

    def heartbeat(self, contributor_id: str, message: Heartbeat, now: float | None = None) -> None:
        self._pending[contributor_id] = Seen(
            last_seen=time.time() if now is None else now,
            cpu_percent=message.cpu_percent,
            ram_free_bytes=message.ram_free_bytes,
            ram_total_bytes=message.ram_total_bytes,
        )

    def take(self) -> dict[str, Seen]:
        """Everything pending, to be written back; empties the book."""
        pending, self._pending = self._pending, {}
        return pending

    def __len__(self) -> int:
        return len(self._pending)
