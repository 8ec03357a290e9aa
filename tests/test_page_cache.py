"""The shared cache of full log pages: only pages that can never change, bounded in bytes."""

from __future__ import annotations

from compound.coordinator.log_tail import LogPage
from compound.coordinator.page_cache import PageCache
from compound.protocol import LogRecord


def page(*seqs: int, more: bool = True) -> LogPage:
    return LogPage([LogRecord(seq=seq, data="x") for seq in seqs], more=more)


def test_only_full_pages_are_kept() -> None:
    """A page that ended at the log's end may still grow: it is not cached."""
    cache = PageCache(max_bytes=100)
    cache.put(("j", -1, 10, 50), page(0, 1), size=2)
    cache.put(("j", 1, 10, 50), page(2, more=False), size=1)
    assert cache.get(("j", -1, 10, 50)) == page(0, 1)
    assert cache.get(("j", 1, 10, 50)) is None


def test_least_recently_used_pages_go_first() -> None:
    """Past the byte budget the least recently used page is dropped."""
    cache = PageCache(max_bytes=10)
    cache.put(("a", -1, 1, 1), page(0), size=4)
    cache.put(("b", -1, 1, 1), page(0), size=4)
    assert cache.get(("a", -1, 1, 1)) is not None  # a is now the most recent
    cache.put(("c", -1, 1, 1), page(0), size=4)
    assert cache.get(("b", -1, 1, 1)) is None
    assert cache.get(("a", -1, 1, 1)) is not None and cache.get(("c", -1, 1, 1)) is not None
    cache.put(("huge", -1, 1, 1), page(0), size=11)
    assert cache.get(("huge", -1, 1, 1)) is None
