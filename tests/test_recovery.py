"""Nothing is lost when a process dies: coordinator SIGKILL, agent SIGKILL, leftovers.

The coordinator's crashes run on SQLite and on PostgreSQL (``both_backends``); the agent's
own clean-up does not touch the database and runs once.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from support import (
    Agent,
    Coordinator,
    OutputLines,
    containers_of,
    follow,
    product_env,
    start_submit,
    stream_text,
    wait_until,
)

NUMBERED = textwrap.dedent("""
    import sys, time
    for i in range({count}):
        print(f"line {{i}}", flush=True)
        print(f"err {{i}}", file=sys.stderr, flush=True)
        time.sleep({pause})
""")


@pytest.mark.both_backends
def test_coordinator_sigkill_mid_job_loses_nothing(
    coordinator: Coordinator, agent: Agent, tmp_path: Path
) -> None:
    """SIGKILL the coordinator mid-job and restart it: the job finishes and every line of
    both streams is there exactly once, in order, also for a CLI follower that lived
    through the restart."""
    script = tmp_path / "numbered.py"
    script.write_text(NUMBERED.format(count=60, pause=0.1))
    cli, cli_lines = start_submit(script, coordinator)
    cli_lines.wait_for(lambda line: line == "line 10", 60, "the job to be half-way")
    job_id = coordinator.api("GET", "/api/v1/jobs").json()["jobs"][0]["id"]

    coordinator.kill()
    agent.wait_event("disconnected")
    coordinator.start()  # same port, same data directory
    agent.wait_event("connected", start=len(agent.output.lines) - 1 if agent.output else 0)

    assert cli.wait(timeout=60) == 0
    records, job = follow(coordinator, job_id)
    assert job["status"] == "succeeded" and job["exit_code"] == 0 and job["attempts"] == 1
    assert stream_text(records, "stdout") == "".join(f"line {i}\n" for i in range(60))
    assert stream_text(records, "stderr") == "".join(f"err {i}\n" for i in range(60))
    assert [r["seq"] for r in records] == list(range(len(records)))
    assert [line for line in cli_lines.lines if line] == [f"line {i}" for i in range(60)]


@pytest.mark.both_backends
def test_finished_jobs_and_queue_survive_restart(
    coordinator: Coordinator, tmp_path: Path, start_agent: Callable[..., Agent]
) -> None:
    """Finished jobs and their logs, and queued jobs, are all there after a SIGKILL."""
    agent = start_agent()
    done_id = coordinator.submit("print('kept')")
    coordinator.wait_for_status(done_id, {"succeeded"})
    agent.stop()
    coordinator.wait_for_contributor(agent.node_id, "offline")
    queued_id = coordinator.submit("print('ran after restart')")
    coordinator.kill()
    coordinator.start()
    assert stream_text(coordinator.logs(done_id)) == "kept\n"
    assert coordinator.job(queued_id)["status"] == "queued"
    start_agent(state_dir=agent.state_dir)
    coordinator.wait_for_status(queued_id, {"succeeded"})
    assert stream_text(coordinator.logs(queued_id)) == "ran after restart\n"


@pytest.mark.both_backends
def test_agent_sigkill_requeues_once_then_fails(
    coordinator: Coordinator, start_agent: Callable[..., Agent]
) -> None:
    """A contributor lost mid-job: the job is requeued once, then failed "contributor lost";
    the restarted agent removes the container its dead self left behind."""
    job_id = coordinator.submit("import time\nprint('working', flush=True)\ntime.sleep(300)\n")
    first = start_agent(name="first")
    wait_until(lambda: coordinator.logs(job_id), 30, "the job's first output")
    first.kill()
    assert containers_of(first.node_id), "the container outlives its killed agent"

    requeued = coordinator.wait_for_status(job_id, {"queued"}, timeout_s=30)
    assert requeued["attempts"] == 1
    second = start_agent(name="second")
    second.wait_event("job_started", job_id=job_id)
    assert coordinator.job(job_id)["contributor_id"] == second.node_id
    second.kill()

    failed = coordinator.wait_for_status(job_id, {"failed"}, timeout_s=30)
    assert failed["error"] == "contributor lost" and failed["attempts"] == 2
    notes = stream_text(coordinator.logs(job_id), "system")
    assert "requeued" in notes and "job failed" in notes

    restarted = start_agent(name="first", state_dir=first.state_dir)
    assert restarted.node_id == first.node_id
    wait_until(lambda: not containers_of(first.node_id), 30, "orphan container removal")
    second_restarted = start_agent(name="second", state_dir=second.state_dir)
    wait_until(lambda: not containers_of(second_restarted.node_id), 30, "orphan removal")


@pytest.mark.both_backends
def test_late_report_from_replaced_contributor_is_refused(
    coordinator: Coordinator, start_agent: Callable[..., Agent]
) -> None:
    """An agent that comes back after its lease was taken over is told to abandon the job,
    so the job never runs to completion twice."""
    job_id = coordinator.submit("import time\nprint('go', flush=True)\ntime.sleep(300)\n")
    first = start_agent(name="first")
    first.wait_event("job_started", job_id=job_id)
    first_port = coordinator.port
    # Make the first agent unreachable long enough for its lease to expire: stop it with
    # SIGSTOP (a frozen machine), let the lease expire and the job go to a second agent.
    assert first.proc is not None
    first.proc.send_signal(signal.SIGSTOP)
    try:
        coordinator.wait_for_status(job_id, {"queued"}, timeout_s=30)
        second = start_agent(name="second")
        second.wait_event("job_started", job_id=job_id)
    finally:
        first.proc.send_signal(signal.SIGCONT)
    mark = first.output.lines.__len__() if first.output else 0
    first.wait_event("log", start=mark, timeout_s=30, level="warning")
    wait_until(lambda: not containers_of(first.node_id), 30, "the stale container to stop")
    assert coordinator.job(job_id)["contributor_id"] == second.node_id
    assert coordinator.port == first_port
    coordinator.api("POST", f"/api/v1/jobs/{job_id}/cancel")
    assert coordinator.wait_for_status(job_id, {"cancelled"})["status"] == "cancelled"


def test_agent_of_a_killed_desktop_app_stops_itself(
    coordinator: Coordinator, docker_engine: str, tmp_path: Path
) -> None:
    """An agent started with --parent-pid stops (and cleans up) when its parent is killed."""
    parent_code = textwrap.dedent(f"""
        import os, subprocess, sys
        subprocess.Popen([sys.executable, "-m", "compound", "agent", "--coordinator",
                          {coordinator.url!r}, "--state-dir", {str(tmp_path / "agent")!r},
                          "--events", "json", "--parent-pid", str(os.getpid())]).wait()
    """)
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=product_env(),
    )
    assert parent.stdout is not None
    events = OutputLines(parent.stdout)
    events.wait_for(lambda line: '"type":"connected"' in line, 30, "the agent to connect")
    parent.kill()
    parent.wait(10)
    events.wait_for(lambda line: '"type":"stopped"' in line, 30, "the orphaned agent to stop")
    events.wait_for(lambda line: line == "", 30, "the agent to exit")
