"""Benchmark: how fast a job whose packages are cached starts, against a job without packages.

A real coordinator and agent on loopback, the real Docker engine, and a package index served
on loopback (numpy's wheel from the tests' cache, downloaded once). Each case is timed from
the submission (POST) to the job's first stdout record on the follow WebSocket:

- ``no requirements``: ``print('ready')``;
- ``numpy, cached``: the same script with ``requirements=["numpy"]`` once the set is
  installed: the cache lookup and the read-only mount are all that differ;
- ``numpy, first``: the first such job on a fresh agent, which resolves, downloads and
  installs numpy before the container starts (timed once; its "installed in" note too).

The two repeated cases are interleaved so that a noisy moment hurts both alike. The issue's
target: the cached case's median within 1.2x of the case without requirements.

    .venv/bin/python bench/deps_start.py [--repeat 15] [--runtime auto]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from package_index import PackageIndex, numpy_wheel
from support import Agent, Coordinator

TARGET_RATIO = 1.2
SCRIPT = "print('ready')\n"


def _first_output_s(coordinator: Coordinator, requirements: list[str]) -> tuple[float, str]:
    """Seconds from submission to the first stdout record, and the job's system notes."""
    from websockets.sync.client import connect

    started = time.perf_counter()
    job_id = coordinator.submit(SCRIPT, requirements=requirements)
    first_s: float | None = None
    notes = ""
    url = f"{coordinator.ws_url}/api/v1/jobs/{job_id}/follow?after=-1"
    with connect(url, max_size=8 * 1024 * 1024) as websocket:
        while True:
            message = json.loads(websocket.recv(timeout=600))
            if message["type"] == "records":
                for record in message["records"]:
                    if record["stream"] == "stdout" and first_s is None:
                        first_s = time.perf_counter() - started
                    if record["stream"] == "system":
                        notes += record["data"]
            elif message["type"] == "end":
                if message["job"]["status"] != "succeeded" or first_s is None:
                    raise SystemExit(f"job {job_id} did not succeed: {message['job']}\n{notes}")
                return first_s, notes


def _p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main(repeat: int = 15, runtime: str = "auto") -> dict[str, Any]:
    """Run the benchmark, print a table, return the figures (seconds and the ratio)."""
    with tempfile.TemporaryDirectory() as tmp, PackageIndex([numpy_wheel()]) as index:
        coordinator = Coordinator(data_dir=Path(tmp) / "coordinator").start()
        agent = Agent(
            coordinator.url,
            Path(tmp) / "agent",
            name="bench-agent",
            runtime=runtime,
            extra_args=["--index-url", index.url],
        )
        try:
            agent.start()
            first_s, notes = _first_output_s(coordinator, ["numpy"])
            found = re.search(r"installed in ([0-9.]+) s", notes)
            install_s = float(found.group(1)) if found else float("nan")
            _first_output_s(coordinator, [])  # warm: the image's pages, the first container
            samples: dict[str, list[float]] = {"no requirements": [], "numpy, cached": []}
            for _ in range(repeat):
                samples["no requirements"].append(_first_output_s(coordinator, [])[0])
                samples["numpy, cached"].append(_first_output_s(coordinator, ["numpy"])[0])
        finally:
            agent.stop()
            coordinator.stop()
    plain_s = statistics.median(samples["no requirements"])
    cached_s = statistics.median(samples["numpy, cached"])
    figures = {
        "plain_median_s": plain_s,
        "plain_p95_s": _p95(samples["no requirements"]),
        "cached_median_s": cached_s,
        "cached_p95_s": _p95(samples["numpy, cached"]),
        "cached_ratio": cached_s / plain_s,
        "first_s": first_s,
        "first_install_s": install_s,
        "repeat": repeat,
        "runtime": runtime,
    }
    _print_table(figures)
    return figures


def _print_table(figures: dict[str, Any]) -> None:
    print(f"time to first output, {figures['repeat']} runs each, runtime {figures['runtime']}")
    print(f"{'case':<20} {'median s':>9} {'p95 s':>7} {'x plain':>8}")
    plain = figures["plain_median_s"]
    for name, key in (("no requirements", "plain"), ("numpy, cached", "cached")):
        median = figures[f"{key}_median_s"]
        p95 = figures[f"{key}_p95_s"]
        print(f"{name:<20} {median:>9.3f} {p95:>7.3f} {median / plain:>8.2f}")
    first = figures["first_s"]
    print(f"{'numpy, first':<20} {first:>9.3f} {'':>7} {first / plain:>8.2f}")
    print(f"first preparation (resolve, download, install): {figures['first_install_s']:.1f} s")
    verdict = "met" if figures["cached_ratio"] <= TARGET_RATIO else "NOT met"
    print(f"target: cached within {TARGET_RATIO}x of no requirements: {verdict}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--runtime", default="auto", choices=["auto", "runc", "runsc"])
    options = parser.parse_args()
    main(options.repeat, options.runtime)
