"""Issue 18, item 6: several coordinators on one PostgreSQL database, against one SQLite
coordinator measured in the same run (loopback only, about two minutes).

- dispatch: 100 simulated contributors (``swarm.Swarm``, the real protocol over real
  WebSockets) spread evenly over 1, 2 or 3 coordinators on one PostgreSQL database, 16
  submitters spread alike flooding the queue for a few seconds (jobs/s), then a fixed offered
  rate below saturation, open loop (p99 from POST due to job at contributor); each as a
  ratio to the SQLite coordinator. The CPU seconds each job cost the coordinators and the
  PostgreSQL server are read from /proc: the per-core costs that predict the ceiling on more
  cores.
- cross-coordinator follow: the contributor on A, the follower on B: first line p99 from the
  contributor's send to the follower's receipt (one clock), and 100,000 lines compared byte
  for byte.
- failover: a real agent (Docker, runc) given ``A,B``, a job of 40 lines followed by
  ``compound submit -c A,B``; A SIGKILLed a quarter through: the time until the agent is
  connected to B, until the job ends, and whether the output is byte-identical.

    PYTHONPATH=src .venv/bin/python bench/cluster.py [--seconds 4] [--no-failover]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cluster_processes import coordinators, postgres_cpu_seconds, start_coordinator
from figures import Figure, median_at_most, percentile, ratio_at_least, text_table
from follow_client import follow
from http_load import JobSubmitter
from scale import cpu_seconds, raise_file_limit
from swarm import Swarm
from websockets.asyncio.client import connect

from compound.protocol import (
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    Done,
    Hello,
    Job,
    JobStatus,
    Log,
    LogRecord,
    parse_coordinator_message,
    serialize,
)
from postgres import Cluster, find_binaries
from support import Agent, Coordinator, containers_of, product_env, stream_text

TRIVIAL_JOB = "print('hi')\n"
CONTRIBUTORS = 100
SUBMITTERS = 16
FLOOD_SECONDS = 4.0
LATENCY_RATE_PER_S = 100.0
LATENCY_SECONDS = 3.0
FIRST_LINE_SAMPLES = 100
FOLLOW_LINES = 100_000
LINES_PER_RECORD = 100
RECORDS_PER_MESSAGE = 50
SLOW_LINES = 40
SLOW = "\n".join(
    [
        "import sys, time",
        f"for i in range({SLOW_LINES}):",
        "    print(f'line {i} ' + 'x' * (i % 7), flush=True)",
        "    time.sleep(0.1)",
    ]
)
EXPECTED_SLOW = "".join(f"line {i} " + "x" * (i % 7) + "\n" for i in range(SLOW_LINES)).encode()


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


async def dispatch(
    servers: list[Coordinator], cluster: Cluster | None, seconds: float
) -> dict[str, float]:
    """Jobs/s with the queue flooded and p99 latency at a fixed rate, contributors and
    submitters spread evenly over ``servers``; CPU per job of the coordinators and the
    database."""
    stop = asyncio.Event()
    swarms = [
        Swarm(server.ws_url, count, prefix=f"d{index}")
        for index, (server, count) in enumerate(
            zip(servers, _split(CONTRIBUTORS, len(servers)), strict=True)
        )
    ]
    running = [asyncio.create_task(swarm.run(stop)) for swarm in swarms]
    for swarm in swarms:
        await swarm.wait_connected(60)
    arrivals: dict[str, float] = {}

    def arrived() -> dict[str, float]:
        for swarm in swarms:
            arrivals.update(swarm.job_arrivals)
        return arrivals

    floods = [
        JobSubmitter("127.0.0.1", server.port, TRIVIAL_JOB, connections)
        for server, connections in zip(servers, _split(SUBMITTERS, len(servers)), strict=True)
    ]
    pids = [server.proc.pid for server in servers if server.proc]
    coord_before = sum(cpu_seconds(pid) for pid in pids)
    db_before = postgres_cpu_seconds(cluster) if cluster else 0.0
    began = time.monotonic()
    await asyncio.gather(*(flood.flood(seconds) for flood in floods))
    sent = {job: at for flood in floods for job, at in flood.sent_at.items()}
    await _drain(lambda: len(set(sent) & set(arrived())), len(sent), 30)
    last = max(arrived().values(), default=began)
    elapsed = max(1e-6, last - began)
    dispatched = len(set(sent) & set(arrivals))
    coord_cpu = sum(cpu_seconds(pid) for pid in pids) - coord_before
    db_cpu = (postgres_cpu_seconds(cluster) - db_before) if cluster else 0.0

    offered = [
        JobSubmitter("127.0.0.1", server.port, TRIVIAL_JOB, connections)
        for server, connections in zip(servers, _split(SUBMITTERS, len(servers)), strict=True)
    ]
    rate = LATENCY_RATE_PER_S / len(servers)
    await asyncio.gather(*(o.offer(rate, LATENCY_SECONDS) for o in offered))
    due = {job: at for o in offered for job, at in o.sent_at.items()}
    await _drain(lambda: len(set(due) & set(arrived())), len(due), 30)
    stop.set()
    await asyncio.gather(*running)
    latencies = [(arrivals[job] - at) * 1000 for job, at in due.items() if job in arrivals]
    return {
        "jobs_per_s": dispatched / elapsed,
        "p99_ms": percentile(latencies, 0.99),
        "median_ms": percentile(latencies, 0.5),
        "coordinator_cpu_ms_per_job": coord_cpu / max(1, dispatched) * 1000,
        "database_cpu_ms_per_job": db_cpu / max(1, dispatched) * 1000,
        "failures": float(sum(f.failures for f in floods + offered)),
        "lost": float(len(due) - len(latencies)),
    }


async def _drain(count: Callable[[], int], expected: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while count() < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


class Speaker:
    """One simulated contributor that answers each job with the lines it is told to write,
    keeping when it sent the first (time.monotonic())."""

    def __init__(self, ws_url: str) -> None:
        self.ws_url = ws_url
        self.jobs: asyncio.Queue[Job] = asyncio.Queue()

    async def __aenter__(self) -> Speaker:
        self.websocket = await connect(
            f"{self.ws_url}/ws/contributor", max_size=MAX_MESSAGE_BYTES, compression=None
        )
        hello = Hello(
            protocol_version=PROTOCOL_VERSION,
            node_id="speaker",
            name="speaker",
            cores=1,
            memory_bytes=1 << 30,
            runtime="simulated",
        )
        await self.websocket.send(serialize(hello))
        await self.websocket.recv()  # welcome
        self.reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.reader.cancel()
        await self.websocket.close()

    async def _read(self) -> None:
        async for raw in self.websocket:
            message = parse_coordinator_message(raw)
            if isinstance(message, Job):
                self.jobs.put_nowait(message)

    async def write(self, job: Job, chunks: list[str]) -> float:
        """Send ``chunks`` as records, then the end; when the first went out."""
        seq = job.first_seq
        sent_at = 0.0
        for start in range(0, len(chunks), RECORDS_PER_MESSAGE):
            batch = chunks[start : start + RECORDS_PER_MESSAGE]
            records = [LogRecord(seq=seq + i, data=data) for i, data in enumerate(batch)]
            seq += len(batch)
            message = Log(job_id=job.job_id, lease_id=job.lease_id, records=records)
            if not sent_at:
                sent_at = time.monotonic()
            await self.websocket.send(serialize(message))
        done = Done(
            job_id=job.job_id,
            lease_id=job.lease_id,
            status=JobStatus.SUCCEEDED,
            exit_code=0,
            last_seq=seq - 1,
        )
        await self.websocket.send(serialize(done))
        return sent_at


async def _attached(ws_url: str, job_id: str) -> tuple[asyncio.Task[float], asyncio.Event]:
    """A follower of ``job_id``; the event is set once it got its first message."""
    ready = asyncio.Event()

    async def first_records() -> float:
        url = f"{ws_url}/api/v1/jobs/{job_id}/follow?after=-1"
        async with connect(url, max_size=MAX_MESSAGE_BYTES, compression=None) as websocket:
            async for raw in websocket:
                ready.set()
                if json.loads(raw).get("type") == "records":
                    return time.monotonic()
        return float("nan")

    return asyncio.create_task(first_records()), ready


async def cross_follow(a: Coordinator, b: Coordinator) -> dict[str, float]:
    """Contributor on A, submit and follow on B: first-line latency, then a long log."""
    samples: list[float] = []
    async with Speaker(a.ws_url) as speaker, httpx.AsyncClient(base_url=b.url) as client:
        for index in range(FIRST_LINE_SAMPLES):
            response = await client.post("/api/v1/jobs", json={"script": f"print({index})"})
            job_id = response.json()["id"]
            job = await asyncio.wait_for(speaker.jobs.get(), 10)
            assert job.job_id == job_id
            follower, ready = await _attached(b.ws_url, job_id)
            await asyncio.wait_for(ready.wait(), 10)
            sent_at = await speaker.write(job, [f"{index}\n"])
            samples.append((await asyncio.wait_for(follower, 10) - sent_at) * 1000)
        response = await client.post("/api/v1/jobs", json={"script": "print('long')"})
        job_id = response.json()["id"]
        job = await asyncio.wait_for(speaker.jobs.get(), 10)
        lines = [f"line {i:06d} {'y' * (i % 13)}\n" for i in range(FOLLOW_LINES)]
        chunks = [
            "".join(lines[i : i + LINES_PER_RECORD])
            for i in range(0, FOLLOW_LINES, LINES_PER_RECORD)
        ]
        following = asyncio.create_task(follow(b.ws_url, job_id))
        began = time.monotonic()
        await speaker.write(job, chunks)
        followed = await asyncio.wait_for(following, 120)
    return {
        "first_line_p99_ms": percentile(samples, 0.99),
        "first_line_median_ms": percentile(samples, 0.5),
        "lines_identical": float(bytes(followed.stdout) == "".join(lines).encode()),
        "long_follow_s": (followed.ended_at or began) - began,
    }


def failover(root: Path, database: str) -> dict[str, float]:
    """A real agent given A,B; A SIGKILLed a quarter into a 40-line job followed by the CLI."""
    a, b = (start_coordinator(root, f"f{name}", database) for name in "ab")
    agent = Agent(f"{a.url},{b.url}", root / "agent", name="bench-failover")
    script = root / "slow.py"
    script.write_text(SLOW)
    try:
        agent.start()
        cli = subprocess.Popen(
            [sys.executable, "-m", "compound", "submit", str(script), "-c", f"{a.url},{b.url}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=product_env(),
        )

        def quarter_done() -> bool:
            jobs = b.api("GET", "/api/v1/jobs").json()["jobs"]
            if not jobs:
                return False
            return stream_text(b.logs(jobs[0]["id"])).count("\n") >= SLOW_LINES // 4

        deadline = time.monotonic() + 60
        while not quarter_done():
            if time.monotonic() > deadline:
                raise TimeoutError("the job did not start")
            time.sleep(0.05)
        assert agent.output is not None
        mark = len(agent.output.lines)
        a.kill()
        killed_at = time.monotonic()
        agent.wait_event("connected", timeout_s=30, start=mark)
        reconnected_s = time.monotonic() - killed_at
        stdout, _ = cli.communicate(timeout=90)
        ended_s = time.monotonic() - killed_at
        job = b.api("GET", "/api/v1/jobs").json()["jobs"][0]
        return {
            "reconnected_s": reconnected_s,
            "job_end_after_kill_s": ended_s,
            "identical": float(stdout == EXPECTED_SLOW and cli.returncode == 0),
            "attempts": float(b.job(job["id"])["attempts"]),
        }
    finally:
        agent.stop()
        a.stop()
        b.stop()
        if (agent.state_dir / "node_id").exists():
            leftovers = containers_of(agent.node_id)  # ours only, by our agent's node id
            if leftovers:
                subprocess.run(["docker", "rm", "-f", *leftovers], capture_output=True)


def main(seconds: float = FLOOD_SECONDS, with_failover: bool = True) -> list[Figure]:
    raise_file_limit()
    bin_dir = find_binaries()
    if bin_dir is None:
        raise SystemExit("PostgreSQL is not installed (initdb not found): scripts/install")
    cluster = Cluster(bin_dir).start()
    root = Path(tempfile.mkdtemp(prefix="compound-bench-cluster-"))
    results: dict[str, dict[str, float]] = {}
    try:
        with coordinators(root / "sqlite", 1, None) as servers:
            _keep(results, "sqlite x1", asyncio.run(dispatch(servers, None, seconds)))
        for count in (1, 2, 3):
            with coordinators(root / f"pg{count}", count, cluster.new_database()) as servers:
                got = asyncio.run(dispatch(servers, cluster, seconds))
                _keep(results, f"postgresql x{count}", got)
        with coordinators(root / "follow", 2, cluster.new_database()) as (a, b):
            _keep(results, "cross follow", asyncio.run(cross_follow(a, b)))
        if with_failover:
            _keep(results, "failover", failover(root / "failover", cluster.new_database()))
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    return figures(results)


def _keep(results: dict[str, dict[str, float]], name: str, got: dict[str, float]) -> None:
    """Keep a part's raw figures, and show them at once (a later part may fail)."""
    results[name] = got
    print(name, json.dumps({key: round(value, 3) for key, value in got.items()}), flush=True)


