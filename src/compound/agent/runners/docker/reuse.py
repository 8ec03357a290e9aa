"""Containers kept after their job, each for the next job of the same submitter.

A container whose job ended by itself can take another job once its launcher has emptied
the job's folders (``/job``, ``/tmp``, ``/dev/shm``, ``/dev/mqueue``) and every process of
the job is gone: it says so in the trailer's footer (``stays``). That skips the container's
start (~0.15 s under runc, ~0.4 s under gVisor, and most of the machine's CPU per short job)
for batches and bursts, which come from one submitter. Such a container is handed only to
a job of the same tenant (the coordinator's opaque name for the job's submitter), never to
another's: what a job could leave that the launcher does not clear (System V IPC objects,
the sandbox kernel's caches) stays with its own submitter. Jobs without a tenant (an older
coordinator) always get a container of their own.

The stash knows nothing of Docker, as the warm pool: it holds at most ``size`` sandboxes,
the oldest discarded first when a new one comes, and discards any left idle ``idle_s``
(the donor gets the memory back).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class ReuseStash(Generic[K, T]):
    """At most ``size`` finished sandboxes, each for a job of the key it was kept under."""

    def __init__(
        self,
        size: int,
        usable: Callable[[T], bool],
        discard: Callable[[T], None],
        idle_s: float,
    ) -> None:
        self.size = size
        self._usable = usable
        self._discard = discard
        self._idle_s = idle_s
        # Oldest first; each with the timer that discards it once idle too long.
        self._kept: list[tuple[K, T, asyncio.TimerHandle]] = []
        # Jobs that got a kept sandbox: how tests and the bench see reuse happen.
        self.hits = 0

    def __len__(self) -> int:
        return len(self._kept)

    def keep(self, key: K, sandbox: T) -> None:
        """Hold ``sandbox`` for a job of ``key``; with no room, it or the oldest goes."""
        if self.size <= 0:
            self._discard(sandbox)
            return
        while len(self._kept) >= self.size:
            self._drop(0)
        timer = asyncio.get_running_loop().call_later(self._idle_s, self._expire, sandbox)
        self._kept.append((key, sandbox, timer))

    def take(self, key: K, only: Callable[[T], bool] | None = None) -> T | None:
        """The newest usable sandbox kept for ``key`` (and passing ``only``), now the
        caller's; None when none is."""
        for index in range(len(self._kept) - 1, -1, -1):
            kept_key, sandbox, timer = self._kept[index]
            if kept_key != key or (only is not None and not only(sandbox)):
                continue
            del self._kept[index]
            timer.cancel()
            if self._usable(sandbox):
                self.hits += 1
                return sandbox
            self._discard(sandbox)
        return None

    def sandboxes(self) -> list[T]:
        return [sandbox for _, sandbox, _ in self._kept]

    def close(self) -> None:
        """Discard every kept sandbox."""
        while self._kept:
            self._drop(0)

    def _expire(self, sandbox: T) -> None:
        for index, (_, kept, _) in enumerate(self._kept):
            if kept is sandbox:
                self._drop(index)
                return

    def _drop(self, index: int) -> None:
        _, sandbox, timer = self._kept.pop(index)
        timer.cancel()
        self._discard(sandbox)
