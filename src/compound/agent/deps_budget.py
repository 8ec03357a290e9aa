"""The disk one package installation may take, enforced while uv unpacks, not after.

A wheel is a zip: a few MB of it can unpack to GiBs, and its central directory may lie
about sizes, so nothing short of watching what uv writes will do. Two bounds, both on uv:
no file uv writes may pass the budget (``RLIMIT_FSIZE``: the kernel stops the write, uv dies
of SIGXFSZ), and the installation's whole workspace (uv's cache, its temporary files and the
target) is measured while uv runs, uv killed once the total is past the budget. The second
is a poll, so it may overshoot by what uv writes in one interval (a few tens of MB); the
first makes the common one-huge-file bomb stop exactly at the budget. The caller removes the
workspace afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import time
from dataclasses import dataclass
from pathlib import Path

GiB = 1024**3
# Between two measurements at least this long, and at least twice as long as a measurement
# took (so that a large tree costs at most a third of a core).
POLL_INTERVAL_S = 0.02


class OverBudget(Exception):
    """The installation grew past the budget and was stopped; ``str()`` says so."""

    def __init__(self, limit_bytes: int) -> None:
        super().__init__(
            f"the packages unpack to more than this contributor's package cache of "
            f"{limit_bytes / GiB:.2f} GiB; the installation was stopped and removed"
        )


@dataclass(frozen=True)
class DiskBudget:
    """At most ``limit_bytes`` of files under ``root`` (hard links counted once)."""

    root: Path
    limit_bytes: int

    def limit_file_size(self, pid: int) -> None:
        """Cap every file process ``pid`` writes at the budget (Linux; elsewhere the poll
        alone bounds it). Set just after the process starts, long before it has downloaded
        anything to write."""
        prlimit = getattr(resource, "prlimit", None)
        if prlimit is None:
            return
        with contextlib.suppress(OSError):  # the process is already gone
            prlimit(pid, resource.RLIMIT_FSIZE, (self.limit_bytes, self.limit_bytes))

    def killed_for_size(self, returncode: int | None) -> bool:
        """Whether the process ended because a file it wrote reached the size limit."""
        return returncode == -signal.SIGXFSZ

    async def first_excess(self) -> int:
        """Returns the workspace's size as soon as a measurement finds it over the budget;
        until then, never returns (cancel it)."""
        while True:
            started = time.monotonic()
            used = await asyncio.to_thread(usage_bytes, self.root)
            if used > self.limit_bytes:
                return used
            took_s = time.monotonic() - started
            await asyncio.sleep(max(POLL_INTERVAL_S, 2 * took_s))


def usage_bytes(root: Path) -> int:
    """The bytes of the files under ``root``, each inode once; files that vanish while the
    tree is walked (uv renames and removes as it goes) are not counted."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for directory, _, files in os.walk(root):
        for name in files:
            try:
                info = os.lstat(os.path.join(directory, name))
            except OSError:
                continue
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += max(info.st_size, info.st_blocks * 512)
    return total
