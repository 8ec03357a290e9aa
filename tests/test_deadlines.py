"""The coordinator enforces a job's timeout and a cancel itself, also across a restart.

A contributor that only heartbeats keeps its lease; these tests use a fake agent (the real
protocol over a real socket) that takes a job and then ignores it, and a real coordinator
process with a short ``--deadline-grace-s``. The heap of deadlines is also tested alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from compound.coordinator.scheduling.deadlines import Deadline, DeadlineKind, Deadlines
from fake_agent import FakeAgent
from pg_cluster import Backend
from support import Coordinator, stream_text

# The coordinator's tests run on SQLite and on PostgreSQL; the heap's alone, once.
pytestmark = [pytest.mark.timeout(90), pytest.mark.both_backends]

GRACE_S = 1.0
# The coordinator's sweep runs every min(1, lease timeout / 4) s; a loaded machine gets more.
SLACK_S = 4.0


@pytest.fixture
def coordinator(tmp_path: Path, backend: Backend) -> Iterator[Coordinator]:
    """A coordinator with a short grace, its state on ``backend``."""
    server = Coordinator(
        data_dir=tmp_path / "coordinator",
        extra_args=[*backend.coordinator_args, "--deadline-grace-s", str(GRACE_S)],
    ).start()
    yield server
    server.stop()


def heartbeat_until(
    agent: FakeAgent, wanted: Callable[[dict[str, Any]], bool], timeout_s: float
) -> tuple[dict[str, Any], float]:
    """Heartbeat (and nothing else) until a message ``wanted`` arrives; it and when."""
    return heartbeat_all_until([(agent, wanted)], timeout_s)[0]


def heartbeat_all_until(
    waits: list[tuple[FakeAgent, Callable[[dict[str, Any]], bool]]], timeout_s: float
) -> list[tuple[dict[str, Any], float]]:
    """Each agent heartbeats (and does nothing else) until its wanted message arrives."""
    got: dict[int, tuple[dict[str, Any], float]] = {}
    deadline = time.monotonic() + timeout_s
    while len(got) < len(waits):
        if time.monotonic() > deadline:
            raise AssertionError(f"no wanted message within {timeout_s} s")
        for index, (agent, wanted) in enumerate(waits):
            agent.send({"type": "heartbeat"})
            try:
                message = agent.recv(timeout_s=0.2)
            except TimeoutError:
                continue
            if index not in got and wanted(message):
                got[index] = (message, time.monotonic())
    return [got[index] for index in range(len(waits))]


def abandon_of(job: dict[str, Any]) -> Callable[[dict[str, Any]], bool]:
    return lambda message: message["type"] == "abandon" and message["job_id"] == job["job_id"]


def system_text(coordinator: Coordinator, job_id: str) -> str:
    return stream_text(coordinator.logs(job_id), "system")


# ---------------------------------------------------------------- the heap alone


def _deadline(at: float, job: str = "j1", kind: DeadlineKind = DeadlineKind.TIMEOUT) -> Deadline:
    return Deadline(at, job, f"lease-{job}", kind)


def test_deadlines_come_due_in_time_order_once() -> None:
    """due() hands out the passed deadlines, earliest first, each once; later ones wait."""
    deadlines = Deadlines()
    deadlines.set(_deadline(30.0, "j3"))
    deadlines.set(_deadline(10.0, "j1"))
    deadlines.set(_deadline(20.0, "j2", DeadlineKind.CANCEL))
    assert deadlines.due(5.0) == []
    assert [d.job_id for d in deadlines.due(20.0)] == ["j1", "j2"]
    assert deadlines.due(20.0) == []
    assert not deadlines.cancel_pending("j2")


def test_a_dropped_deadline_never_comes_due_and_the_heap_stays_small() -> None:
    """drop() (the lease went) removes a job's deadlines; many drops do not grow the heap."""
    deadlines = Deadlines()
    for number in range(10_000):
        deadlines.set(_deadline(float(number), f"j{number}"))
        deadlines.drop(f"j{number}")
    deadlines.set(_deadline(5.0, "kept"))
    assert len(deadlines) == 1
    assert len(deadlines._heap) <= 200  # rebuilt once dropped entries are the majority
    assert [d.job_id for d in deadlines.due(1e9)] == ["kept"]


