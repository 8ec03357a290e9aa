"""What the Docker runner tests need from the machine: a real engine, both runtimes, the image.

Nothing is skipped: without a usable engine the tests fail and say how to get one.
"""

from __future__ import annotations

import asyncio
import os
import uuid

from compound.agent.runners.base import RunResult, RunSpec
from compound.agent.runners.docker.engine import EngineError, check_engine, connect
from compound.agent.runners.docker.image import DEFAULT_TAG, ensure_image
from compound.agent.runners.docker.runner import (
    MANAGED_LABEL,
    NODE_LABEL,
    DockerRunner,
    DockerRunnerSettings,
)
from compound.protocol import Stream

RUNTIMES = ("runc", "runsc")
SETUP_HINT = "run scripts/setup-docker.sh as root first"


def image_tag() -> str:
    """The image the tests run jobs in: ``$COMPOUND_TEST_IMAGE`` or the agent's default."""
    return os.environ.get("COMPOUND_TEST_IMAGE", DEFAULT_TAG)


async def check_docker_ready(image: str) -> str | None:
    """None when engine, runtimes and image are usable, else what is wrong and what to do.

    A missing image is built (offline, about 40 s), as `compound image ensure` would.
    """
    docker = connect()
    try:
        await check_engine(docker)
        runtimes = (await docker.system.info()).get("Runtimes") or {}
        missing = [name for name in RUNTIMES if name not in runtimes]
        if missing:
            return f"Docker runtime(s) {', '.join(missing)} not registered: {SETUP_HINT}"
    except EngineError as exc:
        return f"{exc} ({SETUP_HINT})"
    finally:
        await docker.close()
    try:
        await ensure_image(image)
    except EngineError as exc:
        return f"cannot get the image {image}: {exc}"
    return None


class Collected:
    """An output sink that keeps every piece and signals the first one."""

    def __init__(self) -> None:
        self.pieces: list[tuple[Stream, bytes]] = []
        self.first = asyncio.Event()

    async def __call__(self, stream: Stream, data: bytes) -> None:
        self.pieces.append((stream, data))
        self.first.set()

    def of(self, stream: Stream) -> bytes:
        return b"".join(data for s, data in self.pieces if s is stream)

    @property
    def stdout(self) -> bytes:
        return self.of(Stream.STDOUT)

    @property
    def stderr(self) -> bytes:
        return self.of(Stream.STDERR)


async def managed_container_ids(node_id: str) -> list[str]:
    """Ids of all containers (running or not) the runner of ``node_id`` manages."""
    docker = connect()
    try:
        labels = [f"{MANAGED_LABEL}=1", f"{NODE_LABEL}={node_id}"]
        containers = await docker.containers.list(all=True, filters={"label": labels})
        return [c.id for c in containers]
    finally:
        await docker.close()


async def leftover_container_ids(runner: DockerRunner) -> list[str]:
    """Ids of ``runner``'s containers that are neither removed nor idle in its warm pool.

    Waits for the background removals and refill first, and checks the pool holds at most
    its size.
    """
    await runner.removals_done()
    await runner.warm_pool.filled()
    warm = runner.warm_container_ids()
    assert len(warm) <= runner.warm_pool.size
    return [i for i in await managed_container_ids(runner.settings.node_id) if i not in warm]


async def run_job(runner: DockerRunner, script: str, **spec: object) -> tuple[RunResult, Collected]:
    """Run ``script`` (with ``spec``'s other RunSpec fields) to its end; result and output."""
    sink = Collected()
    job = RunSpec(job_id=uuid.uuid4().hex, script=script, **spec)  # type: ignore[arg-type]
    result = await runner.run(job, sink, asyncio.Event())
    return result, sink


async def prepared_runner(made: list[DockerRunner], settings: DockerRunnerSettings) -> DockerRunner:
    """A runner of ``settings``, prepared and its warm pool filled; added to ``made`` (the
    ``runners`` fixture closes them all)."""
    runner = DockerRunner(settings)
    made.append(runner)
    await runner.prepare()
    await runner.warm_pool.filled()
    return runner
