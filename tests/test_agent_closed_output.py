"""An agent whose output reader is gone (its parent killed, a `| tee` that died) still stops
cleanly on SIGTERM: its warm containers are removed and its jobs still reach the coordinator."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import (
    STARTUP_TIMEOUT_S,
    TEST_IMAGE,
    Coordinator,
    OutputLines,
    containers_of,
    product_env,
    stream_text,
    wait_until,
)

STOP_TIMEOUT_S = 30.0
# Long enough that no lease expires during a test: every move of a job is the agent's.
LEASE_TIMEOUT_S = 60.0
LONG_JOB = "import time\nprint('start', flush=True)\ntime.sleep(60)\n"


class Started:
    """A `python -m compound agent --events json` child whose stdout and stderr are pipes
    of their own: ``closing`` is left unread until the test closes it (a read blocked in a
    thread would keep the pipe's read end open), the other is collected."""

    def __init__(self, coordinator: Coordinator, state_dir: Path, closing: str) -> None:
        self.state_dir = state_dir
        self.closing = closing
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "compound",
                "agent",
                "--coordinator",
                coordinator.url,
                "--image",
                TEST_IMAGE,
                "--runtime",
                "runc",
                "--name",
                "closed-output",
                "--state-dir",
                str(state_dir),
                "--grace",
                "2",
                "--drain-s",
                "0.5",
                "--events",
                "json",
                "--slots",
                "1",
                "--warm",
                "1",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=product_env(),
            start_new_session=True,
        )
        kept = self.proc.stderr if closing == "stdout" else self.proc.stdout
        self.kept = OutputLines(kept)

    @property
    def node_id(self) -> str:
        return (self.state_dir / "node_id").read_text().strip()

    def close_output(self) -> None:
        """Close this process's read end of the unread stream: its reader is gone."""
        pipe = self.proc.stdout if self.closing == "stdout" else self.proc.stderr
        assert pipe is not None
        pipe.close()

    def output(self) -> str:
        kept = "stderr" if self.closing == "stdout" else "stdout"
        return f"the agent's {kept}:\n{self.kept.text()}"


@pytest.fixture
def patient(tmp_path: Path) -> Iterator[Coordinator]:
    """A coordinator whose leases outlast every test here."""
    server = Coordinator(data_dir=tmp_path / "patient", lease_timeout_s=LEASE_TIMEOUT_S).start()
    yield server
    server.stop()


@pytest.fixture
def started(docker_engine: str) -> Iterator[list[Started]]:
    """Agents a test starts; afterwards each is ended and, as a safety net, the containers
    of its own node id only are removed."""
    agents: list[Started] = []
    yield agents
    for agent in agents:
        if agent.proc.poll() is None:
            agent.proc.kill()
            agent.proc.wait(10)
        if (agent.state_dir / "node_id").exists():
            leftovers = containers_of(agent.node_id, jobs_only=False)
            if leftovers:
                subprocess.run(["docker", "rm", "-f", *leftovers], capture_output=True)
        with contextlib.suppress(OSError):  # as support.remove_mount_dir
            recorded = (agent.state_dir / "mount-dir").read_text().strip()
            shutil.rmtree(recorded, ignore_errors=True)


def start(
    started: list[Started], coordinator: Coordinator, tmp_path: Path, closing: str
) -> Started:
    """An agent connected to ``coordinator`` with its warm container up."""
    agent = Started(coordinator, tmp_path / f"agent-{len(started)}", closing)
    started.append(agent)
    wait_until(
        lambda: (agent.state_dir / "node_id").exists() or agent.proc.poll() is not None,
        STARTUP_TIMEOUT_S,
        "the agent's node id",
    )
    assert agent.proc.poll() is None, agent.output()
    coordinator.wait_for_contributor(agent.node_id, "idle", timeout_s=STARTUP_TIMEOUT_S)
    wait_until(
        lambda: containers_of(agent.node_id, jobs_only=False), STARTUP_TIMEOUT_S, "a warm container"
    )
    return agent


def contributor(coordinator: Coordinator, node_id: str) -> dict[str, Any]:
    row: dict[str, Any] = next(r for r in coordinator.contributors() if r["id"] == node_id)
    return row


