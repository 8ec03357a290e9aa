"""When the reader of the agent's stdout or stderr is gone (its parent killed, a `| tee` that
died): its reports stop, and nothing else does.

A write to a pipe nobody reads fails (BrokenPipeError; EIO on a hung-up terminal). Raised
from an event, it ended whatever reported it: the heartbeat (the agent went offline), the
reconnect loop, the shutdown that hands jobs back and removes the containers. Swallowed by
logging, the unwritten bytes stayed buffered and Python's last flush at exit failed on them
(exit status 120). So a stream whose write fails is pointed at /dev/null for the rest of the
process: what it still buffers, later writes and that last flush all succeed, unread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import TextIO


def discard(stream: TextIO) -> None:
    """Point ``stream``'s file descriptor at /dev/null (its reader is gone)."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, stream.fileno())
        finally:
            os.close(devnull)


def _gone(exc: BaseException | None) -> bool:
    # A full non-blocking pipe is slow, not gone: its bytes stay buffered for the next flush.
    return isinstance(exc, OSError) and not isinstance(exc, BlockingIOError)


def write_line(stream: TextIO, line: str) -> bool:
    """Write ``line`` and flush; False when the stream's reader is gone (it is then
    discarded), never an exception."""
    try:
        stream.write(line + "\n")
        stream.flush()
    except ValueError:  # the stream was closed in this process
        return False
    except OSError as exc:
        if not _gone(exc):
            return True
        discard(stream)
        return False
    return True


class LogHandler(logging.StreamHandler[TextIO]):
    """A logging.StreamHandler whose stream, once a write to it fails, is discarded rather
    than written to again (with a '--- Logging error ---' each time) for ever."""

    def handleError(self, record: logging.LogRecord) -> None:
        if _gone(sys.exc_info()[1]):
            discard(self.stream)
            return
        super().handleError(record)