def test_the_earlier_of_two_deadlines_of_one_lease_stands() -> None:
    """A second cancel does not push the first one's deadline back; a new lease replaces."""
    deadlines = Deadlines()
    deadlines.set(_deadline(10.0, kind=DeadlineKind.CANCEL))
    deadlines.set(_deadline(50.0, kind=DeadlineKind.CANCEL))
    assert deadlines.due(10.0) == [_deadline(10.0, kind=DeadlineKind.CANCEL)]
    deadlines.set(_deadline(10.0))
    deadlines.set(Deadline(40.0, "j1", "another-lease", DeadlineKind.TIMEOUT))
    assert deadlines.due(20.0) == []
    assert deadlines.due(40.0)[0].lease_id == "another-lease"


def test_restored_deadlines_give_the_agent_its_lease_time_first() -> None:
    """At a restart, a timeout that passed while the coordinator was down waits until the
    agent could have come back; a cancel asked for before gets the grace after that; a job
    without a timeout gets no timeout deadline."""
    deadlines = Deadlines(grace_s=2.0)
    deadlines.started("untimed", "l0", None, at=0.0)
    deadlines.restored(
        "j1", "l1", timeout_s=5.0, granted_at=0.0, cancel_requested=True, back_by=100.0
    )
    deadlines.restored(
        "j2", "l2", timeout_s=500.0, granted_at=0.0, cancel_requested=False, back_by=100.0
    )
    assert deadlines.cancel_pending("j1") and not deadlines.cancel_pending("j2")
    assert deadlines.due(100.0) == [Deadline(100.0, "j1", "l1", DeadlineKind.TIMEOUT)]
    assert deadlines.due(102.0) == [Deadline(102.0, "j1", "l1", DeadlineKind.CANCEL)]
    assert deadlines.due(501.0) == []
    assert deadlines.due(502.0)[0].job_id == "j2"
    assert len(deadlines) == 0
    status, error = Deadline(1.0, "j", "l", DeadlineKind.TIMEOUT).ending(2.0)
    assert status == "timed_out" and "within 2 s after it ran past its timeout" in error


# ---------------------------------------------------------------- a real coordinator


def test_a_job_past_its_timeout_ends_though_its_contributor_only_heartbeats(
    coordinator: Coordinator,
) -> None:
    """A contributor that takes a job with timeout_s=1 and only heartbeats is told to
    abandon it, the job ends timed_out by the coordinator within timeout + grace + a sweep
    with a note saying why, and a late report under the lease is refused."""
    agent = FakeAgent(coordinator)
    job_id = coordinator.submit("import time; time.sleep(60)", timeout_s=1)
    job = agent.recv_type("job")
    handed_at = time.monotonic()
    abandon, abandoned_at = heartbeat_until(agent, abandon_of(job), 1 + GRACE_S + SLACK_S + 5)
    assert abandoned_at - handed_at < 1 + GRACE_S + SLACK_S
    assert "did not end the job" in abandon["reason"]
    view = coordinator.job(job_id)
    assert view["status"] == "timed_out", view
    assert view["error"].startswith("timed out by the coordinator: its contributor did not")
    assert "[compound] timed out by the coordinator" in system_text(coordinator, job_id)

    agent.done(job, last_seq=-1)  # too late: its lease is gone
    heartbeat_until(agent, abandon_of(job), 10)
    assert coordinator.job(job_id)["status"] == "timed_out"
    # Its slot is free again: the next job goes to it.
    coordinator.submit("print(2)")
    assert agent.recv_type("job")["job_id"] != job_id


