"""Fixtures: a real Docker engine, a real coordinator on a free port, real agents."""

from __future__ import annotations

import asyncio
import concurrent.futures
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from docker_env import check_docker_ready
from support import TEST_IMAGE, Agent, Coordinator, containers_of


@pytest.fixture(scope="session")
def docker_engine() -> str:
    """The sandbox image tag; fails the run, saying how to fix it, when Docker is not usable
    (engine down, a runtime not registered). A missing image is built, as the agent's
    `compound image ensure` would."""
    # In a thread of its own: a browser test's event loop may already run in this one.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        problem = pool.submit(asyncio.run, check_docker_ready(TEST_IMAGE)).result()
    if problem is not None:
        pytest.fail(f"Docker is not ready: {problem}", pytrace=False)
    return TEST_IMAGE


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[Coordinator]:
    server = Coordinator(data_dir=tmp_path / "coordinator").start()
    yield server
    server.stop()


@pytest.fixture
def start_agent(
    docker_engine: str, coordinator: Coordinator, tmp_path: Path
) -> Iterator[Callable[..., Agent]]:
    started: list[Agent] = []

    def start(
        name: str = "test-agent",
        runtime: str = "runc",
        wait_connected: bool = True,
        state_dir: Path | None = None,
        extra_args: list[str] | None = None,
        coordinator_url: str | None = None,
    ) -> Agent:
        agent = Agent(
            coordinator_url or coordinator.url,
            state_dir or tmp_path / f"agent-{len(started)}",
            name=name,
            runtime=runtime,
            extra_args=extra_args or [],
        )
        started.append(agent)
        return agent.start(wait_connected=wait_connected)

    yield start
    for agent in started:
        agent.stop()
    for agent in started:
        if (agent.state_dir / "node_id").exists():
            leftovers = containers_of(agent.node_id)
            if leftovers:
                subprocess.run(["docker", "rm", "-f", *leftovers], capture_output=True)


@pytest.fixture
def agent(start_agent: Callable[..., Agent]) -> Agent:
    return start_agent()
