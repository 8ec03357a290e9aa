"""The seed's wire protocol, driven by plain HTTP and `websockets` clients."""

from __future__ import annotations

import json

import httpx
import pytest
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import connect

from support import Agent, Coordinator


def seed_stream(coordinator: Coordinator, job_id: str) -> list[dict[str, object]]:
    messages = []
    with connect(f"{coordinator.ws_url}/ws/submitter/{job_id}") as websocket:
        for raw in websocket:
            messages.append(json.loads(raw))
    return messages


def test_seed_submit_and_submitter_socket(coordinator: Coordinator, agent: Agent) -> None:
    """POST /submit-job then WS /ws/submitter/{id}: one log message per line, then done."""
    script = "import sys\nprint('a')\nprint('b' * 100000)\nsys.stdout.write('tail')\n"
    response = httpx.post(f"{coordinator.url}/submit-job", json={"script": script})
    assert response.status_code == 200
    job_id = response.json()["job_id"]
    messages = seed_stream(coordinator, job_id)
    logs = [m for m in messages if m["type"] == "log"]
    assert [m["line"] for m in logs] == ["a", "b" * 100000, "tail"]
    assert messages[-1] == {
        "type": "done",
        "job_id": job_id,
        "status": "succeeded",
        "exit_code": 0,
        "error": None,
    }


def test_seed_submitter_socket_splits_records_into_lines(
    coordinator: Coordinator, agent: Agent
) -> None:
    """Output packed many lines to a record still reaches the seed socket as one log message
    per line, each stream in order, the last line without its newline included."""
    script = (
        "import sys\n"
        "for i in range(20000):\n"
        "    print(f'line {i}')\n"
        "sys.stdout.flush()\n"
        "print('err 1\\nerr 2', file=sys.stderr)\n"
        "sys.stdout.write('tail')\n"
    )
    response = httpx.post(f"{coordinator.url}/submit-job", json={"script": script})
    job_id = response.json()["job_id"]
    messages = seed_stream(coordinator, job_id)
    stdout = [m["line"] for m in messages if m["type"] == "log" and m["stream"] == "stdout"]
    stderr = [m["line"] for m in messages if m["type"] == "log" and m["stream"] == "stderr"]
    assert stdout == [f"line {i}" for i in range(20000)] + ["tail"]
    assert stderr == ["err 1", "err 2"]
    assert len(coordinator.logs(job_id)) < 1000  # the point: many lines to a record
    assert messages[-1]["type"] == "done" and messages[-1]["status"] == "succeeded"


def test_seed_submitter_socket_unknown_job(coordinator: Coordinator) -> None:
    """An unknown job id closes the submitter socket with 4404."""
    with (
        pytest.raises(ConnectionClosedError) as closed,
        connect(f"{coordinator.ws_url}/ws/submitter/nope") as websocket,
    ):
        websocket.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4404


def test_seed_contributor_without_hello(coordinator: Coordinator) -> None:
    """A seed agent (no hello, no sequence numbers) gets jobs and its logs reach submitters."""
    job_id = httpx.post(f"{coordinator.url}/submit-job", json={"script": "print('hi')"}).json()[
        "job_id"
    ]
    with connect(f"{coordinator.ws_url}/ws/contributor") as agent:
        agent.send(json.dumps({"type": "heartbeat", "cpu": 12.5, "ram": 1024}))
        job = json.loads(agent.recv(timeout=10))
        assert job["type"] == "job" and job["job_id"] == job_id
        assert job["script"] == "print('hi')"
        agent.send(json.dumps({"type": "log", "line": "hi"}))
        agent.send(json.dumps({"type": "log", "line": "bye"}))
        agent.send(json.dumps({"type": "done"}))
        messages = seed_stream(coordinator, job_id)
    assert [m["line"] for m in messages if m["type"] == "log"] == ["hi", "bye"]
    assert messages[-1]["status"] == "succeeded"
