"""Where the agent reports what it does: typed JSON events, or readable lines for people."""

from __future__ import annotations

import logging
import sys
from typing import Literal

from pydantic import BaseModel

from compound.protocol.events import LogLine

log = logging.getLogger("compound.agent")

Level = Literal["info", "warning", "error"]


class EventSink:
    """``json=True``: one event per line on stdout (for the desktop app); else log lines."""

    def __init__(self, json: bool) -> None:
        self._json = json

    def emit(self, event: BaseModel) -> None:
        if self._json:
            # Explicit flush: the reader is a pipe and PYTHONUNBUFFERED may not be set.
            sys.stdout.write(event.model_dump_json() + "\n")
            sys.stdout.flush()

    def say(self, message: str, level: Level = "info") -> None:
        """A sentence for people: logged, and shown in the desktop app's agent log."""
        log.log(logging.getLevelName(level.upper()), message)
        self.emit(LogLine(level=level, message=message))
