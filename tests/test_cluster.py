"""Several coordinators on one PostgreSQL database seen as one service: a cancel asked of
any reaches the job's agent wherever it is connected, and any lists every contributor of
the cluster (real processes, a real agent and Docker where a container is involved).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support import Agent, Coordinator, containers_of, wait_until

LONG = "import time\nprint('started', flush=True)\ntime.sleep(120)\n"


@pytest.fixture
def two_coordinators(
    tmp_path: Path, postgres_url: str
) -> Iterator[tuple[Coordinator, Coordinator]]:
    """Two coordinators sharing one new PostgreSQL database."""
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


def test_a_cancel_asked_of_b_stops_the_job_of_an_agent_on_a(
    two_coordinators: tuple[Coordinator, Coordinator], start_agent: Callable[..., Agent]
) -> None:
    """Agent on A, job submitted and cancelled on B: A sends the cancel, the job ends
    cancelled by its agent within seconds (not the 30 s grace) and its container is gone."""
    a, b = two_coordinators
    agent = start_agent(coordinator_url=a.url)
    job_id = b.submit(LONG)
    wait_until(lambda: b.logs(job_id), 60, "the job to start")
    assert containers_of(agent.node_id)
    response = b.api("POST", f"/api/v1/jobs/{job_id}/cancel")
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "running"  # its agent is asked, not bypassed
    asked_at = time.monotonic()
    job = b.wait_for_status(job_id, {"cancelled", "failed", "succeeded"}, timeout_s=30)
    assert job["status"] == "cancelled", job
    assert time.monotonic() - asked_at < 15
    assert job["error"] is None or "away" not in job["error"], job
    wait_until(lambda: not containers_of(agent.node_id), 15, "the job's container to go")
    assert a.job(job_id)["status"] == "cancelled"
