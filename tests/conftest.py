"""Fixtures: a real Docker engine, a real coordinator on a free port, real agents."""

from __future__ import annotations

import asyncio
import concurrent.futures
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

import pg_cluster
from compound.agent.runners.docker.runner import DockerRunner
from docker_env import check_docker_ready
from postgres import Cluster, find_binaries
from support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    TEST_IMAGE,
    VIEWPORT,
    Agent,
    Coordinator,
    containers_of,
    csp_violations,
    make_token,
    remove_mount_dir,
)


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


@pytest.fixture(scope="session")
def postgresql(postgres_cluster: Cluster) -> Cluster:
    """The session's throwaway PostgreSQL cluster (tests/postgres.py)."""
    return postgres_cluster


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "both_backends: run once on SQLite and once on a new PostgreSQL database (the"
        " `backend` fixture, and the `coordinator` fixture built on it)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked ``both_backends`` that use the ``backend`` fixture (directly or through
    ``coordinator``) run on each database; every other test runs on SQLite only."""
    if "backend" in metafunc.fixturenames and metafunc.definition.get_closest_marker(
        "both_backends"
    ):
        metafunc.parametrize("backend", pg_cluster.BACKENDS, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> pg_cluster.Backend:
    """The database the test's coordinator or stores keep their state in: SQLite in the data
    directory, or a new PostgreSQL database of the session's cluster (``both_backends``)."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return pg_cluster.Backend("sqlite")
    cluster: Cluster = request.getfixturevalue("postgresql")
    return pg_cluster.Backend("postgresql", cluster.new_database())


@pytest.fixture
def coordinator(tmp_path: Path, backend: pg_cluster.Backend) -> Iterator[Coordinator]:
    """A coordinator process on a free port, its state on ``backend``."""
    server = Coordinator(
        data_dir=tmp_path / "coordinator", extra_args=backend.coordinator_args
    ).start()
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
        remove_mount_dir(agent)
    for agent in started:
        if (agent.state_dir / "node_id").exists():
            leftovers = containers_of(agent.node_id)
            if leftovers:
                subprocess.run(["docker", "rm", "-f", *leftovers], capture_output=True)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Cluster]:
    """A throwaway PostgreSQL cluster for the whole run (tests/postgres.py), started the first
    time a test asks; skipped only when PostgreSQL's binaries are not installed."""
    bin_dir = find_binaries()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (initdb not found): scripts/install installs it")
    cluster = Cluster(bin_dir).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def postgres_url(postgres_cluster: Cluster) -> str:
    """A new, empty database in the throwaway cluster: its SQLAlchemy URL (psycopg 3)."""
    return postgres_cluster.database()


@pytest.fixture
def two_coordinators(
    tmp_path: Path, postgres_url: str
) -> Iterator[tuple[Coordinator, Coordinator]]:
    """Two coordinators (A and B, leases of 10 s) sharing one new PostgreSQL database;
    both stopped at the end, whatever the test did to them."""
    servers = [
        Coordinator(
            data_dir=tmp_path / f"coordinator-{name}",
            lease_timeout_s=10.0,
            extra_args=["--database", postgres_url],
        )
        for name in ("a", "b")
    ]
    try:
        for server in servers:
            server.start()
        yield servers[0], servers[1]
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def agent(start_agent: Callable[..., Agent]) -> Agent:
    return start_agent()


@pytest.fixture(scope="module")
def browser(docker_engine: str) -> Iterator[Browser]:
    """Debian's Chromium (never a downloaded one), one per test module."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh page at the screenshots' size; an uncaught error or a CSP violation in it fails
    the test."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(30_000)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    violations = csp_violations(opened)
    yield opened
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"
    assert not violations, f"Content-Security-Policy violations in the page: {violations}"


@pytest.fixture
async def runners() -> AsyncIterator[list[DockerRunner]]:
    """Docker runners the test makes (see docker_env.prepared_runner); all closed, and so
    emptied, at the end."""
    made: list[DockerRunner] = []
    yield made
    for runner in made:
        await runner.close()


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[tuple[Coordinator, dict[str, str]]]:
    """A coordinator with auth on: alice and bob submit, worker contributes (their tokens)."""
    data_dir = tmp_path / "coordinator"
    roles = {"alice": "submitter", "bob": "submitter", "worker": "contributor"}
    tokens = {name: make_token(data_dir, role, name) for name, role in roles.items()}
    server = Coordinator(data_dir=data_dir, lease_timeout_s=60.0).start()
    yield server, tokens
    server.stop()
