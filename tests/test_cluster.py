"""Several coordinators on one PostgreSQL database seen as one service: a cancel asked of
any reaches the job's agent wherever it is connected, and any lists every contributor of
the cluster (real processes, a real agent and Docker where a container is involved).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fake_agent import FakeAgent
from support import Agent, Coordinator, containers_of, run_cli, wait_until

# Fake agents send no heartbeats: a long lease keeps an idle one connected.
FAKE_LEASE_TIMEOUT_S = 30.0
LONG = "import time\nprint('started', flush=True)\ntime.sleep(120)\n"


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


def _rows(coordinator: Coordinator) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in coordinator.contributors()}


def test_any_coordinator_lists_every_contributor_of_the_cluster(
    tmp_path: Path, postgres_url: str
) -> None:
    """A and B each list the contributors of both, each with its coordinator and, for one
    running a job elsewhere, busy with its job; /healthz counts 2; the CLI shows the
    coordinator column; A SIGKILLed, B lists A's contributor offline and counts 1."""
    started: list[Coordinator] = []

    def start(name: str) -> Coordinator:
        server = Coordinator(
            data_dir=tmp_path / name,
            lease_timeout_s=FAKE_LEASE_TIMEOUT_S,
            extra_args=["--database", postgres_url],
        )
        started.append(server.start())
        return server

    agents: list[FakeAgent] = []
    try:
        a = start("a")
        on_a = FakeAgent(a)
        agents.append(on_a)
        b = start("b")  # its start leaves A's contributor online
        job_id = b.submit("print('x')")  # runs on A's, the only contributor yet
        assert on_a.recv_type("job", timeout_s=10)["job_id"] == job_id
        on_b = FakeAgent(b)
        agents.append(on_b)
        names = {on_a.node_id: f"127.0.0.1:{a.port}", on_b.node_id: f"127.0.0.1:{b.port}"}
        for server in (a, b):
            rows = _rows(server)
            for node_id, coordinator in names.items():
                assert rows[node_id]["coordinator"] == coordinator
            assert rows[on_b.node_id]["state"] == "idle", rows[on_b.node_id]
            busy = rows[on_a.node_id]
            assert busy["state"] == "busy" and busy["busy"] is True, busy
            assert busy["current_job_id"] == job_id
            wait_until(
                lambda server=server: server.api("GET", "/healthz").json()["coordinators"] == 2,
                10,
                "both coordinators to be seen",
            )
        listed = run_cli("contributors", "-c", b.url)
        assert listed.returncode == 0, listed.stderr.decode()
        assert "coordinator" in listed.stdout.decode().splitlines()[0]
        as_json = run_cli("contributors", "-c", b.url, "--json")
        assert as_json.returncode == 0, as_json.stderr.decode()
        listed_on = {row["id"]: row["coordinator"] for row in json.loads(as_json.stdout)}
        assert listed_on == names
        a.kill()
        gone = wait_until(
            lambda: (row := _rows(b)[on_a.node_id])["state"] == "offline" and row,
            10,
            "B to see A's contributor offline",
        )
        assert gone["last_state"] == "idle", gone  # its row's: busy lives in memory
        assert _rows(b)[on_b.node_id]["state"] == "idle"
        wait_until(lambda: b.api("GET", "/healthz").json()["coordinators"] == 1, 10, "A to be gone")
    finally:
        for agent in agents:
            agent.close()
        for server in started:
            server.stop()


def test_the_cancel_goes_to_the_agent_from_the_coordinator_holding_its_lease(
    tmp_path: Path, postgres_url: str
) -> None:
    """Agent on A, cancel asked of B: the agent gets ``cancel`` from A within a second, and
    its own ``done`` decides the ending (no note, no error)."""
    a, b = (
        Coordinator(
            data_dir=tmp_path / name,
            lease_timeout_s=FAKE_LEASE_TIMEOUT_S,
            extra_args=["--database", postgres_url],
        ).start()
        for name in ("a", "b")
    )
    agent = FakeAgent(a)
    try:
        job_id = b.submit("import time; time.sleep(60)")
        job = agent.recv_type("job", timeout_s=10)
        assert job["job_id"] == job_id
        assert b.api("POST", f"/api/v1/jobs/{job_id}/cancel").json()["status"] == "running"
        asked_at = time.monotonic()
        assert agent.recv_type("cancel", timeout_s=10)["job_id"] == job_id
        assert time.monotonic() - asked_at < 1.0
        agent.send(
            {"type": "done", "job_id": job_id, "lease_id": job["lease_id"], "status": "cancelled"}
        )
        ended = b.wait_for_status(job_id, {"cancelled", "failed", "succeeded"}, timeout_s=10)
        assert ended["status"] == "cancelled" and ended["error"] is None, ended
    finally:
        agent.close()
        a.stop()
        b.stop()


def test_a_cancel_hint_is_read_back() -> None:
    """A cancel travels as its own kind of post and is read back as one."""
    from compound.coordinator.scheduling.cluster import CANCEL, parse, payloads

    (payload,) = payloads("origin", [CANCEL + "abc", "qdef"])
    assert parse(payload) == ("origin", [(CANCEL, "abc"), ("q", "def")])
