"""The download cap of a job's packages alone (agent/deps_download.py), on a real directory:
a writer that grows it past the cap is stopped, one that stays under it is not."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from compound.agent.deps_download import DownloadTooBig, tree_bytes, within_cap

pytestmark = pytest.mark.timeout(30)


async def _write(directory: Path, chunks: int, chunk_bytes: int, stopped: list[bool]) -> int:
    """Like uv downloading: a file per chunk, a little at a time."""
    try:
        for number in range(chunks):
            (directory / f"part-{number}").write_bytes(b"x" * chunk_bytes)
            await asyncio.sleep(0.02)
    except asyncio.CancelledError:
        stopped.append(True)
        raise
    return chunks


def test_a_download_growing_past_the_cap_is_stopped_while_it_runs(tmp_path: Path) -> None:
    """Writing 200 files of 64 KiB under a 1 MiB cap is cancelled long before its end."""
    stopped: list[bool] = []

    async def run() -> None:
        work = _write(tmp_path, 200, 64 * 1024, stopped)
        await within_cap(work, tmp_path, 1 << 20, interval_s=0.05)

    with pytest.raises(DownloadTooBig, match="more than 1 MiB downloaded and unpacked"):
        asyncio.run(run())
    assert stopped == [True]
    assert tree_bytes(tmp_path) < 4 << 20


def test_a_download_under_the_cap_returns_its_result(tmp_path: Path) -> None:
    """Work that stays under the cap finishes and its result comes back."""
    stopped: list[bool] = []
    result = asyncio.run(within_cap(_write(tmp_path, 5, 1024, stopped), tmp_path, 1 << 20))
    assert result == 5 and stopped == []


def test_a_download_over_the_cap_between_two_looks_is_caught_at_the_end(tmp_path: Path) -> None:
    """Work that writes past the cap and ends before the first look is refused anyway."""

    async def burst() -> str:
        (tmp_path / "all-at-once").write_bytes(b"x" * (2 << 20))
        return "done"

    with pytest.raises(DownloadTooBig):
        asyncio.run(within_cap(burst(), tmp_path, 1 << 20, interval_s=10))