def test_an_ignored_cancel_of_a_running_job_ends_it_within_the_grace(
    coordinator: Coordinator,
) -> None:
    """A running job's contributor gets the cancel and ignores it: the job is cancelled by
    the coordinator within the grace (plus a sweep) and its contributor told to abandon."""
    agent = FakeAgent(coordinator)
    job_id = coordinator.submit("import time; time.sleep(60)")
    job = agent.recv_type("job")
    agent.log(job, [0])  # it runs, and says so
    assert coordinator.api("POST", f"/api/v1/jobs/{job_id}/cancel").status_code == 202
    cancelled_at = time.monotonic()
    heartbeat_until(agent, lambda m: m["type"] == "cancel" and m["job_id"] == job_id, 10)
    assert coordinator.job(job_id)["status"] == "running"  # its agent gets the grace first
    _, abandoned_at = heartbeat_until(agent, abandon_of(job), GRACE_S + SLACK_S + 5)
    assert abandoned_at - cancelled_at < GRACE_S + SLACK_S
    view = coordinator.job(job_id)
    assert view["status"] == "cancelled", view
    assert "did not end the job" in view["error"]
    assert "[compound] cancelled by the coordinator" in system_text(coordinator, job_id)


def test_a_job_that_reports_in_time_ends_as_its_agent_said(coordinator: Coordinator) -> None:
    """A contributor that answers a cancel within the grace decides the ending: no note."""
    agent = FakeAgent(coordinator)
    job_id = coordinator.submit("import time; time.sleep(60)", timeout_s=30)
    job = agent.recv_type("job")
    assert coordinator.api("POST", f"/api/v1/jobs/{job_id}/cancel").status_code == 202
    agent.recv_type("cancel")
    agent.send(
        {"type": "done", **{k: job[k] for k in ("job_id", "lease_id")}, "status": "cancelled"}
    )
    assert agent.recv_type("ack")["done"] is True
    view = coordinator.job(job_id)
    assert view["status"] == "cancelled" and view["error"] is None
    assert system_text(coordinator, job_id) == ""


def test_deadlines_survive_a_coordinator_restart(coordinator: Coordinator) -> None:
    """SIGKILL the coordinator while a timed job and a cancelled job run on contributors
    that ignore them: after the restart both end (timed_out, cancelled) by the deadlines
    rebuilt from the rows, and the cancel is sent again to the contributor that resumes."""
    timed_agent = FakeAgent(coordinator)
    timed_id = coordinator.submit("import time; time.sleep(60)", timeout_s=5)
    timed = timed_agent.recv_type("job")
    handed_at = time.monotonic()
    cancel_agent = FakeAgent(coordinator)
    cancel_id = coordinator.submit("import time; time.sleep(60)")
    cancelled = cancel_agent.recv_type("job")
    assert coordinator.api("POST", f"/api/v1/jobs/{cancel_id}/cancel").status_code == 202
    cancel_agent.recv_type("cancel")

    assert time.monotonic() - handed_at < 5  # the timeout has not passed yet
    coordinator.kill()
    coordinator.start()  # same port, same data directory
    assert coordinator.job(timed_id)["status"] == "running"
    resumed = []
    for old, job in ((timed_agent, timed), (cancel_agent, cancelled)):
        old.close()
        running = [{"job_id": job["job_id"], "lease_id": job["lease_id"]}]
        resumed.append(FakeAgent(coordinator, node_id=old.node_id, hello={"running": running}))
    restarted_at = time.monotonic()
    timed_agent, cancel_agent = resumed
    # Each gets its lease's time to report what it did while the coordinator was away, then
    # the grace; the cancel is sent again first.
    limit_s = coordinator.lease_timeout_s + GRACE_S + SLACK_S + 5
    seen: list[str] = []

    def cancel_then_abandon(message: dict[str, Any]) -> bool:
        seen.append(message["type"])
        return abandon_of(cancelled)(message)

    heartbeat_all_until(
        [(timed_agent, abandon_of(timed)), (cancel_agent, cancel_then_abandon)], limit_s
    )
    assert seen.index("cancel") < seen.index("abandon"), seen
    assert time.monotonic() - restarted_at < limit_s
    assert coordinator.job(timed_id)["status"] == "timed_out"
    assert coordinator.job(cancel_id)["status"] == "cancelled"
    assert "cancelled by the coordinator" in coordinator.job(cancel_id)["error"]
