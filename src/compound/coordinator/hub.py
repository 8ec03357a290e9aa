"""Wakes followers of a job when something about it changed.

The database is the source of truth: a follower always re-reads records after the last
sequence number it sent, so a missed or spurious wake-up can never cause a gap or a duplicate.
"""

from __future__ import annotations

import asyncio


class ChangeHub:
    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def watch(self, job_id: str) -> asyncio.Event:
        """The event set by the next change of ``job_id``; take it *before* reading state."""
        event = self._events.get(job_id)
        if event is None:
            event = self._events[job_id] = asyncio.Event()
        return event

    def notify(self, job_id: str) -> None:
        event = self._events.pop(job_id, None)
        if event is not None:
            event.set()

    def notify_all(self) -> None:
        """Queue positions moved: every follower re-reads."""
        events, self._events = self._events, {}
        for event in events.values():
            event.set()
