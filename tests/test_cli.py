"""The `compound` command as a user runs it: real processes, real coordinator and agent."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
from pathlib import Path

from support import Agent, Coordinator, product_env, run_cli, start_submit, wait_until


def write(tmp_path: Path, text: str, name: str = "job.py") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_help_explains_commands() -> None:
    """--help names every command; submit's help covers Ctrl-C and exit codes."""
    top = run_cli("--help")
    assert top.returncode == 0
    for command in (
        "coordinator",
        "agent",
        "submit",
        "logs",
        "status",
        "cancel",
        "jobs",
        "contributors",
        "image",
    ):
        assert command in top.stdout.decode()
    submit = run_cli("submit", "--help").stdout.decode()
    assert "Ctrl-C" in submit and "124" in submit and "COMPOUND_COORDINATOR" in submit


def test_submit_streams_and_exits_with_script_code(
    coordinator: Coordinator, agent: Agent, tmp_path: Path
) -> None:
    """stdout to stdout, stderr to stderr, exit code passed through, args passed on."""
    script = write(
        tmp_path,
        "import sys\nprint('out', sys.argv[1:])\nprint('err', file=sys.stderr)\nsys.exit(4)\n",
    )
    result = run_cli("submit", str(script), "x", "--", "--y", coordinator=coordinator)
    assert result.stdout == b"out ['x', '--y']\n"
    assert result.stderr == b"err\n"
    assert result.returncode == 4


def test_detach_status_logs_jobs_contributors(
    coordinator: Coordinator, agent: Agent, tmp_path: Path
) -> None:
    """--detach prints the id; the other commands read the job back."""
    script = write(tmp_path, "print('done here')\n")
    detached = run_cli("submit", "--detach", str(script), coordinator=coordinator)
    job_id = detached.stdout.decode().strip()
    assert detached.returncode == 0 and len(job_id) >= 8
    coordinator.wait_for_status(job_id, {"succeeded"})
    status = json.loads(run_cli("status", job_id, "--json", coordinator=coordinator).stdout)
    assert status["status"] == "succeeded" and status["exit_code"] == 0
    assert run_cli("logs", job_id, coordinator=coordinator).stdout == b"done here\n"
    follow = run_cli("logs", job_id, "--follow", coordinator=coordinator)
    assert follow.stdout == b"done here\n" and follow.returncode == 0
    jobs = json.loads(run_cli("jobs", "--json", coordinator=coordinator).stdout)
    assert jobs[0]["id"] == job_id
    contributors = json.loads(run_cli("contributors", "--json", coordinator=coordinator).stdout)
    assert contributors[0]["id"] == agent.node_id
    table = run_cli("jobs", coordinator=coordinator).stdout.decode()
    assert job_id in table and "succeeded" in table


def test_timeout_and_cancel_exit_codes(
    coordinator: Coordinator, agent: Agent, tmp_path: Path
) -> None:
    """A timed-out job exits 124 with a reason; `compound cancel` ends a job (exit 130)."""
    sleeper = write(tmp_path, "import time\nprint('zz', flush=True)\ntime.sleep(120)\n")
    timed_out = run_cli("submit", "--timeout", "1", str(sleeper), coordinator=coordinator)
    assert timed_out.returncode == 124
    assert b"timed out" in timed_out.stderr and b"Traceback" not in timed_out.stderr

    job_id = run_cli("submit", "-d", str(sleeper), coordinator=coordinator).stdout.decode()
    job_id = job_id.strip()
    wait_until(lambda: coordinator.logs(job_id), 30, "the job to start")
    assert run_cli("cancel", job_id, coordinator=coordinator).returncode == 0
    follow = run_cli("logs", "-f", job_id, coordinator=coordinator)
    assert follow.returncode == 130 and b"cancelled" in follow.stderr


def test_ctrl_c_cancels_the_job(coordinator: Coordinator, agent: Agent, tmp_path: Path) -> None:
    """Ctrl-C while following cancels the job on the coordinator and exits 130."""
    sleeper = write(tmp_path, "import time\nprint('started', flush=True)\ntime.sleep(120)\n")
    cli, lines = start_submit(sleeper, coordinator)
    lines.wait_for(lambda line: line == "started", 60, "the job to start")
    cli.send_signal(signal.SIGINT)
    assert cli.wait(timeout=60) == 130
    job = coordinator.api("GET", "/api/v1/jobs").json()["jobs"][0]
    assert job["status"] == "cancelled"


