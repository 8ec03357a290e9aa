"""(g) fan-out: one job printing 1,000,000 lines, followed by 10 followers at once.

Two figures: *live*, the followers attached before the job starts (served while it runs,
so their rate is bounded by how fast the job's output arrives); *replay*, 10 followers
attached after it ended (served from the store as fast as they read). Lines/s for each
follower is its lines over the time from its first record to its last.

    PYTHONPATH=src .venv/bin/python bench/fanout.py
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from end_to_end import Stack
from figures import Figure, from_samples, median_at_least, text_table
from follow_client import Followed, follow

LINES = 1_000_000
FOLLOWERS = 10
SCRIPT = (
    f"import sys\nwrite = sys.stdout.write\nfor i in range({LINES}):\n    write(f'line {{i}}\\n')\n"
)


def rates(followed: list[Followed]) -> list[float]:
    result = []
    for one in followed:
        if one.lines != LINES or one.first_record_at is None or one.last_record_at is None:
            raise SystemExit(f"a follower got {one.lines} of {LINES} lines")
        result.append(one.lines / max(1e-6, one.last_record_at - one.first_record_at))
    return result


async def fan_out(url: str, ws_url: str) -> tuple[list[float], list[float], float]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        began = time.monotonic()
        response = await client.post("/api/v1/jobs", json={"script": SCRIPT})
        response.raise_for_status()
    job_id = response.json()["id"]
    live = await asyncio.gather(
        *(follow(ws_url, job_id, keep_stdout=False) for _ in range(FOLLOWERS))
    )
    job_s = time.monotonic() - began
    replay = await asyncio.gather(
        *(follow(ws_url, job_id, keep_stdout=False) for _ in range(FOLLOWERS))
    )
    return rates(live), rates(replay), job_s


def main() -> list[Figure]:
    with (
        tempfile.TemporaryDirectory(prefix="compound-bench-fanout-") as workdir,
        Stack(Path(workdir)) as stack,
    ):
        assert stack.coordinator is not None
        live, replay, job_s = asyncio.run(fan_out(stack.coordinator.url, stack.coordinator.ws_url))
    target = median_at_least(200_000, "lines/s")
    return [
        from_samples("g", "1M lines, 10 live followers, each", "lines/s", live,
                     target=target, note=f"job submitted to last line: {job_s:.1f} s"),
        from_samples("g", "1M lines, 10 replaying followers, each", "lines/s", replay,
                     target=target),
    ]  # fmt: skip


if __name__ == "__main__":
    print(text_table(main()))
