"""Recently read full pages of stored logs, shared by the followers that ask for them.

Followers of a finished job's log all start from the same place and ask for the same pages;
a full page (one cut by count or size, so more records follow it) of stored records never
changes, so it is read and validated once and then served from memory. Bounded in bytes;
the least recently used page goes first.
"""

from __future__ import annotations

from collections import OrderedDict

from compound.coordinator.storage.log_tail import LogPage

DEFAULT_BYTES = 32 * 1024 * 1024

PageKey = tuple[str, int, int, int]  # job id, after, limit, max bytes


class PageCache:
    def __init__(self, max_bytes: int = DEFAULT_BYTES) -> None:
        self._max_bytes = max_bytes
        self._bytes = 0
        self._pages: OrderedDict[PageKey, tuple[LogPage, int]] = OrderedDict()

    def get(self, key: PageKey) -> LogPage | None:
        found = self._pages.get(key)
        if found is None:
            return None
        self._pages.move_to_end(key)
        return found[0]

    def put(self, key: PageKey, page: LogPage, size: int) -> None:
        """Keep ``page`` (``size`` bytes of data) if it is full: only those never change."""
        if not page.more or size > self._max_bytes or key in self._pages:
            return
        self._pages[key] = (page, size)
        self._bytes += size
        while self._bytes > self._max_bytes:
            _, (_, dropped) = self._pages.popitem(last=False)
            self._bytes -= dropped

    def clear(self) -> None:
        """Forget every page (stored logs were removed)."""
        self._pages.clear()
        self._bytes = 0
