"""Soak: does the coordinator stay healthy while its sockets are abused, all at once?

Starts its own coordinator (temp data dir, port 0) and one real agent, runs a ~50 MB log job,
then for ``--duration`` seconds, at once, on loopback:

1. 2,000 abandoned submitters: a job is queued, its seed socket /ws/submitter/{id} opened
   and dropped at once (half with a close frame, half without);
2. 300 followers of the 50 MB log that never read a byte (tiny receive buffer);
3. up to 5,000 half-open connections (half a request, then silence), reopened when closed;
4. a fake agent sending bad log batches (≤ 50 messages/s), reconnecting when closed;

while a separate observer process probes /healthz every 100 ms (fresh connection, 5 s
timeout), samples the coordinator's RSS every 500 ms and follows ordinary jobs (1,000 known
lines, one due every ~3 s) checking their output byte for byte. Then it SIGTERMs the
coordinator and times its exit. Exit code 0 if every acceptance criterion holds:

    PYTHONPATH=src .venv/bin/python bench/soak.py [--duration 60] [--json out.json]

Why the ordinary jobs are queued before the load starts: the queue is first-in first-out and
there is one agent, so the 2,000 abandoned jobs, which must stay queued to keep their
submitter sockets meaningful, would otherwise sit in front of every ordinary job. Each
ordinary job waits inside its container until its due time, so one finishes every ~3 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from soak_contributor import BadContributor
from soak_load import AbandonedSubmitters, HalfOpenConnections, LoopLag, SilentFollowers
from soak_observer import ObserverPlan, OrdinaryJob, run_observer
from soak_report import Verdict, print_report

from support import Agent, Coordinator, containers_of

BIG_LOG_LINES = 500_000  # of 100 bytes each: ~50 MB
BIG_LOG_SCRIPT = (
    "import sys\nline = 'x' * 99 + '\\n'\nwrite = sys.stdout.write\n"
    f"for _ in range({BIG_LOG_LINES}):\n    write(line)\n"
)
ORDINARY_LINES = 1000
SETUP_TIMEOUT_S = 300.0
DRAIN_S = 30.0  # after the load, for the last ordinary jobs to finish
SIGTERM_LIMIT_S = 10.0
SIGKILL_AFTER_S = 20.0
LOAD_STOP_TIMEOUT_S = 15.0
FIRST_ORDINARY_AFTER_S = 3.0
BASELINE_S = 5.0


@dataclass
class Scale:
    duration_s: float
    abandoned: int = 2000
    followers: int = 300
    half_open: int = 5000
    ordinary_every_s: float = 3.0

    @property
    def ordinary_count(self) -> int:
        return max(1, int((self.duration_s - FIRST_ORDINARY_AFTER_S) // self.ordinary_every_s))


@dataclass
class Started:
    """What the soak started, so that clean-up can end exactly that, whatever happened."""

    coordinator: Coordinator | None = None
    agent: Agent | None = None
    observer: multiprocessing.process.BaseProcess | None = None
    figures: dict[str, Any] = field(default_factory=dict)


def ordinary_line(index: int, number: int) -> str:
    return f"ordinary {index:03d} line {number:04d} {'abcdefghij' * 5}\n"


def ordinary_script(index: int, prints_at_epoch: float) -> str:
    # The container's clock is the host's: wait for the due time, then print known lines.
    return (
        "import time\n"
        f"time.sleep(max(0.0, min({prints_at_epoch!r} - time.time(), 120.0)))\n"
        f"for n in range({ORDINARY_LINES}):\n"
        f"    print(f'ordinary {index:03d} line {{n:04d}} {'abcdefghij' * 5}')\n"
    )


def expected_stdout(index: int) -> str:
    return "".join(ordinary_line(index, number) for number in range(ORDINARY_LINES))


async def submit(client: httpx.AsyncClient, script: str, name: str) -> str:
    response = await client.post("/api/v1/jobs", json={"script": script, "name": name})
    response.raise_for_status()
    job_id: str = response.json()["id"]
    return job_id


async def wait_for_end(client: httpx.AsyncClient, job_id: str, timeout_s: float) -> str:
    async with asyncio.timeout(timeout_s):
        while True:
            status: str = (await client.get(f"/api/v1/jobs/{job_id}")).json()["status"]
            if status in ("succeeded", "failed", "cancelled"):
                return status
            await asyncio.sleep(0.5)


async def prepare(
    started: Started, root: Path, client: httpx.AsyncClient, fake: BadContributor
) -> str:
    """Decoy for the fake agent, then the real agent and its 50 MB job; returns that job."""
    await fake.wait_registered(SETUP_TIMEOUT_S)
    # The fake is the only contributor yet: the decoy can only go to it.
    await submit(client, "print('decoy')\n", "soak-decoy")
    await fake.wait_for_decoy(SETUP_TIMEOUT_S)
    assert started.coordinator is not None
    agent = Agent(started.coordinator.url, root / "agent", name="soak-agent")
    started.agent = agent
    await asyncio.to_thread(agent.start)
    began = time.monotonic()
    big_job = await submit(client, BIG_LOG_SCRIPT, "soak-50MB-log")
    status = await wait_for_end(client, big_job, SETUP_TIMEOUT_S)
    if status != "succeeded":
        raise SystemExit(f"the 50 MB log job ended {status}; cannot soak")
    started.figures["big_log_job_s"] = time.monotonic() - began
    return big_job


async def queue_ordinary(
    client: httpx.AsyncClient, scale: Scale, load_start_epoch: float
) -> list[OrdinaryJob]:
    jobs = []
    for index in range(scale.ordinary_count):
        due = load_start_epoch + FIRST_ORDINARY_AFTER_S + index * scale.ordinary_every_s
        job_id = await submit(client, ordinary_script(index, due), f"soak-ordinary-{index}")
        jobs.append(OrdinaryJob(job_id, expected_stdout(index), due))
    return jobs


def start_observer(started: Started, plan: ObserverPlan) -> None:
    # A process of its own: its timings must not depend on the load generator's event loop.
    context = multiprocessing.get_context("spawn")
    started.observer = context.Process(target=run_observer, args=(plan,), name="soak-observer")
    started.observer.start()


async def apply_load(port: int, scale: Scale, big_job: str, fake: BadContributor) -> dict[str, Any]:
    """Every abusive client at once for the duration; returns their figures."""
    stop = asyncio.Event()
    abandoned = AbandonedSubmitters(port, scale.abandoned, spread_over_s=0.9 * scale.duration_s)
    followers = SilentFollowers(port, big_job, scale.followers)
    half_open = HalfOpenConnections(port, scale.half_open, max_opens=20 * scale.half_open)
    lag = LoopLag()
    own = psutil.Process()
    cpu_before = sum(own.cpu_times()[:2])
    fake.misbehave()
    loads = [abandoned.run(stop), followers.run(stop), half_open.run(stop), lag.run(stop)]
    tasks = [asyncio.create_task(load) for load in loads]
    await asyncio.sleep(scale.duration_s)
    stop.set()
    _, pending = await asyncio.wait(tasks, timeout=LOAD_STOP_TIMEOUT_S)
    for task in pending:
        task.cancel()
    return {
        "abandoned_submitters": abandoned.figures(),
        "silent_followers": followers.figures(),
        "half_open": half_open.figures(),
        "load_loop_lag": lag.figures(),
        "load_cpu_s": sum(own.cpu_times()[:2]) - cpu_before,
        "load_tasks_stuck": len(pending),
    }


async def soak(started: Started, root: Path, scale: Scale) -> None:
    coordinator = Coordinator(
        data_dir=root / "data",
        heartbeat_interval_s=5,
        lease_timeout_s=15,
        # 2,000 queued jobs from one address is the load itself, not abuse to refuse.
        extra_args=["--max-queued-per-submitter", "10000"],
    )
    started.coordinator = coordinator
    await asyncio.to_thread(coordinator.start)
    fake = BadContributor(coordinator.ws_url)
    fake_stop = asyncio.Event()
    fake_task = asyncio.create_task(fake.run(fake_stop))
    async with httpx.AsyncClient(base_url=coordinator.url, timeout=30) as client:
        big_job = await prepare(started, root, client, fake)
        # The observer needs a moment to start, then probes an idle coordinator for a baseline.
        baseline_start = time.time() + 2.0
        load_start = baseline_start + BASELINE_S
        ordinary = await queue_ordinary(client, scale, load_start)
    plan = ObserverPlan(
        port=coordinator.port,
        coordinator_pid=_pid(coordinator),
        agent_pid=_pid(started.agent) if started.agent else 0,
        baseline_start_epoch=baseline_start,
        load_start_epoch=load_start,
        load_end_epoch=load_start + scale.duration_s,
        drain_until_epoch=load_start + scale.duration_s + DRAIN_S,
        ordinary=ordinary,
        result_path=root / "observer.json",
    )
    start_observer(started, plan)
    await asyncio.sleep(max(0.0, load_start - time.time()))
    started.figures["load"] = await apply_load(coordinator.port, scale, big_job, fake)
    fake_stop.set()
    await asyncio.wait({fake_task}, timeout=LOAD_STOP_TIMEOUT_S)
    started.figures["bad_contributor"] = fake.figures()
    started.figures["observer"] = await _observer_result(started, plan)
    started.figures["sigterm"] = await asyncio.to_thread(sigterm_exit_time, coordinator)
    log_path = os.environ.get("SOAK_COORDINATOR_LOG")
    if log_path and coordinator.output is not None:
        # The coordinator's own log, for finding what a failed criterion came from.
        Path(log_path).write_text(coordinator.output.text())


def _pid(managed: Coordinator | Agent) -> int:
    # support.py starts `python -m compound ...` itself, so this is the server's own pid.
    assert managed.proc is not None
    return int(managed.proc.pid)


async def _observer_result(started: Started, plan: ObserverPlan) -> dict[str, Any]:
    assert started.observer is not None
    limit_s = plan.drain_until_epoch - time.time() + 30
    await asyncio.to_thread(started.observer.join, max(1.0, limit_s))
    if not plan.result_path.exists():
        raise SystemExit("the observer process did not report; see its output above")
    result: dict[str, Any] = json.loads(plan.result_path.read_text())
    return result


def sigterm_exit_time(coordinator: Coordinator) -> dict[str, Any]:
    """SIGTERM, then wait; SIGKILL after ``SIGKILL_AFTER_S`` if it is still there."""
    assert coordinator.proc is not None
    began = time.monotonic()
    coordinator.proc.send_signal(signal.SIGTERM)
    try:
        code = coordinator.proc.wait(SIGKILL_AFTER_S)
    except subprocess.TimeoutExpired:
        coordinator.proc.kill()
        coordinator.proc.wait(5)
        return {"exit_s": None, "killed": True, "exit_code": None}
    return {"exit_s": time.monotonic() - began, "killed": False, "exit_code": code}


def clean_up(started: Started) -> None:
    """End what we started: observer, coordinator, agent, then the agent's containers."""
    if started.observer is not None and started.observer.is_alive():
        started.observer.terminate()
        started.observer.join(5)
    coordinator = started.coordinator
    if coordinator is not None and coordinator.proc is not None and coordinator.proc.poll() is None:
        coordinator.proc.kill()  # the soak ended early: no SIGTERM timing to protect
        coordinator.proc.wait(5)
    if started.agent is not None:
        node_id = _node_id(started.agent)
        started.agent.stop()
        if node_id:
            leftovers = containers_of(node_id)
            if leftovers:
                subprocess.run(["docker", "rm", "-f", *leftovers], capture_output=True, check=False)
            started.figures["containers_left_after_agent_stop"] = len(leftovers)


