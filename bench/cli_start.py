"""Benchmark: how fast the `compound` command starts, against `python -c pass` in the same run.

Each case is a fresh process timed from exec to exit (wall clock), ``--repeat`` times,
interleaved so that a noisy moment hurts every case alike:

- ``python -c pass``: the floor, an interpreter that starts and stops;
- ``compound --version``;
- ``compound submit --detach`` of a one-line script to a real coordinator on loopback (the
  client side only: the job is queued, no agent runs it);
- ``compound status ID`` and ``compound logs ID`` of that job;
- ``compound submit`` of the same script followed to its end, run by a real agent (runc):
  the whole of figure (a) as the user sees it, client and service together.

The issue's budget is 80 ms for the median of ``--version`` and ``submit --detach``.

    .venv/bin/python bench/cli_start.py [--repeat 20]
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

from support import Agent, Coordinator, product_env, wait_until

BUDGET_MS = 80.0
FOLLOWED = "compound submit (to the end)"


def _time_ms(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, check=False)
    elapsed_ms = (time.perf_counter() - started) * 1000
    if result.returncode != 0:
        raise SystemExit(f"{command} failed ({result.returncode}):\n{result.stderr.decode()}")
    return elapsed_ms


def _wait_idle(coordinator: Coordinator) -> None:
    """Until every job has ended: a detached job still running would slow the next one."""
    wait_until(
        lambda: (
            not any(
                job["status"] in ("queued", "running")
                for job in coordinator.api("GET", "/api/v1/jobs").json()["jobs"]
            )
        ),
        60,
        "the detached jobs to end",
    )


def _p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    options = parser.parse_args()
    compound = [sys.executable, "-m", "compound"]
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "hello.py"
        script.write_text("print('hello')\n")
        coordinator = Coordinator(data_dir=Path(tmp) / "data").start()
        agent = Agent(coordinator.url, Path(tmp) / "agent", name="bench").start()
        try:
            env = product_env(COMPOUND_COORDINATOR=coordinator.url)
            job_id = coordinator.submit("print('hello')\n")
            cases = {
                "python -c pass": [sys.executable, "-c", "pass"],
                "compound --version": [*compound, "--version"],
                "compound submit --detach": [*compound, "submit", str(script), "--detach"],
                "compound status ID": [*compound, "status", job_id],
                "compound logs ID": [*compound, "logs", job_id],
                FOLLOWED: [*compound, "submit", str(script)],
            }
            for command in cases.values():  # warm the page cache and the .pyc files
                _time_ms(command, env)
            samples: dict[str, list[float]] = {name: [] for name in cases}
            for _ in range(options.repeat):
                for name, command in cases.items():
                    if name == FOLLOWED:
                        _wait_idle(coordinator)
                    samples[name].append(_time_ms(command, env))
        finally:
            agent.stop()
            coordinator.stop()
    base_ms = statistics.median(samples["python -c pass"])
    print(f"{'case':<28} {'median ms':>10} {'p95 ms':>8} {'x pass':>7}")
    for name, values in samples.items():
        median_ms = statistics.median(values)
        print(f"{name:<28} {median_ms:>10.1f} {_p95(values):>8.1f} {median_ms / base_ms:>7.1f}")
    print(f"budget for --version and submit --detach: {BUDGET_MS:.0f} ms median")


if __name__ == "__main__":
    main()
