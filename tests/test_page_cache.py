"""The shared cache of full log pages: only pages that can never change, bounded in bytes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from compound.coordinator.storage.database import Database
from compound.coordinator.storage.log_tail import LogPage
from compound.coordinator.storage.logs import LogStore
from compound.coordinator.storage.page_cache import PageCache
from compound.protocol import LogRecord
from pg_cluster import Backend


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


async def _database_with_log(path: Path, records: int, backend: Backend) -> Database:
    database = await Database.open(path, backend.url)
    # Log rows without a job row: reads only.
    backend.execute(
        path,
        "INSERT INTO log_records (job_id, seq, stream, size, data, attempt)"
        " VALUES (?, ?, ?, ?, ?, 1)",
        [("j", seq, "stdout", 2, f"{seq % 10}\n") for seq in range(records)],
    )
    return database


@pytest.mark.both_backends
def test_followers_asking_together_share_one_read(tmp_path: Path, backend: Backend) -> None:
    """Ten reads of the same page at once get one page object (one database read), and a
    reader that leaves mid-read does not take the others' page with it."""

    async def scenario() -> None:
        database = await _database_with_log(tmp_path / "db.sqlite3", 5000, backend)
        store = LogStore(database.reader, database.writer)
        try:
            leaving = asyncio.ensure_future(store.read("j", -1, 2000, 64 * 1024))
            others = [store.read("j", -1, 2000, 64 * 1024) for _ in range(9)]
            await asyncio.sleep(0)  # every reader has asked before the read completes
            leaving.cancel()
            pages = await asyncio.gather(*others)
            assert all(page is pages[0] for page in pages)
            assert [r.seq for r in pages[0].records] == list(range(2000)) and pages[0].more
        finally:
            await database.close()

    asyncio.run(asyncio.wait_for(scenario(), 30))
