"""Shipped into each job container as ``sitecustomize.py``: stdout and stderr never drop bytes.

With ``-u`` Python writes through a raw file and its text layer ignores short writes
(fixed only in later CPython releases). gVisor's pipes return short writes past 64 KiB, so a
1 MiB ``print`` lost all but its first 64 KiB. Here the raw layer loops until every byte is
written, still unbuffered, so output keeps streaming as it is produced.

The agent never imports this module: it reads its source and ships it. The work happens
only when Python imports the file as ``sitecustomize`` inside the container.
"""

# No ``from __future__ import annotations`` and no ``typing``: every job imports this
# file, and typing alone cost each job ~12 ms of CPU and put modules in its sys.modules
# that ``python3 -u`` would not have loaded.
import io
import os
import select
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TextIO

    from _typeshed import ReadableBuffer


class FullWriter(io.RawIOBase):
    """A raw, unbuffered writer on ``fd`` whose ``write`` always writes everything."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return os.isatty(self._fd)

    def write(self, data: "ReadableBuffer") -> int:
        # Every print is one or two calls here (100,000 lines: 200,000), so the usual case,
        # everything written at once, costs one system call and no memoryview.
        try:
            written = os.write(self._fd, data)
        except BlockingIOError:
            written = 0
        if isinstance(data, bytes) and written == len(data):
            return written  # what the text layer hands over: no view needed
        view = memoryview(data).cast("B")
        while written < len(view):
            try:
                written += os.write(self._fd, view[written:])
            except BlockingIOError:
                # A non-blocking pipe is full: wait until the reader makes room.
                select.select([], [self._fd], [])
        return written


def _rewrap(stream: "TextIO | None", fd: int) -> "TextIO | None":
    if stream is None:
        return None
    # A raw file under the text layer, as -u sets it up; typeshed only admits buffered ones.
    raw: Any = FullWriter(fd)
    return io.TextIOWrapper(raw, encoding=stream.encoding, errors=stream.errors, write_through=True)


def install() -> None:
    """Replace ``sys.stdout`` and ``sys.stderr`` (``sys.__stdout__`` keeps the originals)."""
    stdout = _rewrap(sys.stdout, 1)
    if stdout is not None:
        sys.stdout = stdout
    stderr = _rewrap(sys.stderr, 2)
    if stderr is not None:
        sys.stderr = stderr


if __name__ == "sitecustomize":
    install()
