"""How many jobs run at once: a semaphore whose size the donor can change while jobs run.

A smaller size takes effect as running jobs end (none is stopped for it); a larger one at
once.
"""

from __future__ import annotations

import asyncio


class Capacity:
    def __init__(self, size: int) -> None:
        self.size = size
        self.in_use = 0
        self._changed = asyncio.Condition()

    async def resize(self, size: int) -> None:
        async with self._changed:
            self.size = size
            self._changed.notify_all()

    async def acquire_unless(self, cancel: asyncio.Event) -> bool:
        """Take one place; False (holding none) if ``cancel`` is set first."""
        if cancel.is_set():
            return False
        acquire = asyncio.create_task(self._acquire())
        cancelled = asyncio.create_task(cancel.wait())
        await asyncio.wait({acquire, cancelled}, return_when=asyncio.FIRST_COMPLETED)
        cancelled.cancel()
        if not acquire.done():
            acquire.cancel()
            await asyncio.gather(acquire, return_exceptions=True)
        if acquire.cancelled():
            return False
        if cancel.is_set():
            await self.release()  # acquired in the same moment as the cancel: give it back
            return False
        return True

    async def _acquire(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_use < self.size)
            self.in_use += 1

    async def release(self) -> None:
        async with self._changed:
            self.in_use -= 1
            self._changed.notify_all()
