"""Sandboxes started ahead of demand, each handed to exactly one job.

The pool knows nothing of Docker: it is given how to start a sandbox for a key, how to tell
whether an idle one is still usable, and how to discard one. It holds at most ``size`` idle
sandboxes (counting the one being started), all of the key it was last asked to refill
with; any of another key is discarded as soon as that changes, so a new image, new limits
or another dependency directory never meet a container made for the old ones. A sandbox
that died while idle is discarded at ``take``, and the caller starts a fresh one: the pool
can make a job faster, never make it fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


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
        self._filling: asyncio.Task[None] | None = None
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
            assert self._filling is not None
            self._added.clear()
            added = asyncio.create_task(self._added.wait())
            try:
                await asyncio.wait({self._filling, added}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                added.cancel()
            sandbox = self.take(key)
        return sandbox

    def _refilling(self, key: K) -> bool:
        filling = self._filling is not None and not self._filling.done()
        return filling and not self._closed and self._wanted == key

    def refill(self, key: K) -> None:
        """Start, in the background, idle sandboxes of ``key`` up to ``size``."""
        if self._closed or self.size <= 0:
            return
        self._wanted = key
        self._drain_other(key)
        if self._filling is None or self._filling.done():
            self._filling = asyncio.create_task(self._fill(), name="warm-pool-fill")

    async def filled(self) -> None:
        """Wait until the background refill (if any) is over: the deterministic mode for tests."""
        while self._filling is not None and not self._filling.done():
            await asyncio.wait({self._filling})

    async def close(self) -> None:
        """Stop refilling and discard every idle sandbox; the pool stays empty after."""
        self._closed = True
        if self._filling is not None:
            self._filling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._filling
        self._drain_other(None)

    def _drain_other(self, key: K | None) -> None:
        keep = [(k, sandbox) for k, sandbox in self._idle if k == key]
        for k, sandbox in self._idle:
            if k != key:
                self._discard(sandbox)
        self._idle = keep

    async def _fill(self) -> None:
        while not self._closed and self._wanted is not None and len(self._idle) < self.size:
            key = self._wanted
            try:
                sandbox = await self._start(key)
            except Exception as exc:  # the engine's trouble shows again in the next job
                # One attempt per refill: a broken engine must not be hammered in a loop.
                log.warning("could not start a warm sandbox: %s", exc)
                return
            if self._closed or key != self._wanted:
                self._discard(sandbox)
                continue
            self._idle.append((key, sandbox))
            self._added.set()
