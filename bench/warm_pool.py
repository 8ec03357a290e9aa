"""Benchmark: a trivial job through the agent's runner, with the warm pool and without.

Against a bare ``docker run --rm --network none IMAGE python3 -c pass`` in the same run and
runtime (the baseline). Cases, interleaved so a noisy moment hurts each alike:

- ``docker run``: create, start, wait, remove, one after the other (the CLI);
- ``runner, warm 0``: ``DockerRunner.run`` of ``print('hi')``, a container started per job;
- ``runner, warm 1``: the same with a pool of 1, given time to refill between jobs (the
  latency a job sees when jobs arrive no faster than containers start);
- back to back: ``--jobs`` trivial jobs one after the other, jobs/s, per case.

The issue's targets: a trivial job at <= 0.25x a bare ``docker run`` (through the HTTP API;
this measures the runner, the bulk of it), and >= 3x its jobs/s back to back.

    .venv/bin/python bench/warm_pool.py [--runtime runc] [--repeat 10] [--jobs 50]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from compound.agent.runners.base import RunResult, RunSpec
from compound.agent.runners.docker.image import DEFAULT_TAG
from compound.agent.runners.docker.runner import DockerRunner, DockerRunnerSettings
from compound.protocol import JobStatus, Stream


async def _ignore(stream: Stream, data: bytes) -> None:
    pass


def _docker_run_ms(image: str, runtime: str) -> float:
    command = ["docker", "run", "--rm", "--network", "none", "--runtime", runtime]
    started = time.perf_counter()
    subprocess.run([*command, image, "python3", "-c", "pass"], check=True, capture_output=True)
    return (time.perf_counter() - started) * 1000


async def _job_ms(runner: DockerRunner) -> float:
    started = time.perf_counter()
    result = await runner.run(RunSpec(uuid.uuid4().hex, "print('hi')"), _ignore, asyncio.Event())
    elapsed_ms = (time.perf_counter() - started) * 1000
    if result != RunResult(JobStatus.SUCCEEDED, 0):
        raise SystemExit(f"the trivial job failed: {result}")
    return elapsed_ms


async def _runner(image: str, runtime: str, warm: int) -> DockerRunner:
    settings = DockerRunnerSettings(
        image=image, runtime=runtime, warm=warm, node_id=f"bench-{uuid.uuid4().hex[:8]}"
    )
    runner = DockerRunner(settings)  # type: ignore[arg-type]
    await runner.prepare()
    await runner.warm_pool.filled()
    return runner


async def _back_to_back(runner: DockerRunner, jobs: int) -> float:
    started = time.perf_counter()
    for _ in range(jobs):
        await _job_ms(runner)
    return jobs / (time.perf_counter() - started)


def _docker_back_to_back(image: str, runtime: str, jobs: int) -> float:
    started = time.perf_counter()
    for _ in range(jobs):
        _docker_run_ms(image, runtime)
    return jobs / (time.perf_counter() - started)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", default="runc", choices=["runc", "runsc"])
    parser.add_argument("--image", default=DEFAULT_TAG)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=50)
    options = parser.parse_args()
    cold = await _runner(options.image, options.runtime, 0)
    warm = await _runner(options.image, options.runtime, 1)
    samples: dict[str, list[float]] = {"docker run": [], "runner, warm 0": [], "runner, warm 1": []}
    try:
        for _ in range(options.repeat):
            samples["docker run"].append(_docker_run_ms(options.image, options.runtime))
            samples["runner, warm 0"].append(await _job_ms(cold))
            await cold.removals_done()
            samples["runner, warm 1"].append(await _job_ms(warm))
            await warm.removals_done()
            await warm.warm_pool.filled()
        baseline = statistics.median(samples["docker run"])
        print(f"runtime {options.runtime}, {options.repeat} runs each, median ms (x docker run)")
        for case, values in samples.items():
            median = statistics.median(values)
            print(f"  {case:16} {median:7.1f} ms  {median / baseline:5.2f}x")
        rates = {
            "docker run": _docker_back_to_back(options.image, options.runtime, options.jobs),
            "runner, warm 0": await _back_to_back(cold, options.jobs),
            "runner, warm 1": await _back_to_back(warm, options.jobs),
        }
        print(f"{options.jobs} trivial jobs back to back, jobs/s (x docker run)")
        for case, rate in rates.items():
            print(f"  {case:16} {rate:7.2f}/s  {rate / rates['docker run']:5.2f}x")
    finally:
        await cold.close()
        await warm.close()


if __name__ == "__main__":
    asyncio.run(main())
