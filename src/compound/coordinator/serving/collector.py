"""When the cyclic garbage collector may stop the coordinator, and for how long.

With 10,000 contributors connected the process holds millions of objects (each connection
keeps its protocol objects, its handler's coroutine chain, its session and writer task).
CPython's full collection walks every one of them: 0.5-2 s with the event loop stopped,
every ~15 s, because each heartbeat leaves objects that live until the next one (its
pending receive, the futures it waits on): they survive the young collections, and it is
the count of those promotions, not the net growth of the heap, that triggers a full pass.
That pause was /healthz's p99 and a third of the coordinator's CPU at steady state.

:class:`CollectorPolicy` freezes the heap four times a second (``gc.freeze``: an O(1)
list splice that moves every tracked object out of the collector's view), so automatic
collections only walk what was allocated since: at most a quarter of a second's
survivors, a few milliseconds. (Once a second let young collections reach ~40 ms: the
young generation's allocation count is lowered by every old object freed, so it grows
past its nominal 700 objects when each heartbeat frees the previous one's.)

Frozen objects are still freed by reference counting; only reference cycles among them
are not. To keep memory bounded anyway, a full collection of everything (thaw, collect,
freeze again) runs when the resident size has grown by ``growth`` over what it was after
the last one: leaked cycles take memory, so they trigger their own collection, and a
steady coordinator, whose size is flat, is never stopped for a full pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
from collections.abc import Callable

log = logging.getLogger("compound.coordinator")

FREEZE_EVERY_S = 0.25
# A full collection when the resident size is this much above the last one's result...
GROWTH = 0.25
# ...and at least this many bytes above it, so a small coordinator is not collected often.
MIN_GROWTH_BYTES = 64 * 1024 * 1024
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int:
    """This process's resident set size (0 where /proc is not available)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_BYTES
    except (OSError, ValueError, IndexError):
        return 0


class CollectorPolicy:
    """Freezes the heap every tick; collects all of it when the process grew past a bound.

    ``tick`` is the whole policy (tests call it directly); ``start`` runs it every
    ``freeze_every_s`` on the running loop; ``stop`` gives the heap back to the collector.
    """

    def __init__(
        self,
        freeze_every_s: float = FREEZE_EVERY_S,
        growth: float = GROWTH,
        min_growth_bytes: int = MIN_GROWTH_BYTES,
        size: Callable[[], int] = resident_bytes,
    ) -> None:
        self.freeze_every_s = freeze_every_s
        self.growth = growth
        self.min_growth_bytes = min_growth_bytes
        self._size = size
        self._after_full_bytes = 0
        self.full_collections = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def limit_bytes(self) -> int:
        """The resident size past which the next tick collects everything."""
        base = self._after_full_bytes
        return base + max(int(base * self.growth), self.min_growth_bytes)

    def tick(self) -> bool:
        """Freeze what exists now; first collect everything if the process grew past the
        limit. True when a full collection ran."""
        if self._size() <= self.limit_bytes:
            gc.freeze()
            return False
        self.collect_all()
        return True

    def collect_all(self) -> None:
        """Thaw, collect every generation, freeze the survivors."""
        began = time.perf_counter()
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self._after_full_bytes = self._size()
        self.full_collections += 1
        log.info(
            "full garbage collection: %.0f ms, %d MiB resident after",
            (time.perf_counter() - began) * 1000,
            self._after_full_bytes // 2**20,
        )

    def start(self) -> None:
        """Collect once and tick from now on; without a way to read the resident size (no
        /proc) the collector is left as CPython runs it, since nothing would bound a leak."""
        if self._size() <= 0:
            log.info("resident size unknown here: garbage collection left at its defaults")
            return
        self.collect_all()
        self._task = asyncio.create_task(self._tick_forever(), name="collector")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        gc.unfreeze()

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.freeze_every_s)
            self.tick()
