"""Failover: two coordinators on one PostgreSQL database, one SIGKILLed mid-job.

The agent and the CLI are given both (``--coordinator A,B``), or one HAProxy in front of
both (README, "Several coordinators"): the agent is connected elsewhere within 5 s, the job
finishes, and the CLI's output is byte-identical to what the script prints.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support import Agent, Coordinator, product_env, stream_text, wait_until

LINES = 40
SLOW = textwrap.dedent(f"""
    import sys, time
    for i in range({LINES}):
        print(f"line {{i}} " + "x" * (i % 7), flush=True)
        print(f"err {{i}}", file=sys.stderr, flush=True)
        time.sleep(0.1)
""")
EXPECTED_STDOUT = "".join(f"line {i} " + "x" * (i % 7) + "\n" for i in range(LINES)).encode()
EXPECTED_STDERR = "".join(f"err {i}\n" for i in range(LINES))
RECONNECT_WITHIN_S = 5.0

# Active/passive: every connection goes to A while its /healthz answers, else to B. A
# connection refused marks a server down at once (observe layer4), before its next check.
HAPROXY_CONFIG = """\
global
    maxconn 256
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
    retries 2
    option redispatch 1
frontend coordinators
    bind 127.0.0.1:{port}
    default_backend coordinators
backend coordinators
    option httpchk
    http-check send meth GET uri /healthz ver HTTP/1.1 hdr Host 127.0.0.1
    http-check expect status 200
    default-server inter 500ms fall 1 rise 1 observe layer4 error-limit 1 on-error mark-down
    server a 127.0.0.1:{port_a} check
    server b 127.0.0.1:{port_b} check backup
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def haproxy(tmp_path: Path, two_coordinators: tuple[Coordinator, Coordinator]) -> Iterator[str]:
    """Our own haproxy process (not the system's service) in front of both coordinators, on
    a loopback port; its URL."""
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(binary).exists():
        pytest.skip("HAProxy is not installed: scripts/install installs it")
    a, b = two_coordinators
    port = _free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(HAPROXY_CONFIG.format(port=port, port_a=a.port, port_b=b.port))
    check = subprocess.run([binary, "-c", "-f", str(config)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    proc = subprocess.Popen(
        [binary, "-db", "-f", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(url), 20, "haproxy to forward to a coordinator")
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _answers(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url + "/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _submit(script: Path, coordinator_url: str) -> subprocess.Popen[bytes]:
    """`compound submit SCRIPT -c URL` following the job, its stdout and stderr piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "compound", "submit", str(script), "-c", coordinator_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=product_env(),
    )


def _kill_mid_job_and_finish(
    a: Coordinator, b: Coordinator, agent: Agent, cli: subprocess.Popen[bytes]
) -> str:
    """Wait for the job to be a quarter done (read through B: one database), SIGKILL A, and
    check the agent is back within 5 s and the job finishes; the job's id."""

    def running_job() -> str | None:
        jobs = b.api("GET", "/api/v1/jobs").json()["jobs"]
        if not jobs:
            return None
        lines = stream_text(b.logs(jobs[0]["id"])).count("\n")
        return str(jobs[0]["id"]) if lines >= LINES // 4 else None

    job_id: str = wait_until(running_job, 60, "the job to be a quarter done")
    assert agent.output is not None
    mark = len(agent.output.lines)
    a.kill()
    killed_at = time.monotonic()
    agent.wait_event("connected", timeout_s=RECONNECT_WITHIN_S + 5, start=mark)
    assert time.monotonic() - killed_at < RECONNECT_WITHIN_S
    stdout, stderr = cli.communicate(timeout=90)
    assert cli.returncode == 0, stderr.decode()
    assert stdout == EXPECTED_STDOUT
    job = b.wait_for_status(job_id, {"succeeded", "failed", "cancelled"})
    assert job["status"] == "succeeded" and job["attempts"] == 1, job
    records = b.logs(job_id)
    assert stream_text(records, "stderr") == EXPECTED_STDERR
    assert [r["seq"] for r in records] == list(range(len(records)))
    return job_id


def test_sigkilled_coordinator_agent_and_follower_go_to_the_next(
    two_coordinators: tuple[Coordinator, Coordinator],
    start_agent: Callable[..., Agent],
    tmp_path: Path,
) -> None:
    """Given ``A,B``: A SIGKILLed mid-job, the agent is on B within 5 s and keeps its job;
    the CLI's follow resumes on B from its last record, its output byte-identical."""
    a, b = two_coordinators
    agent = start_agent(coordinator_url=f"{a.url},{b.url}")
    assert agent.wait_event("connecting")["url"] == f"{a.ws_url}/ws/contributor"
    script = tmp_path / "slow.py"
    script.write_text(SLOW)
    cli = _submit(script, f"{a.url},{b.url}")
    mark = len(agent.output.lines) if agent.output else 0
    _kill_mid_job_and_finish(a, b, agent, cli)
    urls = [e["url"] for e in agent.events()[mark:] if e["type"] == "connecting"]
    assert urls and urls[-1] == f"{b.ws_url}/ws/contributor"


def test_sigkilled_coordinator_behind_haproxy(
    two_coordinators: tuple[Coordinator, Coordinator],
    haproxy: str,
    start_agent: Callable[..., Agent],
    tmp_path: Path,
) -> None:
    """Through HAProxy (WebSockets, /healthz checks, B as backup): A SIGKILLed mid-job, the
    agent reconnects through it to B within 5 s, the job finishes, the output is exact."""
    a, b = two_coordinators
    agent = start_agent(coordinator_url=haproxy)
    agent_row = a.wait_for_contributor(agent.node_id)
    assert agent_row["state"] != "offline"
    script = tmp_path / "slow.py"
    script.write_text(SLOW)
    cli = _submit(script, haproxy)
    _kill_mid_job_and_finish(a, b, agent, cli)
