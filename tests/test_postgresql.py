"""The coordinator with its whole state in PostgreSQL (``--database``): the crash-recovery
and fake-agent robustness scenarios of test_recovery.py and test_robustness.py, run again
against a real coordinator process on a new PostgreSQL database each.

The imported tests are collected here too, with this module's ``coordinator`` fixture (and
the ``agent`` fixtures built on it) in place of SQLite's.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fake_agent import FakeAgent
from pg_cluster import Backend
from postgres import Cluster
from support import Coordinator, product_env, run_cli, wait_until
from test_recovery import (
    test_coordinator_sigkill_mid_job_loses_nothing,
    test_finished_jobs_and_queue_survive_restart,
)
from test_robustness import (
    dispatched,
    test_duplicate_seq_batch_is_refused_and_the_job_recovers,
    test_ending_before_its_records_is_refused,
    test_reports_without_the_lease_id_are_refused,
    test_resent_batch_is_acknowledged_and_ignored,
    test_seq_violations_close_1008_and_store_nothing,
)

# Collected from this module, on PostgreSQL.
__all__ = [
    "test_coordinator_sigkill_mid_job_loses_nothing",
    "test_duplicate_seq_batch_is_refused_and_the_job_recovers",
    "test_ending_before_its_records_is_refused",
    "test_finished_jobs_and_queue_survive_restart",
    "test_reports_without_the_lease_id_are_refused",
    "test_resent_batch_is_acknowledged_and_ignored",
    "test_seq_violations_close_1008_and_store_nothing",
]


@pytest.fixture
def database(postgresql: Cluster) -> Backend:
    return Backend("postgresql", postgresql.new_database())


@pytest.fixture
def coordinator(tmp_path: Path, database: Backend) -> Iterator[Coordinator]:
    server = Coordinator(
        data_dir=tmp_path / "coordinator", extra_args=database.coordinator_args
    ).start()
    yield server
    server.stop()


def test_the_state_is_in_postgresql_not_in_the_data_directory(
    coordinator: Coordinator, database: Backend
) -> None:
    """A running job's row and its one lease row are in PostgreSQL; its ending deletes the
    lease; the data directory holds no SQLite data."""
    agent = FakeAgent(coordinator)
    job = dispatched(coordinator, agent)
    path = coordinator.data_dir / "compound.sqlite3"
    assert database.fetchall(path, "SELECT job_id, lease_id, holder FROM leases") == [
        (job["job_id"], job["lease_id"], agent.node_id)
    ]
    agent.done(job, last_seq=-1)
    coordinator.wait_for_status(job["job_id"], {"succeeded"})
    assert database.fetchall(path, "SELECT count(*) FROM leases") == [(0,)]
    assert database.fetchall(path, "SELECT status FROM jobs") == [("succeeded",)]
    assert not path.exists() or path.stat().st_size == 0


def test_a_job_stored_unreadable_is_failed_on_postgresql(
    coordinator: Coordinator, database: Backend
) -> None:
    """A queued row that cannot be read is failed with a reason; the next job runs."""
    broken = coordinator.submit("print('broken')")
    path = coordinator.data_dir / "compound.sqlite3"
    database.execute(path, "UPDATE jobs SET args = 'not json' WHERE id = ?", [(broken,)])
    good = coordinator.submit("print('good')")
    agent = FakeAgent(coordinator)
    assert agent.recv_type("job")["job_id"] == good
    failed = coordinator.wait_for_status(broken, {"failed"}, timeout_s=10)
    assert "cannot be read" in failed["error"]
    assert httpx.get(coordinator.url + "/api/v1/jobs", timeout=10).status_code == 200


def test_log_records_with_nul_characters_are_stored(
    coordinator: Coordinator, database: Backend
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
    tmp_path: Path, database: Backend
) -> None:
    """`compound token create --database URL` turns auth on for a coordinator on that
    database; a revocation through COMPOUND_DATABASE is refused within seconds."""
    assert database.url is not None
    created = run_cli(
        "token", "create", "--database", database.url, "--role", "admin", "--name", "root"
    )
    assert created.returncode == 0, created.stderr.decode()
    token = created.stdout.decode().strip()
    server = Coordinator(
        data_dir=tmp_path / "coordinator", extra_args=database.coordinator_args
    ).start()
    try:
        job = {"json": {"script": "print(1)"}}
        assert server.api("POST", "/api/v1/jobs", **job).status_code == 401
        headers = {"Authorization": f"Bearer {token}"}
        assert server.api("POST", "/api/v1/jobs", headers=headers, **job).status_code == 201
        revoked = subprocess.run(
            [sys.executable, "-m", "compound", "token", "revoke", "root"],
            capture_output=True,
            env=product_env(COMPOUND_DATABASE=database.url),
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
