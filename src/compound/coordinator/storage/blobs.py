"""Files stored once by content: input tars and output files, named by their SHA-256.

A blob is written to a private temporary file while it is hashed and counted, and renamed
into place only once complete, so a reader never sees part of one and an upload cut off or
over its limit leaves nothing behind. Which blobs are still needed is the database's
business (``files.py``); adding and removing happen under one lock so a blob being added
again is never removed under the adder's feet.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from compound.coordinator.storage.data_dir import DIR_MODE, FILE_MODE

SHA256 = re.compile(r"[0-9a-f]{64}")


class TooBig(Exception):
    """The stream passed its limit; nothing was stored."""


@dataclass(frozen=True)
class Received:
    """A complete blob in a temporary file, not yet in the store."""

    path: Path
    sha256: str
    size: int


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.lock = asyncio.Lock()
        root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        self._incoming = root / "incoming"
        self._incoming.mkdir(mode=DIR_MODE, exist_ok=True)
        # Temporary files of a crashed coordinator: never renamed, never needed.
        for leftover in self._incoming.iterdir():
            with contextlib.suppress(OSError):
                leftover.unlink()

    def path(self, sha256: str) -> Path:
        if not SHA256.fullmatch(sha256):
            raise ValueError("not a SHA-256")
        return self.root / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def new_temp(self) -> Path:
        fd, name = tempfile.mkstemp(dir=self._incoming)
        os.close(fd)
        return Path(name)

    async def receive(self, chunks: AsyncIterator[bytes], limit: int) -> Received:
        """Write ``chunks`` to a temporary file; TooBig (nothing kept) past ``limit`` bytes."""
        temp = self.new_temp()
        digest = hashlib.sha256()
        size = 0
        try:
            with temp.open("wb") as out:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > limit:
                        raise TooBig
                    digest.update(chunk)
                    out.write(chunk)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return Received(temp, digest.hexdigest(), size)

    def keep(self, received: Received) -> None:
        """Move a received blob into the store (or drop it: the same bytes are there).
        Call with ``lock`` held."""
        target = self.path(received.sha256)
        if target.is_file():
            received.path.unlink(missing_ok=True)
            return
        target.parent.mkdir(mode=DIR_MODE, exist_ok=True)
        received.path.chmod(FILE_MODE)
        os.replace(received.path, target)

    def remove(self, sha256: str) -> None:
        """Call with ``lock`` held, after checking nothing refers to it any more."""
        self.path(sha256).unlink(missing_ok=True)