def figures(results: dict[str, dict[str, float]]) -> list[Figure]:
    base = results["sqlite x1"]
    one = results.get("postgresql x1", base)
    out: list[Figure] = []
    for name, got in results.items():
        if not name.startswith(("sqlite", "postgresql")):
            continue
        count = int(name[-1])
        note = (
            f"p99 {got['p99_ms']:.1f} ms (SQLite {base['p99_ms']:.1f} ms), median "
            f"{got['median_ms']:.1f} ms at {LATENCY_RATE_PER_S:.0f}/s offered; CPU per job: "
            f"coordinators {got['coordinator_cpu_ms_per_job']:.2f} ms, database "
            f"{got['database_cpu_ms_per_job']:.2f} ms; {got['failures']:.0f} failed, "
            f"{got['lost']:.0f} not dispatched"
        )
        if count > 1:
            note += f"; x{got['jobs_per_s'] / max(1e-6, one['jobs_per_s']):.2f} one on PostgreSQL"
        target = None
        if name == "postgresql x1":
            target = ratio_at_least(0.5)
        out.append(
            Figure(
                "18",
                f"dispatch, {name}",
                "jobs/s",
                got["jobs_per_s"],
                baseline=None if name == "sqlite x1" else base["jobs_per_s"],
                target=target,
                note=note,
            )
        )
        out.append(
            Figure(
                "18",
                f"dispatch p99 latency, {name}",
                "ms",
                got["p99_ms"],
                baseline=None if name == "sqlite x1" else base["p99_ms"],
            )
        )
    follow_figures = results.get("cross follow")
    if follow_figures:
        out.append(
            Figure(
                "18",
                "first line p99, follower on B, contributor on A",
                "ms",
                follow_figures["first_line_p99_ms"],
                target=median_at_most(100, "ms"),
                note=(
                    f"median {follow_figures['first_line_median_ms']:.1f} ms over "
                    f"{FIRST_LINE_SAMPLES} jobs; {FOLLOW_LINES:,} lines identical: "
                    f"{bool(follow_figures['lines_identical'])} "
                    f"(in {follow_figures['long_follow_s']:.1f} s)"
                ),
            )
        )
    over = results.get("failover")
    if over:
        out.append(
            Figure(
                "18",
                "failover: agent on B after A's SIGKILL",
                "s",
                over["reconnected_s"],
                target=median_at_most(5, "s"),
                note=(
                    f"job ended {over['job_end_after_kill_s']:.1f} s after the kill, attempts "
                    f"{over['attempts']:.0f}, output identical: {bool(over['identical'])}"
                ),
            )
        )
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=FLOOD_SECONDS)
    parser.add_argument("--no-failover", action="store_true")
    parsed = parser.parse_args()
    print(text_table(main(parsed.seconds, not parsed.no_failover)))
