"""Benchmark: Compound's end-to-end cost against plain `docker run`, measured in one run.

For each workload the baseline is the same script run with `docker run --network none` on
the same image, its output read through a pipe; Compound's number is `compound submit`
against a local coordinator and agent (all output through WebSocket, SQLite and back).
Prints seconds and the ratio compound / baseline (lower is better; 1.0 = no overhead).

    .venv/bin/python bench/log_throughput.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support import TEST_IMAGE, Agent, Coordinator, product_env

WORKLOADS = {
    "hello (1 line)": "print('hello')\n",
    "100k short lines": "for i in range(100_000):\n    print(f'line {i}')\n",
    "8 x 1 MiB lines": (
        "import sys\nfor _ in range(8):\n    sys.stdout.write('x' * 1048576 + '\\n')\n"
    ),
    "stdout+stderr 20k each": (
        "import sys\nfor i in range(20_000):\n    print(i)\n    print(i, file=sys.stderr)\n"
    ),
}


def time_command(command: list[str], expected_min_bytes: int) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, env=product_env(), check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0 or len(result.stdout) < expected_min_bytes:
        raise SystemExit(f"benchmark command failed: {command[:4]}... {result.stderr[-500:]!r}")
    return elapsed


def docker_run(path: Path) -> list[str]:
    return [
        "docker",
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        f"{path}:/job.py:ro",
        TEST_IMAGE,
        "python3",
        "-u",
        "/job.py",
    ]


def compound_submit(path: Path, coordinator_url: str) -> list[str]:
    return [sys.executable, "-m", "compound", "submit", str(path), "-c", coordinator_url]


def median_of(repeat: int, command: list[str]) -> float:
    return statistics.median(time_command(command, 1) for _ in range(repeat))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (median)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        root = Path(workdir)
        coordinator = Coordinator(
            data_dir=root / "data", heartbeat_interval_s=5, lease_timeout_s=15
        ).start()
        agent = Agent(coordinator.url, root / "agent", name="bench").start()
        try:
            print(f"{'workload':<26}{'docker run':>12}{'compound':>12}{'ratio':>8}")
            for name, script in WORKLOADS.items():
                path = root / "job.py"
                path.write_text(script)
                baseline = median_of(options.repeat, docker_run(path))
                compound = median_of(options.repeat, compound_submit(path, coordinator.url))
                print(f"{name:<26}{baseline:>11.2f}s{compound:>11.2f}s{compound / baseline:>8.2f}")
        finally:
            agent.stop()
            coordinator.stop()


if __name__ == "__main__":
    main()
