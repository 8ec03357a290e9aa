"""The coordinator with its whole state in PostgreSQL (``--database``): what only PostgreSQL
shows (no SQLite file beside it, text refusing U+0000, tokens made against a URL).

The crash-recovery, robustness, dispatch, deadline and follow suites run on both databases
in their own modules (``both_backends``); this module's tests are about PostgreSQL alone.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fake_agent import FakeAgent
from pg_cluster import Backend
from postgres import Cluster
from support import Coordinator, product_env, run_cli, wait_until
from test_robustness import dispatched


@pytest.fixture
def backend(postgresql: Cluster) -> Backend:
    """A new PostgreSQL database, for this module's ``coordinator`` fixture and its tests."""
    return Backend("postgresql", postgresql.new_database())


def test_the_state_is_in_postgresql_not_in_the_data_directory(
    coordinator: Coordinator, backend: Backend
) -> None:
    """A running job's row and its one lease row are in PostgreSQL; its ending deletes the
    lease; the data directory holds no SQLite data."""
    agent = FakeAgent(coordinator)
    job = dispatched(coordinator, agent)
    path = coordinator.data_dir / "compound.sqlite3"
    assert backend.fetchall(path, "SELECT job_id, lease_id, holder FROM leases") == [
        (job["job_id"], job["lease_id"], agent.node_id)
    ]
    agent.done(job, last_seq=-1)
    coordinator.wait_for_status(job["job_id"], {"succeeded"})
    assert backend.fetchall(path, "SELECT count(*) FROM leases") == [(0,)]
    assert backend.fetchall(path, "SELECT status FROM jobs") == [("succeeded",)]
    assert not path.exists() or path.stat().st_size == 0


def test_log_records_with_nul_characters_are_stored(
    coordinator: Coordinator, backend: Backend
) -> None:
    """Output holding U+0000 (which PostgreSQL's text refuses) is stored, the character
    replaced, and the job ends normally."""
    agent = FakeAgent(coordinator)
    job = dispatched(coordinator, agent)
    agent.log(job, [0, 1], data="a\x00b\n")
    assert agent.recv_type("ack")["seq"] == 1
    agent.done(job, last_seq=1)
    coordinator.wait_for_status(job["job_id"], {"succeeded"})
    assert [r["data"] for r in coordinator.logs(job["job_id"])] == ["a\ufffdb\n"] * 2


def test_tokens_made_on_the_command_line_guard_a_coordinator_on_postgresql(
    tmp_path: Path, backend: Backend
) -> None:
    """`compound token create --database URL` turns auth on for a coordinator on that
    database; a revocation through COMPOUND_DATABASE is refused within seconds."""
    assert backend.url is not None
    created = run_cli(
        "token", "create", "--database", backend.url, "--role", "admin", "--name", "root"
    )
    assert created.returncode == 0, created.stderr.decode()
    token = created.stdout.decode().strip()
    server = Coordinator(
        data_dir=tmp_path / "coordinator", extra_args=backend.coordinator_args
    ).start()
    try:
        job = {"json": {"script": "print(1)"}}
        assert server.api("POST", "/api/v1/jobs", **job).status_code == 401
        headers = {"Authorization": f"Bearer {token}"}
        assert server.api("POST", "/api/v1/jobs", headers=headers, **job).status_code == 201
        revoked = subprocess.run(
            [sys.executable, "-m", "compound", "token", "revoke", "root"],
            capture_output=True,
            env=product_env(COMPOUND_DATABASE=backend.url),
            timeout=60,
        )
        assert revoked.returncode == 0, revoked.stderr.decode()
        wait_until(
            lambda: server.api("GET", "/api/v1/jobs", headers=headers).status_code == 401,
            10,
            "the revocation to take effect",
        )
    finally:
        server.stop()
