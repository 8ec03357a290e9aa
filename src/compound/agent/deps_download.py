"""A job's package download, bounded: uv's cache directory for it watched while uv runs.

uv has no option to cap what it downloads, and a requirement list is bounded only by its
count (a few names can pull gigabytes). Each preparation gets its own uv cache directory
(``deps.py``), where uv puts what it downloads, unpacked; :func:`within_cap` measures that
directory while uv works and once more when it is done, and stops uv (its task is cancelled,
which kills the process) as soon as it is over the cap. Between two looks uv can write at
most one interval's worth past the cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
MiB = 1024 * 1024
# How often the directory is measured (a walk of its files, in a thread).
WATCH_INTERVAL_S = 0.25


class DownloadTooBig(Exception):
    """What the packages need is over the contributor's cap; ``str()`` says so."""

    def __init__(self, cap_bytes: int) -> None:
        super().__init__(
            f"the packages take more than {cap_bytes / MiB:g} MiB downloaded and unpacked, "
            "the most this contributor downloads for one job"
        )
        self.cap_bytes = cap_bytes


async def within_cap(
    work: Coroutine[Any, Any, T],
    directory: Path,
    cap_bytes: int,
    interval_s: float = WATCH_INTERVAL_S,
) -> T:
    """``work``'s result, unless ``directory`` grows past ``cap_bytes`` meanwhile (or is past
    it at the end): then ``work`` is cancelled and DownloadTooBig raised."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=interval_s)
            if await asyncio.to_thread(tree_bytes, directory) > cap_bytes:
                raise DownloadTooBig(cap_bytes)
            if done:
                return task.result()
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def tree_bytes(root: Path) -> int:
    """The bytes of the files under ``root`` (links not followed; 0 if it is not there)."""
    total = 0
    for directory, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(directory, name)).st_size
    return total