def _node_id(agent: Agent) -> str | None:
    try:
        return str(agent.node_id)
    except OSError:
        return None


def raise_file_limit() -> int:
    # 5,000 held connections plus everything else need more than the usual 1,024.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class HardDeadline(BaseException):
    """The whole soak ran past its overall limit; raised from a SIGALRM handler."""


def _on_signal(signum: int, _frame: Any) -> None:
    if signum == signal.SIGALRM:
        raise HardDeadline
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply the connection counts (for trials)"
    )
    options = parser.parse_args()
    scale = Scale(options.duration)
    scale.abandoned = int(scale.abandoned * options.scale)
    scale.followers = int(scale.followers * options.scale)
    scale.half_open = int(scale.half_open * options.scale)
    started = Started(figures={"file_limit": raise_file_limit(), "scale": vars(scale)})
    for signum in (signal.SIGALRM, signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _on_signal)
    signal.alarm(int(SETUP_TIMEOUT_S + options.duration + DRAIN_S + 120))
    began = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="compound-soak-") as workdir:
            try:
                asyncio.run(soak(started, Path(workdir), scale))
            finally:
                signal.alarm(0)
                clean_up(started)
    except HardDeadline:
        print("soak: ran past its overall deadline; everything it started was ended")
        sys.exit(2)
    started.figures["wall_s"] = time.monotonic() - began
    verdict = print_report(started.figures)
    if options.json:
        options.json.write_text(json.dumps(started.figures, indent=2, default=str))
    sys.exit(0 if verdict is Verdict.PASS else 1)


if __name__ == "__main__":
    main()
