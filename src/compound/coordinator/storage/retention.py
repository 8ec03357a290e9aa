"""Retention: a finished job's logs, inputs, artifacts and script go ``retention_s`` after it
ended, and the database gives the space back.

The job's row stays (its status, exit code and ``files_removed_at``; its script, arguments
and environment emptied); a blob is removed only once nothing kept refers to it, since jobs
share blobs by content. Their owners are refunded in the same transactions (``usage``), then
the database file and its WAL are compacted (``compaction``). ``sweep()`` does one pass
and can be called directly; the loop runs it every ``retention_sweep_interval_s``, and
``swept`` is set after each pass so a caller can wait on it instead of sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from compound.coordinator.storage import compaction
from compound.coordinator.storage.blobs import BlobStore
from compound.coordinator.storage.files import FileStore
from compound.coordinator.storage.logs import LogStore

log = logging.getLogger("compound.coordinator")


@dataclass(frozen=True)
class SweepResult:
    jobs: int
    blobs_removed: int
    pages_freed: int = 0


@dataclass(eq=False)
class Retention:
    retention_s: float
    interval_s: float
    logs: LogStore
    files: FileStore
    blobs: BlobStore
    # The database to compact after a pass that removed something (None: never).
    database_path: Path | None = None
    swept: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._sweep_forever(), name="retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception("retention sweep failed")
            await asyncio.sleep(self.interval_s)

    async def sweep(self) -> SweepResult:
        """Remove what has expired by now."""
        job_ids, candidates = await self.files.expire(time.time() - self.retention_s)
        self.logs.forget(job_ids)
        removed = 0
        async with self.blobs.lock:
            for sha256 in sorted(candidates):
                if not await self.files.in_use(sha256):
                    self.blobs.remove(sha256)
                    removed += 1
        pages_freed = 0
        if job_ids or candidates:
            log.info(
                "retention: removed the files of %d job(s) and %d blob(s)", len(job_ids), removed
            )
            if self.database_path is not None:
                compacted = await asyncio.to_thread(compaction.compact, self.database_path)
                pages_freed = compacted.pages_freed
        self.swept.set()
        return SweepResult(len(job_ids), removed, pages_freed)
