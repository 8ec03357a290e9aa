"""A job its agent stops listing in its heartbeats is given back; one it never listed yet, or
an agent that lists nothing, is left alone (the coordinator over a real socket)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from fake_agent import FakeAgent
from support import Coordinator

# Long enough that no lease expires in these tests: every move is the listing's.
LEASE_TIMEOUT_S = 60.0
# The most running leases one heartbeat may list (Heartbeat.running's max_length).
MAX_LISTED = 1024


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


def refusal(agent: FakeAgent, timeout_s: float = 30) -> tuple[int | None, str]:
    """Read until the coordinator closes ``agent``'s socket: its close code and reason."""
    try:
        while True:
            agent.ws.recv(timeout=timeout_s)
    except ConnectionClosed as closed:
        return (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else (None, "")


def finish_untouched(agent: FakeAgent, job: dict[str, Any]) -> None:
    """End ``job`` under the lease it was first offered with, checking that the coordinator
    sent ``agent`` nothing else first (a job given back and offered anew would come first)."""
    agent.log(job, [job["first_seq"]])
    answer = agent.recv()
    assert (answer["type"], answer["job_id"], answer.get("seq")) == (
        "ack",
        job["job_id"],
        job["first_seq"],
    ), answer
    agent.done(job, last_seq=job["first_seq"])


def _made_up(count: int) -> list[dict[str, Any]]:
    return [{"job_id": f"job-{n}", "lease_id": f"lease-{n}"} for n in range(count)]


# Lists of running leases no agent may send: over the cap, or not lists of two short ids.
MALFORMED: dict[str, Any] = {
    "one entry over the cap": _made_up(MAX_LISTED + 1),
    "numbers": [1, 2.5],
    "nested objects": [{"job_id": {"id": "j"}, "lease_id": ["l"]}],
    "over-long ids": [{"job_id": "j" * 65, "lease_id": "l" * 65}],
    "empty ids": [{"job_id": "", "lease_id": ""}],
    "null entries": [None],
    "null ids": [{"job_id": None, "lease_id": None}],
    "a string": "lease-1",
    "an object": {"job_id": "j", "lease_id": "l"},
}


def test_a_malformed_running_list_is_refused_like_any_bad_message(patient: Coordinator) -> None:
    """A heartbeat whose list of running leases is too long or mistyped closes that socket
    with 1002 naming the field, as any malformed message does; the coordinator stays
    healthy and another contributor's job runs on untouched under its lease."""
    job_id = patient.submit("print(1)")
    victim = FakeAgent(patient)
    job = victim.recv_type("job")
    heartbeat(victim, [job])
    for name, running in MALFORMED.items():
        hostile = FakeAgent(patient)
        if isinstance(running, list) and running and isinstance(running[0], dict):
            running = [{"job_id": job["job_id"], "lease_id": job["lease_id"]}, *running]
        hostile.send({"type": "heartbeat", "cpu_percent": 1.0, "running": running})
        code, reason = refusal(hostile)
        assert code == 1002, name
        assert reason.startswith("invalid message: heartbeat.running"), (name, reason)
        assert httpx.get(patient.url + "/healthz", timeout=10).status_code == 200
        assert patient.job(job_id)["status"] == "running", name
        heartbeat(victim, [job])
    finish_untouched(victim, job)
    assert patient.wait_for_status(job_id, {"succeeded"}, timeout_s=30)["attempts"] == 1
    victim.close()
    later = patient.submit("print(2)")  # still dispatching to a well-behaved contributor
    agent = FakeAgent(patient)
    agent.run(agent.recv_type("job"), [("stdout", "2\n")])
    patient.wait_for_status(later, {"succeeded"}, timeout_s=30)
    agent.close()


def test_listing_another_contributors_lease_touches_nothing(patient: Coordinator) -> None:
    """A contributor that claims another's lease in its hello is told to abandon it, and one
    that lists it (or made-up ones, up to the cap) in heartbeats then leaves it out cannot
    give that job back: it runs on and ends under its own holder's lease."""
    victims_id = patient.submit("print(1)")
    victim = FakeAgent(patient)
    victims = victim.recv_type("job")
    claimed = {"job_id": victims["job_id"], "lease_id": victims["lease_id"]}
    hostile = FakeAgent(patient, hello={"running": [claimed]})
    abandon = hostile.recv_type("abandon")
    assert (abandon["job_id"], abandon["lease_id"]) == (claimed["job_id"], claimed["lease_id"])
    own_id = patient.submit("print(2)")
    own = hostile.recv_type("job")
    assert own["job_id"] == own_id
    padding = _made_up(MAX_LISTED - 2)
    heartbeat(hostile, [claimed, own, *padding])  # at the cap: a valid heartbeat
    heartbeat(hostile, [own])
    heartbeat(hostile, [own])  # the victim's lease "listed once, then left out twice"
    heartbeat(hostile, [claimed])
    hostile.report(own, [("stdout", "2\n")], own["first_seq"])  # acked: all the above heard
    assert patient.job(victims_id)["status"] == "running"
    assert patient.job(own_id)["status"] == "running"
    finish_untouched(victim, victims)
    assert patient.wait_for_status(victims_id, {"succeeded"}, timeout_s=30)["attempts"] == 1
    hostile.done(own, last_seq=own["first_seq"])
    patient.wait_for_status(own_id, {"succeeded"}, timeout_s=30)
    victim.close()
    hostile.close()