def test_queue_position_shown_on_a_terminal(coordinator: Coordinator, tmp_path: Path) -> None:
    """With stderr on a terminal and no contributor, submit says the job is queued, and
    why it waits."""
    script = write(tmp_path, "print('x')\n")
    controller, terminal = pty.openpty()
    cli = subprocess.Popen(
        [sys.executable, "-m", "compound", "submit", str(script), "-c", coordinator.url],
        stdout=subprocess.DEVNULL,
        stderr=terminal,
        env=product_env(),
    )
    os.close(terminal)
    seen = b""
    try:
        while b"no contributor online" not in seen:
            seen += os.read(controller, 4096)
        assert b"queued (position 1)" in seen
    finally:
        cli.send_signal(signal.SIGINT)
        cli.wait(timeout=30)
        os.close(controller)


def test_environment_variable_sets_the_coordinator(
    coordinator: Coordinator, tmp_path: Path
) -> None:
    """COMPOUND_COORDINATOR is the default URL."""
    env = product_env(COMPOUND_COORDINATOR=coordinator.url)
    result = subprocess.run(
        [sys.executable, "-m", "compound", "jobs", "--json"],
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0 and json.loads(result.stdout) == []


def test_clear_errors_without_tracebacks(tmp_path: Path) -> None:
    """Unreachable coordinator, missing file, unknown job: one sentence, no traceback."""
    script = write(tmp_path, "print(1)\n")
    unreachable = run_cli("submit", str(script), "-c", "http://127.0.0.1:9")
    assert unreachable.returncode == 3
    assert b"cannot reach the coordinator" in unreachable.stderr
    missing = run_cli("submit", str(tmp_path / "missing.py"))
    assert missing.returncode == 2 and b"no such file" in missing.stderr
    for result in (unreachable, missing):
        assert b"Traceback" not in result.stderr


def test_unknown_job_id(coordinator: Coordinator) -> None:
    """status/logs/cancel of an unknown id say so in one line."""
    for command in ("status", "logs", "cancel"):
        result = run_cli(command, "nope", coordinator=coordinator)
        assert result.returncode == 3
        assert b"no job with id" in result.stderr and b"Traceback" not in result.stderr


def test_agent_explains_a_missing_sandbox(coordinator: Coordinator, tmp_path: Path) -> None:
    """No Docker engine, or no image: the agent says so in a sentence and exits 1."""
    no_engine = subprocess.run(
        [
            sys.executable,
            "-m",
            "compound",
            "agent",
            "--coordinator",
            coordinator.url,
            "--state-dir",
            str(tmp_path / "a"),
        ],
        capture_output=True,
        timeout=60,
        env=product_env(DOCKER_HOST="unix:///nonexistent/docker.sock"),
    )
    assert no_engine.returncode == 1
    assert b"Docker is not running" in no_engine.stderr
    no_image = run_cli(
        "agent",
        "--coordinator",
        coordinator.url,
        "--state-dir",
        str(tmp_path / "b"),
        "--image",
        "compound-test/missing:none",
    )
    assert no_image.returncode == 1
    assert b"compound-test/missing:none" in no_image.stderr
    for result in (no_engine, no_image):
        assert b"Traceback" not in result.stderr


def test_coordinator_explains_why_it_cannot_start(coordinator: Coordinator, tmp_path: Path) -> None:
    """A port in use or an unusable data directory: one sentence, exit 1, no traceback."""
    busy = run_cli(
        "coordinator", "--port", str(coordinator.port), "--data-dir", str(tmp_path / "data")
    )
    assert busy.returncode == 1
    assert f"cannot listen on 127.0.0.1:{coordinator.port}".encode() in busy.stderr
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    bad_dir = run_cli("coordinator", "--port", "0", "--data-dir", str(blocker / "data"))
    assert bad_dir.returncode == 1 and b"cannot use" in bad_dir.stderr
    for result in (busy, bad_dir):
        assert b"Traceback" not in result.stderr
