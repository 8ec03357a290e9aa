"""Sandboxes started ahead of demand, each handed to exactly one job.

The pool knows nothing of Docker: it is given how to start a sandbox for a key, how to tell
whether an idle one is still usable, and how to discard one. It holds at most ``size`` idle
sandboxes (counting those being started, which start side by side: the engine starts
several containers at once faster than one after the other), all of the key it was last
asked to refill with; any of another key is discarded as soon as that changes, so a new
image, new limits or another dependency directory never meet a container made for the old
ones. A sandbox that died while idle is discarded at ``take``, and the caller starts a
fresh one: the pool can make a job faster, never make it fail.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


# How long closing the pool waits for sandboxes still starting.
START_WAIT_S = 10.0


class WarmPool(Generic[K, T]):
    """At most ``size`` started, idle sandboxes of one key; ``size`` 0 holds none."""

    def __init__(
        self,
        size: int,
        start: Callable[[K], Awaitable[T]],
        usable: Callable[[T], bool],
        discard: Callable[[T], None],
    ) -> None:
        self.size = size
        self._start = start
        self._usable = usable
        self._discard = discard
        self._idle: list[tuple[K, T]] = []
        self._wanted: K | None = None
        # One task per sandbox being started; idle plus these never exceed ``size``.
        self._starting: set[asyncio.Task[None]] = set()
        self._closed = False
        # Set when the refill adds a sandbox, for jobs waiting in ``take_ready``.
        self._added = asyncio.Event()
        # Jobs that got a warm sandbox: how tests and the bench see the pool was used.
        self.hits = 0

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    def idle(self) -> list[T]:
        """The idle sandboxes, oldest first (for inspection; they stay the pool's)."""
        return [sandbox for _, sandbox in self._idle]

    def take(self, key: K) -> T | None:
        """A usable idle sandbox of ``key``, now the caller's; None when there is none."""
        self._drain_other(key)
        while self._idle:
            _, sandbox = self._idle.pop(0)
            if self._usable(sandbox):
                self.hits += 1
                return sandbox
            self._discard(sandbox)
        return None

    async def take_ready(self, key: K) -> T | None:
        """Like ``take``, but when the refill is starting one of ``key``, wait for it.

        A container half started is ready sooner than a new one, which on a busy machine
        would also slow the refill down.
        """
        sandbox = self.take(key)
        while sandbox is None and self._refilling(key):
            self._added.clear()
            added = asyncio.create_task(self._added.wait())
            try:
                await asyncio.wait({*self._starting, added}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                added.cancel()
            sandbox = self.take(key)
        return sandbox

    def _refilling(self, key: K) -> bool:
        return bool(self._starting) and not self._closed and self._wanted == key

    def refill(self, key: K) -> None:
        """Start, in the background and side by side, idle sandboxes of ``key`` up to ``size``."""
        if self._closed or self.size <= 0:
            return
        self._wanted = key
        self._drain_other(key)
        while len(self._idle) + len(self._starting) < self.size:
            task = asyncio.create_task(self._start_one(key), name="warm-pool-start")
            self._starting.add(task)
            task.add_done_callback(self._starting.discard)

    async def filled(self) -> None:
        """Wait until the background refill (if any) is over: the deterministic mode for tests."""
        while self._starting:
            await asyncio.wait(set(self._starting))

    async def close(self, start_wait_s: float = START_WAIT_S) -> None:
        """Stop refilling and discard every idle sandbox; the pool stays empty after.

        A start in flight is let finish (up to ``start_wait_s``) and its sandbox discarded:
        cancelled half-way, the engine could keep a container that nobody removes."""
        self._closed = True
        starting = set(self._starting)
        if starting:
            _, late = await asyncio.wait(starting, timeout=start_wait_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*starting, return_exceptions=True)
        self._drain_other(None)

    def _drain_other(self, key: K | None) -> None:
        keep = [(k, sandbox) for k, sandbox in self._idle if k == key]
        for k, sandbox in self._idle:
            if k != key:
                self._discard(sandbox)
        self._idle = keep

    async def _start_one(self, key: K) -> None:
        try:
            sandbox = await self._start(key)
        except Exception as exc:  # the engine's trouble shows again in the next job
            # One attempt per refill: a broken engine must not be hammered in a loop.
            log.warning("could not start a warm sandbox: %s", exc)
            return
        if self._closed or key != self._wanted:
            self._discard(sandbox)
            if not self._closed and self._wanted is not None:
                # Its place goes to one of the key now wanted.
                current = asyncio.current_task()
                if current is not None:
                    self._starting.discard(current)
                self.refill(self._wanted)
            return
        self._idle.append((key, sandbox))
        self._added.set()
