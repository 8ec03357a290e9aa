"""Issue 18, item 6: 10,000 simulated contributors spread over 2 coordinators on one
PostgreSQL database, against the same number on one SQLite coordinator in the same run.

Each contributor (``swarm.Swarm``: the real protocol over real loopback WebSockets) sends a
heartbeat every 5 s; a trickle of trivial jobs is submitted to each coordinator. Over a
steady window: how many are connected, each coordinator's CPU (% of a core) and peak RSS,
the PostgreSQL server's CPU, /healthz latency of each coordinator probed from a process of
its own, and whether the contributors list of either coordinator shows the whole cluster.

    PYTHONPATH=src .venv/bin/python bench/cluster_presence.py [--contributors 10000]
        [--steady-s 20]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cluster_processes import coordinators, postgres_cpu_seconds
from figures import Figure, median_at_most, p99_at_most, text_table
from scale import (
    CONNECT_TIMEOUT_S,
    PROBE_JOB_EVERY_S,
    Submitter,
    _probe_results,
    _start_probe_process,
    cpu_seconds,
    percentile99,
    raise_file_limit,
    rss_bytes,
)
from swarm import Swarm

from postgres import Cluster, find_binaries
from support import Coordinator

CONTRIBUTORS = 10_000
STEADY_S = 20.0


def _pid(server: Coordinator) -> int:
    assert server.proc is not None
    return int(server.proc.pid)


async def _listed(url: str) -> int:
    """How many contributors the coordinator at ``url`` lists (the whole cluster's)."""
    online, after = 0, 0
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        while after is not None:
            response = await client.get(
                "/api/v1/contributors", params={"after": after, "limit": 1000}
            )
            response.raise_for_status()
            page = response.json()
            online += sum(1 for row in page["contributors"] if row["state"] != "offline")
            after = page["next"]
    return online


async def presence(
    servers: list[Coordinator], cluster: Cluster | None, count: int, steady_s: float
) -> dict[str, float]:
    """``count`` contributors spread evenly over ``servers``; the steady window's figures."""
    share = [
        count // len(servers) + (1 if i < count % len(servers) else 0) for i in range(len(servers))
    ]
    swarms = [
        Swarm(server.ws_url, n, heartbeat_s=5.0, prefix=f"c{i}-presence")
        for i, (server, n) in enumerate(zip(servers, share, strict=True))
    ]
    stop = asyncio.Event()
    running = [asyncio.create_task(swarm.run(stop)) for swarm in swarms]
    began = time.monotonic()
    await asyncio.gather(*(swarm.wait_connected(CONNECT_TIMEOUT_S) for swarm in swarms))
    ramp_s = time.monotonic() - began
    await asyncio.sleep(5.0)  # one heartbeat period: every phase has started
    gc.collect()
    gc.freeze()  # this process's own full collections would bunch the heartbeats
    probes_stop = asyncio.Event()
    submitters = [Submitter(server.url) for server in servers]
    trickles = [asyncio.create_task(s.trickle(probes_stop, PROBE_JOB_EVERY_S)) for s in submitters]
    probe = _start_probe_process([server.url for server in servers], steady_s)
    pids = [_pid(server) for server in servers]
    cpu_before = [cpu_seconds(pid) for pid in pids]
    db_before = postgres_cpu_seconds(cluster) if cluster else 0.0
    window = time.monotonic()
    rss_peak = [0] * len(pids)
    while time.monotonic() - window < steady_s:
        rss_peak = [max(peak, rss_bytes(pid)) for peak, pid in zip(rss_peak, pids, strict=True)]
        await asyncio.sleep(0.5)
    elapsed = time.monotonic() - window
    cpu = [
        (cpu_seconds(pid) - before) / elapsed * 100
        for pid, before in zip(pids, cpu_before, strict=True)
    ]
    db_cpu = ((postgres_cpu_seconds(cluster) - db_before) / elapsed * 100) if cluster else 0.0
    probes_stop.set()
    await asyncio.gather(*trickles)
    latencies = await asyncio.to_thread(_probe_results, probe, len(servers))
    listed = [await _listed(server.url) for server in servers]
    stop.set()
    await asyncio.gather(*running)
    gc.unfreeze()
    result = {
        "connected": float(sum(swarm.connected for swarm in swarms)),
        "connect_failures": float(sum(swarm.connect_failures for swarm in swarms)),
        "ramp_s": ramp_s,
        "database_cpu_percent": db_cpu,
        "listed_min": float(min(listed)),
        "jobs": float(sum(len(s.sent_at) for s in submitters)),
        "load_average": os.getloadavg()[0],
    }
    for index, (percent, peak, samples) in enumerate(zip(cpu, rss_peak, latencies, strict=True)):
        result[f"c{index}_cpu_percent"] = percent
        result[f"c{index}_rss_mib"] = peak / 2**20
        result[f"c{index}_healthz_p99_ms"] = percentile99(samples)
        result[f"c{index}_probes"] = float(len(samples))
    return result


def figures(runs: dict[str, dict[str, float]], count: int) -> list[Figure]:
    out: list[Figure] = []
    base = runs["sqlite x1"]
    for name, got in runs.items():
        servers = int(name[-1])
        note = (
            f"{got['connected']:.0f} of {count:,} connected in {got['ramp_s']:.1f} s "
            f"({got['connect_failures']:.0f} failed); every coordinator lists at least "
            f"{got['listed_min']:.0f}; database {got['database_cpu_percent']:.0f}% of a core; "
            f"load average {got['load_average']:.2f}"
        )
        for index in range(servers):
            who = f"{count:,} contributors, {name}, coordinator {index + 1}"
            out.append(
                Figure(
                    "18",
                    f"{who}: CPU",
                    "% of a core",
                    got[f"c{index}_cpu_percent"],
                    baseline=None if name == "sqlite x1" else base["c0_cpu_percent"],
                    target=median_at_most(25, "%"),
                    note=note if index == 0 else "",
                )
            )
            out.append(Figure("18", f"{who}: RSS", "MiB", got[f"c{index}_rss_mib"]))
            p99 = got[f"c{index}_healthz_p99_ms"]
            out.append(
                Figure(
                    "18",
                    f"{who}: /healthz p99",
                    "ms",
                    p99,
                    target=p99_at_most([p99], 50, "ms"),
                    note=f"{got[f'c{index}_probes']:.0f} probes from a process of its own",
                )
            )
    return out


def main(count: int = CONTRIBUTORS, steady_s: float = STEADY_S) -> list[Figure]:
    raise_file_limit()
    bin_dir = find_binaries()
    if bin_dir is None:
        raise SystemExit("PostgreSQL is not installed (initdb not found): scripts/install")
    cluster = Cluster(bin_dir).start()
    root = Path(tempfile.mkdtemp(prefix="compound-bench-cluster-presence-"))
    runs: dict[str, dict[str, float]] = {}
    try:
        with coordinators(root / "sqlite", 1, None) as servers:
            runs["sqlite x1"] = asyncio.run(presence(servers, None, count, steady_s))
            print("sqlite x1", runs["sqlite x1"], flush=True)
        with coordinators(root / "pg", 2, cluster.new_database()) as servers:
            runs["postgresql x2"] = asyncio.run(presence(servers, cluster, count, steady_s))
            print("postgresql x2", runs["postgresql x2"], flush=True)
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    return figures(runs, count)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contributors", type=int, default=CONTRIBUTORS)
    parser.add_argument("--steady-s", type=float, default=STEADY_S)
    args = parser.parse_args()
    results = main(args.contributors, args.steady_s)
    print(text_table(results))
    print("\n".join(f"- ({f.part}) {f.name}: {f.note}" for f in results if f.note))
