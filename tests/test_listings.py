"""A job its agent stops listing in its heartbeats is given back; one it never listed yet, or
an agent that lists nothing, is left alone (the coordinator over a real socket)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fake_agent import FakeAgent
from support import Coordinator

# Long enough that no lease expires in these tests: every move is the listing's.
LEASE_TIMEOUT_S = 60.0


@pytest.fixture
def patient(tmp_path: Path) -> Iterator[Coordinator]:
    server = Coordinator(data_dir=tmp_path / "patient", lease_timeout_s=LEASE_TIMEOUT_S).start()
    yield server
    server.stop()


def heartbeat(agent: FakeAgent, running: list[dict[str, Any]] | None) -> None:
    message: dict[str, Any] = {"type": "heartbeat", "cpu_percent": 1.0}
    if running is not None:
        message["running"] = [{"job_id": j["job_id"], "lease_id": j["lease_id"]} for j in running]
    agent.send(message)


def test_a_job_listed_then_left_out_twice_is_given_back(patient: Coordinator) -> None:
    """Listed once, then missing from two heartbeats in a row: the job is queued again (not
    an attempt) and offered anew; the next run under the new lease succeeds."""
    job_id = patient.submit("print(1)")
    agent = FakeAgent(patient)
    job = agent.recv_type("job")
    heartbeat(agent, [job])
    heartbeat(agent, [])
    assert patient.job(job_id)["status"] == "running"  # one miss is not enough
    heartbeat(agent, [])
    again = agent.recv_type("job")  # given back, and this idle agent gets it again
    assert again["job_id"] == job_id and again["lease_id"] != job["lease_id"]
    agent.run(again, [("stdout", "1\n")])
    done = patient.wait_for_status(job_id, {"succeeded"}, timeout_s=30)
    assert done["attempts"] == 1
    agent.close()


def test_a_job_never_listed_or_listed_again_stays(patient: Coordinator) -> None:
    """Heartbeats before the job message arrived do not list it; a miss followed by a listing
    starts over; an agent that sends no list is never judged by one."""
    job_id = patient.submit("print(1)")
    agent = FakeAgent(patient)
    job = agent.recv_type("job")
    for _ in range(3):
        heartbeat(agent, [])  # as if the job message were still on its way
    heartbeat(agent, [job])
    heartbeat(agent, [])
    heartbeat(agent, [job])
    heartbeat(agent, [])
    for _ in range(3):
        heartbeat(agent, None)  # says nothing: not a miss
    agent.run(job, [("stdout", "1\n")])
    assert patient.wait_for_status(job_id, {"succeeded"}, timeout_s=30)["attempts"] == 1
    agent.close()
