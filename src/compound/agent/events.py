"""Where the agent reports what it does: typed JSON events, or readable lines for people."""

from __future__ import annotations

import logging
import sys
from typing import Literal

from pydantic import BaseModel

from compound.agent.closed_output import write_line
from compound.protocol.events import LogLine

log = logging.getLogger("compound.agent")

Level = Literal["info", "warning", "error"]


class EventSink:
    """``json=True``: one event per line on stdout (for the desktop app); else log lines."""

    def __init__(self, json: bool) -> None:
        self._json = json

    def emit(self, event: BaseModel) -> None:
        """Never raises: once stdout's reader is gone, events stop and the agent goes on
        (see closed_output)."""
        if not self._json:
            return
        # Flushed (in write_line): the reader is a pipe and PYTHONUNBUFFERED may not be set.
        if not write_line(sys.stdout, event.model_dump_json()):
            self._json = False
            log.warning("the reader of stdout is gone: no more events are written")

    def say(self, message: str, level: Level = "info") -> None:
        """A sentence for people: logged, and shown in the desktop app's agent log."""
        log.log(logging.getLevelName(level.upper()), message)
        self.emit(LogLine(level=level, message=message))
