"""Benchmark: how many single-use containers per second this Docker engine can go through.

Part (d) of issue 8 runs one job per container, so its jobs/s can never exceed the rate at
which the engine creates, starts, waits for and removes a container. This measures that
rate with the engine API (aiodocker, as the agent uses it) for ``python3 -c pass`` in the
sandbox image, one at a time and with 2, 4 and 8 side by side, against ``docker run --rm``
back to back in the same run:

    PYTHONPATH=src .venv/bin/python bench/engine_ceiling.py [--containers 24]

The best side-by-side rate over ``docker run``'s is the ceiling of part (d)'s ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import time

import aiodocker
from figures import Figure

from compound.agent.runners.docker.image import DEFAULT_TAG

PARALLEL = (1, 2, 4, 8)


def _config(image: str, runtime: str) -> dict[str, object]:
    return {
        "Image": image,
        "Cmd": ["python3", "-c", "pass"],
        "NetworkDisabled": True,
        "HostConfig": {"Runtime": runtime, "NetworkMode": "none", "LogConfig": {"Type": "none"}},
    }


async def _one(docker: aiodocker.Docker, config: dict[str, object]) -> None:
    container = await docker.containers.create(config)
    try:
        await container.start()
        await container.wait()
    finally:
        await container.delete(force=True)


async def _rate(image: str, runtime: str, count: int, parallel: int) -> float:
    """Containers per second, ``parallel`` at a time, ``count`` in all."""
    config = _config(image, runtime)
    docker = aiodocker.Docker()
    try:
        await _one(docker, config)  # warms the engine's caches
        began = time.perf_counter()
        gate = asyncio.Semaphore(parallel)

        async def gated() -> None:
            async with gate:
                await _one(docker, config)

        await asyncio.gather(*(gated() for _ in range(count)))
        return count / (time.perf_counter() - began)
    finally:
        await docker.close()


def docker_run_rate(image: str, runtime: str, count: int) -> float:
    command = ["docker", "run", "--rm", "--network", "none", "--runtime", runtime, image]
    began = time.perf_counter()
    for _ in range(count):
        subprocess.run([*command, "python3", "-c", "pass"], check=True, capture_output=True)
    return count / (time.perf_counter() - began)


def main(count: int = 24, runtime: str = "runc", image: str = DEFAULT_TAG) -> list[Figure]:
    baseline = docker_run_rate(image, runtime, count)
    rates = {parallel: asyncio.run(_rate(image, runtime, count, parallel)) for parallel in PARALLEL}
    best = max(rates, key=lambda parallel: rates[parallel])
    by_width = ", ".join(f"{p}: {rate:.1f}/s" for p, rate in rates.items())
    return [
        Figure("d", "engine ceiling: create+start+wait+remove", "containers/s", rates[best],
               baseline=baseline, target=None,
               note=f"informational; side by side {by_width}; baseline docker run back to back"),
    ]  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=24)
    parser.add_argument("--runtime", default="runc")
    options = parser.parse_args()
    for figure in main(options.containers, options.runtime):
        print(figure)
