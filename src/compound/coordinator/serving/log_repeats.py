"""A logging filter that lets a repeated message through once per interval, with a count.

Under overload some errors repeat thousands of times a second (asyncio's "socket.accept()
out of system resource" when file descriptors run out); logged each time, they fill the
disk and hide everything else. The first occurrence passes; later identical ones (same
logger, level and text) within `interval_s` are counted, and the next one after the
interval passes with "(repeated N times in the last S s)" appended.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

# Distinct messages remembered; the oldest are forgotten first.
MAX_TRACKED = 1000


@dataclass
class _Window:
    started: float
    suppressed: int = 0


class RepeatFilter(logging.Filter):
    """Collapses identical log records within `interval_s` into one line with a count."""

    def __init__(
        self, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._clock = clock
        self._windows: dict[tuple[str, int, str], _Window] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        key = (record.name, record.levelno, text)
        now = self._clock()
        window = self._windows.get(key)
        if window is not None and now - window.started < self.interval_s:
            window.suppressed += 1
            return False
        self._windows.pop(key, None)
        self._windows[key] = _Window(started=now)
        if len(self._windows) > MAX_TRACKED:
            del self._windows[next(iter(self._windows))]
        if window is not None and window.suppressed:
            elapsed_s = now - window.started
            record.msg = (
                f"{text} (repeated {window.suppressed} times in the last {elapsed_s:.0f} s)"
            )
            record.args = None
        return True


def install(repeat_filter: logging.Filter, logger_names: tuple[str, ...]) -> None:
    """Put `repeat_filter` on every handler of these loggers (handlers see propagated
    records too, logger filters do not)."""
    for name in logger_names:
        for handler in logging.getLogger(name or None).handlers:
            if repeat_filter not in handler.filters:
                handler.addFilter(repeat_filter)