def heartbeats_go_on(coordinator: Coordinator, agent: Started) -> None:
    """Until the coordinator has had two more heartbeats from ``agent`` (after each, the
    agent writes a stats event and, on the second, has written one since the close); fails
    at once if it goes offline or exits meanwhile."""
    for _ in range(2):
        seen = contributor(coordinator, agent.node_id)["last_seen"]

        def beat(seen: Any = seen) -> bool:
            row = contributor(coordinator, agent.node_id)
            assert row["state"] != "offline", f"the agent went offline:\n{agent.output()}"
            assert agent.proc.poll() is None, f"the agent exited:\n{agent.output()}"
            return bool(row["last_seen"] != seen)

        wait_until(beat, 10, "a heartbeat")


def stop(agent: Started) -> int:
    """SIGTERM, then the agent's exit status (it must exit promptly)."""
    agent.proc.send_signal(signal.SIGTERM)
    try:
        return agent.proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the agent did not exit on SIGTERM:\n{agent.output()}") from None


def test_sigterm_with_stdout_gone_removes_the_warm_container(
    started: list[Started], patient: Coordinator, tmp_path: Path
) -> None:
    """An idle agent whose stdout reader is gone stays connected, then on SIGTERM exits 0
    and leaves no container of its node behind."""
    agent = start(started, patient, tmp_path, "stdout")
    agent.close_output()
    heartbeats_go_on(patient, agent)
    assert stop(agent) == 0, agent.output()
    assert not containers_of(agent.node_id, jobs_only=False), agent.output()
    patient.wait_for_contributor(agent.node_id, "offline", timeout_s=10)


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_sigterm_with_its_reader_gone_hands_the_job_back(
    started: list[Started], patient: Coordinator, tmp_path: Path, stream: str
) -> None:
    """stdout (or stderr) closed by its reader while a job runs: on SIGTERM the agent still
    hands the job back, removes every container of its node and exits 0."""
    agent = start(started, patient, tmp_path, stream)
    job_id = patient.submit(LONG_JOB)
    patient.wait_for_status(job_id, {"running"}, timeout_s=30)
    wait_until(lambda: patient.logs(job_id), 30, "the job's first output")
    agent.close_output()
    heartbeats_go_on(patient, agent)
    assert stop(agent) == 0, agent.output()
    assert not containers_of(agent.node_id, jobs_only=False), agent.output()
    job = patient.job(job_id)
    assert job["status"] == "queued", (job, agent.output())
    assert "handed back (its contributor is stopping)" in stream_text(
        patient.logs(job_id), "system"
    )
    patient.wait_for_contributor(agent.node_id, "offline", timeout_s=10)


def test_a_job_finishes_with_stdout_closed(
    started: list[Started], patient: Coordinator, tmp_path: Path
) -> None:
    """--events json with stdout closed while a job runs: the job still finishes, its output
    and result reach the coordinator, and SIGTERM then cleans up."""
    agent = start(started, patient, tmp_path, "stdout")
    job_id = patient.submit(
        "import time\nprint('before', flush=True)\ntime.sleep(1.5)\nprint('after')\n"
    )
    wait_until(lambda: patient.logs(job_id), 30, "the job's first output")
    agent.close_output()
    done = patient.wait_for_status(job_id, {"succeeded", "failed", "cancelled"}, 60)
    assert done["status"] == "succeeded", (done, agent.output())
    assert stream_text(patient.logs(job_id)) == "before\nafter\n"
    assert contributor(patient, agent.node_id)["state"] == "idle", agent.output()
    assert stop(agent) == 0, agent.output()
    assert not containers_of(agent.node_id, jobs_only=False), agent.output()


GONE_READER_SCRIPT = """
import logging, sys
from compound.agent.closed_output import write_line
from compound.cli.log_format import configure
sys.stdin.read()  # until the test has closed both read ends
configure("info", "text")
written = []
for n in range(3):
    logging.info("line %d", n)
    written.append(write_line(sys.stdout, f"event {n}"))
assert written == [False, True, True], written  # then to /dev/null, unread
"""


def test_writes_to_gone_readers_neither_raise_nor_change_the_exit_status() -> None:
    """Events and log lines written after their readers left raise nothing, and Python's
    last flush does not turn the exit status into 120."""
    proc = subprocess.Popen(
        [sys.executable, "-c", GONE_READER_SCRIPT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=product_env(),
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    proc.stderr.close()
    proc.stdin.close()
    assert proc.wait(30) == 0
