"""Benchmark: how long ``DockerRunner.run`` takes for a trivial job, per runtime.

The files feature adds work to every job (the launcher stays the job's parent, writes an
empty trailer, and the agent splits stdout), so this measures the floor a job pays: a
``print`` with no inputs and no outputs, from ``run()`` called to ``run()`` returned,
``--repeat`` times per runtime after one warm-up run. Compare two trees by running this
file with each on ``PYTHONPATH`` in turns (the machine's load changes over minutes):

    PYTHONPATH=src .venv/bin/python bench/runner_trivial_job.py [--repeat 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

from compound.agent.runners.base import RunSpec
from compound.agent.runners.docker.image import DEFAULT_TAG
from compound.agent.runners.docker.runner import DockerRunner, DockerRunnerSettings
from compound.protocol import JobStatus, Stream


async def _sink(_stream: Stream, _data: bytes) -> None:
    return None


async def _measure(runtime: str, repeat: int) -> list[float]:
    settings = DockerRunnerSettings(image=DEFAULT_TAG, runtime=runtime, node_id="bench")
    runner = DockerRunner(settings)
    await runner.prepare()
    timings_ms = []
    try:
        for index in range(repeat + 1):
            spec = RunSpec(job_id=uuid.uuid4().hex, script="print('hi')")
            started = time.perf_counter()
            result = await runner.run(spec, _sink, asyncio.Event())
            elapsed_ms = (time.perf_counter() - started) * 1000
            if result.status is not JobStatus.SUCCEEDED:
                raise SystemExit(f"the trivial job failed: {result}")
            if index:  # the first run warms the engine's caches
                timings_ms.append(elapsed_ms)
            await runner.removals_done()
    finally:
        await runner.close()
    return timings_ms


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    for runtime in ("runc", "runsc"):
        timings_ms = await _measure(runtime, args.repeat)
        print(
            f"{runtime}: median {statistics.median(timings_ms):.0f} ms, "
            f"min {min(timings_ms):.0f} ms, max {max(timings_ms):.0f} ms ({len(timings_ms)} runs)"
        )


if __name__ == "__main__":
    asyncio.run(main())
