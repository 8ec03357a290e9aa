"""Contributors come and go: a restarted agent gives back at once the job it no longer runs,
and a stopped one drains, then hands its jobs back to run elsewhere — never cancelled."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fake_agent import FakeAgent
from support import Agent, Coordinator, containers_of, stream_text, wait_until

# Long enough that nothing below can be a lease expiring: every move is the hand-back's.
LEASE_TIMEOUT_S = 60.0
PROMPT_S = 15.0


@pytest.fixture
def patient(tmp_path: Path) -> Iterator[Coordinator]:
    """A coordinator whose leases outlast every test here."""
    server = Coordinator(
        data_dir=tmp_path / "patient", lease_timeout_s=LEASE_TIMEOUT_S, extra_args=[]
    ).start()
    yield server
    server.stop()


def test_a_restarted_agent_gives_back_the_job_it_no_longer_runs(
    patient: Coordinator, start_agent: Callable[..., Agent]
) -> None:
    """kill -9 of an agent mid-job, then the same agent (same state dir, same node id) again:
    the job is requeued at once, not counted as an attempt, and runs to success."""
    job_id = patient.submit("import time\nprint('attempt', flush=True)\ntime.sleep(2)\n")
    first = start_agent(name="first", coordinator_url=patient.url)
    first.wait_event("job_started", job_id=job_id)
    wait_until(lambda: patient.logs(job_id), 30, "the job's first output")
    first.kill()
    began = time.monotonic()
    again = start_agent(name="first", state_dir=first.state_dir, coordinator_url=patient.url)
    assert again.node_id == first.node_id
    done = patient.wait_for_status(job_id, {"succeeded", "failed", "cancelled"}, timeout_s=60)
    assert time.monotonic() - began < LEASE_TIMEOUT_S / 2, "it waited for the lease to expire"
    assert done["status"] == "succeeded" and done["attempts"] == 1
    notes = stream_text(patient.logs(job_id), "system")
    assert "attempt 1 handed back (its contributor restarted without it)" in notes
    assert stream_text(patient.logs(job_id)) == "attempt\nattempt\n"


def test_sigterm_hands_the_running_job_back_and_it_runs_elsewhere(
    patient: Coordinator, start_agent: Callable[..., Agent]
) -> None:
    """SIGTERM: the leaving agent takes nothing new, drains for --drain-s, then hands its
    job back; another contributor runs it to success; nothing is reported cancelled and no
    container of the leaving agent remains."""
    job_id = patient.submit("import time\nprint('start', flush=True)\ntime.sleep(4)\n")
    leaving = start_agent(
        name="leaving", coordinator_url=patient.url, extra_args=["--drain-s", "0.5"]
    )
    leaving.wait_event("job_started", job_id=job_id)
    staying = start_agent(name="staying", coordinator_url=patient.url)
    assert leaving.proc is not None
    leaving.proc.send_signal(signal.SIGTERM)
    assert leaving.proc.wait(timeout=30) == 0
    staying.wait_event("job_started", job_id=job_id, timeout_s=PROMPT_S)
    done = patient.wait_for_status(job_id, {"succeeded", "failed", "cancelled"}, timeout_s=60)
    assert done["status"] == "succeeded" and done["contributor_id"] == staying.node_id
    assert done["attempts"] == 1
    notes = stream_text(patient.logs(job_id), "system")
    assert "handed back (its contributor is stopping)" in notes and "cancel" not in notes
    assert not containers_of(leaving.node_id)


def test_sigterm_lets_a_short_job_finish_within_the_drain(
    patient: Coordinator, start_agent: Callable[..., Agent]
) -> None:
    """A job that ends within --drain-s ends where it runs, as it would have anyway."""
    job_id = patient.submit("import time\ntime.sleep(1)\nprint('finished')\n")
    agent = start_agent(
        name="draining", coordinator_url=patient.url, extra_args=["--drain-s", "30"]
    )
    agent.wait_event("job_started", job_id=job_id)
    assert agent.proc is not None
    agent.proc.send_signal(signal.SIGTERM)
    assert agent.proc.wait(timeout=30) == 0
    done = patient.job(job_id)
    assert done["status"] == "succeeded" and done["contributor_id"] == agent.node_id
    assert stream_text(patient.logs(job_id)) == "finished\n"


def test_a_leaving_contributor_is_given_no_new_job(patient: Coordinator) -> None:
    """A contributor that said it is draining gets no job: another one does."""
    leaving = FakeAgent(patient)
    leaving.send({"type": "availability", "lending": "draining", "reason": "stopping"})
    job_id = patient.submit("print(1)")
    other = FakeAgent(patient)
    given = other.recv_type("job")
    assert given["job_id"] == job_id
    leaving.close()
    other.close()


def test_hand_backs_are_bounded(tmp_path: Path) -> None:
    """A job handed back more than --max-handbacks times fails with that reason."""
    coordinator = Coordinator(
        data_dir=tmp_path / "c",
        lease_timeout_s=LEASE_TIMEOUT_S,
        extra_args=["--max-handbacks", "2"],
    ).start()
    try:
        job_id = coordinator.submit("print(1)")
        for _ in range(3):
            agent = FakeAgent(coordinator)
            given = agent.recv_type("job")
            agent.send({"type": "availability", "lending": "draining", "reason": "stopping"})
            agent.send(
                {
                    "type": "done",
                    "job_id": job_id,
                    "lease_id": given["lease_id"],
                    "handback": "stopping",
                    "last_seq": given["first_seq"] - 1,
                }
            )
            ack = agent.recv_type("ack")
            assert ack["done"] is True
            agent.close()
        failed = coordinator.wait_for_status(job_id, {"failed"}, timeout_s=PROMPT_S)
        assert "handed back 3 times" in failed["error"]
    finally:
        coordinator.stop()


def test_a_hand_back_under_another_lease_is_refused(patient: Coordinator) -> None:
    """Only the holder of the current lease can give a job back."""
    job_id = patient.submit("print(1)")
    holder = FakeAgent(patient)
    given = holder.recv_type("job")
    other = FakeAgent(patient)
    other.send({"type": "done", "job_id": job_id, "lease_id": given["lease_id"], "handback": "x"})
    assert other.recv_type("abandon")["job_id"] == job_id
    assert patient.job(job_id)["status"] == "running"
    holder.close()
    other.close()


def test_a_refused_report_of_an_old_lease_names_that_lease(patient: Coordinator) -> None:
    """The job came back to the same agent under a new lease; the agent's resend of the old
    run is refused with an abandon naming the old lease, so the new run goes on (fault
    harness, seed 1: an abandon naming only the job stopped the new run, and the job stayed
    running for ever under a lease its heartbeats renewed)."""
    job_id = patient.submit("print(1)")
    first = FakeAgent(patient)
    old = first.recv_type("job")
    first.close()
    again = FakeAgent(patient, node_id=first.node_id)  # restarted without the job
    new = again.recv_type("job")
    assert new["job_id"] == job_id and new["lease_id"] != old["lease_id"]
    again.done(old, last_seq=old["first_seq"] - 1)
    abandon = again.recv_type("abandon")
    assert (abandon["job_id"], abandon["lease_id"]) == (job_id, old["lease_id"])
    again.run(new, [("stdout", "1\n")])
    assert patient.wait_for_status(job_id, {"succeeded"}, timeout_s=PROMPT_S)["attempts"] == 1
    again.close()


def test_a_second_agent_on_the_same_state_dir_leaves_the_first_ones_job_alone(
    patient: Coordinator, start_agent: Callable[..., Agent]
) -> None:
    """Started by mistake beside a running agent (same state dir, same node id), a second
    agent refuses to start before it touches the engine: the first's job runs on."""
    job_id = patient.submit("import time\nprint('on', flush=True)\ntime.sleep(3)\nprint('end')\n")
    first = start_agent(name="first", coordinator_url=patient.url)
    first.wait_event("job_started", job_id=job_id)
    wait_until(lambda: patient.logs(job_id), 30, "the job's first output")
    second = Agent(patient.url, first.state_dir, name="second").start(wait_connected=False)
    assert second.proc is not None and second.proc.wait(60) != 0
    assert second.output is not None and "another agent is running" in second.output.text()
    assert patient.wait_for_status(job_id, {"succeeded"}, timeout_s=60)["attempts"] == 1
    assert stream_text(patient.logs(job_id)) == "on\nend\n"
