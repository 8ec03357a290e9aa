"""(e) dispatch and (f) presence at scale: a real coordinator and simulated contributors.

The coordinator is a real subprocess (``python -m compound coordinator`` on a free loopback
port); the contributors are :class:`swarm.Swarm` connections in this process, speaking the
real protocol over real sockets. The coordinator's CPU and resident memory are read from
/proc; this process's own CPU is reported too, since both share the machine's cores.

    PYTHONPATH=src .venv/bin/python bench/scale.py [--contributors 1000 10000]
        [--no-dispatch] [--steady-s 20] [--profile-dir DIR]
    PYTHONPATH=src .venv/bin/python bench/scale.py --part e --seconds 5   # (e) alone

(e) reports two different measurements: the rate with the queue flooded (16 submitters back
to back, through bench/http_load.py, a light client of the real HTTP API), and the latency
at a fixed offered rate below saturation (open loop). Both go through the real HTTP API and
the real contributor WebSocket protocol.

/healthz is probed twice: from this process's event loop, which also drives the 10,000
simulated contributors (so its figure includes this process waiting for its own loop and
for a CPU), and from a probe in a process of its own (``--probe URL``), which measures the
coordinator alone. The target applies to the latter. That probe also asks an idle control
coordinator (no contributors) in the same moments: its p99 is what the machine's other
work alone does to a request, the floor under the loaded figure.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from figures import (
    Figure,
    from_samples,
    median_at_least,
    median_at_most,
    p99_at_most,
    percentile,
    text_table,
)
from http_load import JobSubmitter
from swarm import Swarm

from support import Coordinator

TRIVIAL_JOB = "print('hi')\n"
DISPATCH_CONTRIBUTORS = 100
DISPATCH_SECONDS = 10.0
SUBMIT_WORKERS = 16
# Latency is measured below saturation, at this fixed offered rate (open loop).
LATENCY_RATE_PER_S = 200.0
LATENCY_SECONDS = 5.0
STEADY_SECONDS = 20.0
PY_SPY = Path(sys.executable).with_name("py-spy")
CONNECT_TIMEOUT_S = 180.0
HEALTH_PROBE_EVERY_S = 0.1
PROBE_JOB_EVERY_S = 0.25
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def raise_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_BYTES


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def start_coordinator(root: Path) -> Coordinator:
    return Coordinator(
        data_dir=root / "data",
        heartbeat_interval_s=5,
        lease_timeout_s=15,
        # No --max-connections: the default (from the open-file limit) must take 10,000.
        extra_args=[
            "--max-queued-per-submitter",
            "100000",
            "--max-queued",
            "100000",
        ],
    ).start()


@dataclass
class Submitter:
    """Submits trivial jobs over HTTP and keeps when each request went out."""

    url: str
    sent_at: dict[str, float] = field(default_factory=dict)
    failures: int = 0

    async def submit_one(self, client: httpx.AsyncClient) -> None:
        began = time.monotonic()
        try:
            response = await client.post("/api/v1/jobs", json={"script": TRIVIAL_JOB})
        except httpx.HTTPError:
            self.failures += 1
            return
        if response.status_code != 201:
            self.failures += 1
            return
        self.sent_at[response.json()["id"]] = began

    async def flood(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        limits = httpx.Limits(max_connections=SUBMIT_WORKERS)
        async with httpx.AsyncClient(base_url=self.url, timeout=30, limits=limits) as client:

            async def worker() -> None:
                while time.monotonic() < deadline:
                    await self.submit_one(client)

            await asyncio.gather(*(worker() for _ in range(SUBMIT_WORKERS)))

    async def trickle(self, stop: asyncio.Event, every_s: float) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as client:
            while not stop.is_set():
                await self.submit_one(client)
                await asyncio.sleep(every_s)


def latencies_ms(submitter: Submitter | JobSubmitter, swarm: Swarm) -> list[float]:
    return [
        (swarm.job_arrivals[job_id] - sent) * 1000
        for job_id, sent in submitter.sent_at.items()
        if job_id in swarm.job_arrivals
    ]


async def _drain(swarm: Swarm, expected: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while swarm.jobs_done < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def dispatch_part(coordinator: Coordinator) -> list[Figure]:
    """(e): 100 contributors finishing each job at once. The rate is measured with the
    queue flooded (16 submitters back to back); the latency at a fixed offered rate below
    saturation, open loop, each job timed from when its POST was due."""
    swarm = Swarm(coordinator.ws_url, DISPATCH_CONTRIBUTORS, prefix="dispatch")
    stop = asyncio.Event()
    running = asyncio.create_task(swarm.run(stop))
    await swarm.wait_connected(CONNECT_TIMEOUT_S)
    flood = JobSubmitter("127.0.0.1", coordinator.port, TRIVIAL_JOB, SUBMIT_WORKERS)
    own_before, coord_before = own_cpu_seconds(), cpu_seconds(_pid(coordinator))
    began = time.monotonic()
    await flood.flood(DISPATCH_SECONDS)
    await _drain(swarm, len(flood.sent_at), 30.0)
    last = max(swarm.job_arrivals.values(), default=began)
    elapsed = max(1e-6, last - began)
    dispatched = sum(1 for job_id in flood.sent_at if job_id in swarm.job_arrivals)
    own_cpu = (own_cpu_seconds() - own_before) / elapsed * 100
    coord_cpu_s = cpu_seconds(_pid(coordinator)) - coord_before
    saturated = latencies_ms(flood, swarm)

    offered = JobSubmitter("127.0.0.1", coordinator.port, TRIVIAL_JOB, SUBMIT_WORKERS)
    await offered.offer(LATENCY_RATE_PER_S, LATENCY_SECONDS)
    await _drain(swarm, len(flood.sent_at) + len(offered.sent_at), 30.0)
    stop.set()
    await running
    lat = latencies_ms(offered, swarm)
    note = (
        f"{dispatched} jobs in {elapsed:.1f} s with the queue flooded by {SUBMIT_WORKERS} "
        f"submitters; coordinator {coord_cpu_s / elapsed * 100:.0f}% CPU "
        f"({coord_cpu_s / max(1, dispatched) * 1000:.2f} ms CPU per job), load generator "
        f"{own_cpu:.0f}% CPU; {flood.failures + offered.failures} failed submissions"
    )
    return [
        Figure(
            "e",
            "dispatch rate, 100 contributors",
            "jobs/s",
            dispatched / elapsed,
            target=median_at_least(1000, "jobs/s"),
            note=note,
        ),
        from_samples(
            "e",
            "dispatch latency",
            "ms",
            lat,
            target=p99_at_most(lat, 20, "ms"),
            note=(
                f"p99 {percentile99(lat):.1f} ms over {len(lat)} jobs offered at "
                f"{LATENCY_RATE_PER_S:.0f}/s (open loop): POST due -> job at contributor; "
                f"with the queue flooded: median {percentile(saturated, 0.5):.1f} ms, "
                f"p99 {percentile99(saturated):.1f} ms"
            ),
        ),
    ]


def percentile99(samples: list[float]) -> float:
    return percentile(samples, 0.99)


async def _probe_health(url: str, stop: asyncio.Event, out: list[float]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        while not stop.is_set():
            began = time.monotonic()
            try:
                (await client.get("/healthz")).raise_for_status()
                out.append((time.monotonic() - began) * 1000)
            except httpx.HTTPError:
                out.append(10_000.0)
            await asyncio.sleep(HEALTH_PROBE_EVERY_S)


@dataclass(frozen=True)
class PresenceOptions:
    steady_s: float = STEADY_SECONDS
    # Where to write a py-spy flame graph of the coordinator's steady state (None: no profile).
    profile_dir: Path | None = None
    # py-spy's output: "flamegraph" (an SVG) or "raw" (collapsed stacks, for reading counts).
    profile_format: str = "flamegraph"


def _start_probe_process(urls: list[str], seconds: float) -> subprocess.Popen[str]:
    """The /healthz probe in a process of its own: the coordinators' latency without this
    process's event loop (busy with the swarm) in it."""
    command = [sys.executable, __file__, "--probe", *urls, "--probe-s", str(seconds)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


def _probe_results(probe: subprocess.Popen[str], count: int) -> list[list[float]]:
    """Latencies in ms per URL, in the order the URLs were given."""
    out, _ = probe.communicate(timeout=60)
    results: list[list[float]] = [[] for _ in range(count)]
    for line in out.splitlines():
        index, ms = line.split()
        results[int(index)].append(float(ms))
    return results


def _start_profile(pid: int, options: PresenceOptions, count: int) -> subprocess.Popen[str] | None:
    if options.profile_dir is None:
        return None
    options.profile_dir.mkdir(parents=True, exist_ok=True)
    suffix = "svg" if options.profile_format == "flamegraph" else "txt"
    out = options.profile_dir / f"profile_f_{count}_coordinator.{suffix}"
    seconds = str(max(1, int(options.steady_s) - 1))
    command = [str(PY_SPY), "record", "-o", str(out), "--pid", str(pid), "--nonblocking"]
    command += ["--format", options.profile_format, *os.environ.get("PYSPY_EXTRA", "").split()]
    return subprocess.Popen([*command, "-d", seconds], stdout=subprocess.DEVNULL, text=True)


async def presence_part(
    coordinator: Coordinator,
    count: int,
    options: PresenceOptions | None = None,
    control: Coordinator | None = None,
) -> list[Figure]:
    """(f): ``count`` contributors heartbeating every 5 s; the coordinator at steady state."""
    options = options or PresenceOptions()
    pid = _pid(coordinator)
    swarm = Swarm(coordinator.ws_url, count, heartbeat_s=5.0, prefix=f"presence{count}")
    stop = asyncio.Event()
    running = asyncio.create_task(swarm.run(stop))
    ramp_began = time.monotonic()
    await swarm.wait_connected(CONNECT_TIMEOUT_S)
    ramp_s = time.monotonic() - ramp_began
    await asyncio.sleep(5.0)  # one heartbeat period: every phase has started
    # This process holds 10,000 connections too: its own full garbage collections (seconds)
    # would send the heartbeats due meanwhile in one burst, which a fleet of separate
    # machines never does. Frozen, they no longer happen during the window.
    gc.collect()
    gc.freeze()
    health: list[float] = []
    probes_stop = asyncio.Event()
    submitter = Submitter(coordinator.url)
    probes = [
        asyncio.create_task(_probe_health(coordinator.url, probes_stop, health)),
        asyncio.create_task(submitter.trickle(probes_stop, PROBE_JOB_EVERY_S)),
    ]
    urls = [coordinator.url] + ([control.url] if control else [])
    probe_process = _start_probe_process(urls, options.steady_s)
    profiler = _start_profile(pid, options, count)
    cpu_before, own_before, began = cpu_seconds(pid), own_cpu_seconds(), time.monotonic()
    rss_peak = 0
    while time.monotonic() - began < options.steady_s:
        rss_peak = max(rss_peak, rss_bytes(pid))
        await asyncio.sleep(0.5)
    elapsed = time.monotonic() - began
    # Wall-clock bounds, to line the window up with the coordinator's logs and profiles.
    print(f"steady window: {time.time() - elapsed:.3f} .. {time.time():.3f}", file=sys.stderr)
    cpu_percent = (cpu_seconds(pid) - cpu_before) / elapsed * 100
    own_percent = (own_cpu_seconds() - own_before) / elapsed * 100
    probes_stop.set()
    await asyncio.gather(*probes)
    apart, *idle = await asyncio.to_thread(_probe_results, probe_process, len(urls))
    if profiler is not None:
        await asyncio.to_thread(profiler.wait, 60)
    await _drain(swarm, len(submitter.sent_at), 5.0)
    stop.set()
    await running
    gc.unfreeze()
    lat = latencies_ms(submitter, swarm)
    who = f"{count:,} contributors"
    note = (
        f"{swarm.connected} connected in {ramp_s:.1f} s ({swarm.connect_failures} failed, "
        f"{swarm.closed_by_server} closed by server); {swarm.heartbeats_sent} heartbeats; "
        f"load generator {own_percent:.0f}% CPU; load average {os.getloadavg()[0]:.2f}"
    )
    big = count >= 10_000
    return [
        Figure(
            "f",
            f"{who}: coordinator CPU",
            "% of a core",
            cpu_percent,
            target=median_at_most(25, "%") if big else None,
            note=note,
        ),
        Figure(
            "f",
            f"{who}: coordinator RSS",
            "MiB",
            rss_peak / 2**20,
            target=median_at_most(1024, "MiB") if big else None,
            note="peak over the window",
        ),
        from_samples(
            "f",
            f"{who}: /healthz latency",
            "ms",
            apart,
            target=p99_at_most(apart, 50, "ms") if big else None,
            note=f"p99 {percentile99(apart):.1f} ms, {len(apart)} probes from a process of its own",
        ),
        *[
            from_samples(
                "f",
                f"{who}: /healthz latency of an idle control coordinator",
                "ms",
                samples,
                note=f"p99 {percentile99(samples):.1f} ms: the machine's floor in the same moments",
            )
            for samples in idle
        ],
        from_samples(
            "f",
            f"{who}: /healthz latency, probed from the swarm's loop",
            "ms",
            health,
            note=(
                f"p99 {percentile99(health):.1f} ms, {len(health)} probes; includes the load "
                "generator's own loop stalls"
            ),
        ),
        from_samples(
            "f",
            f"{who}: dispatch latency",
            "ms",
            lat,
            note=f"p99 {percentile99(lat):.1f} ms, {len(lat)} jobs",
        ),
    ]


def _pid(coordinator: Coordinator) -> int:
    assert coordinator.proc is not None
    return int(coordinator.proc.pid)


async def _dispatch(root: Path) -> list[Figure]:
    coordinator = start_coordinator(root)
    try:
        return await dispatch_part(coordinator)
    finally:
        coordinator.stop()


async def _presence(root: Path, count: int, options: PresenceOptions) -> list[Figure]:
    # A fresh coordinator each: another part's rows and sockets are not the load.
    coordinator = start_coordinator(root)
    control = start_coordinator(root / "control")
    try:
        return await presence_part(coordinator, count, options, control)
    finally:
        control.stop()
        coordinator.stop()


def dispatch_main() -> list[Figure]:
    """(e) on its own coordinator."""
    with tempfile.TemporaryDirectory(prefix="compound-bench-dispatch-") as workdir:
        return asyncio.run(_dispatch(Path(workdir)))


def presence_main(count: int, options: PresenceOptions | None = None) -> list[Figure]:
    """(f) for ``count`` contributors on its own coordinator."""
    raise_file_limit()
    with tempfile.TemporaryDirectory(prefix="compound-bench-presence-") as workdir:
        return asyncio.run(_presence(Path(workdir), count, options or PresenceOptions()))


def main(
    counts: list[int] | None = None,
    options: PresenceOptions | None = None,
    dispatch: bool = True,
) -> list[Figure]:
    figures = dispatch_main() if dispatch else []
    for count in counts or [1000, 10_000]:
        figures += presence_main(count, options)
    return figures


async def _probe_alone(urls: list[str], seconds: float) -> None:
    """The ``--probe`` mode: GET /healthz of each URL every HEALTH_PROBE_EVERY_S for
    ``seconds``; print each latency as "<url index> <ms>", one a line."""
    stop = asyncio.Event()
    results: list[list[float]] = [[] for _ in urls]
    tasks = [
        asyncio.create_task(_probe_health(url, stop, out))
        for url, out in zip(urls, results, strict=True)
    ]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*tasks)
    print("\n".join(f"{i} {ms:.3f}" for i, out in enumerate(results) for ms in out))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contributors", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--part", choices=["e", "f", "all"], default="all")
    parser.add_argument(
        "--seconds", type=float, default=DISPATCH_SECONDS, help="(e): how long to flood"
    )
    parser.add_argument("--no-dispatch", action="store_true", help="skip part (e)")
    parser.add_argument("--steady-s", type=float, default=STEADY_SECONDS)
    parser.add_argument("--profile-dir", type=Path, help="py-spy flame graphs of (f) here")
    parser.add_argument("--profile-format", choices=["flamegraph", "raw"], default="flamegraph")
    parser.add_argument("--probe", metavar="URL", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--probe-s", type=float, default=STEADY_SECONDS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        asyncio.run(_probe_alone(args.probe, args.probe_s))
        sys.exit(0)
    DISPATCH_SECONDS = args.seconds
    presence = PresenceOptions(args.steady_s, args.profile_dir, args.profile_format)
    if args.part == "e":
        results = dispatch_main()
    elif args.part == "f":
        results = [f for n in args.contributors for f in presence_main(n, presence)]
    else:
        results = main(args.contributors, presence, dispatch=not args.no_dispatch)
    print(text_table(results))
    print("\n".join(f"- ({f.part}) {f.name}: {f.note}" for f in results if f.note))
