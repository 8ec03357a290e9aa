"""Benchmark: a trivial job end to end, through the HTTP API and `compound submit`.

A real coordinator on loopback and a real agent (``--warm 1``, then ``--warm 0``), against a
bare ``docker run --rm --network none IMAGE python3 -c pass`` in the same run. Cases:

- ``HTTP API``: ``POST /api/v1/jobs``, then ``GET`` the job every 5 ms until it has ended;
- ``compound submit``: the command, which follows the job to its end (process start included).

The issue's targets with the pool: the API case at <= 0.25x ``docker run`` (about 50 ms),
``compound submit`` at <= 0.5x.

    .venv/bin/python bench/warm_pool_e2e.py [--runtime runc] [--repeat 10]
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

TERMINAL = {"succeeded", "failed", "timed_out", "cancelled"}


def _docker_run_ms(runtime: str) -> float:
    command = ["docker", "run", "--rm", "--network", "none", "--runtime", runtime]
    started = time.perf_counter()
    subprocess.run([*command, TEST_IMAGE, "python3", "-c", "pass"], check=True, capture_output=True)
    return (time.perf_counter() - started) * 1000


def _api_ms(coordinator: Coordinator) -> float:
    started = time.perf_counter()
    job_id = coordinator.submit("print('hi')\n")
    while (status := coordinator.job(job_id)["status"]) not in TERMINAL:
        time.sleep(0.005)
    elapsed_ms = (time.perf_counter() - started) * 1000
    if status != "succeeded":
        raise SystemExit(f"the trivial job ended {status}")
    return elapsed_ms


def _submit_ms(coordinator: Coordinator, script: Path) -> float:
    env = product_env(COMPOUND_COORDINATOR=coordinator.url)
    command = [sys.executable, "-m", "compound", "submit", str(script)]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, check=False)
    elapsed_ms = (time.perf_counter() - started) * 1000
    if done.returncode != 0:
        raise SystemExit(f"compound submit failed: {done.stderr.decode()}")
    return elapsed_ms


def _measure(tmp: Path, runtime: str, warm: int, repeat: int) -> dict[str, float]:
    coordinator = Coordinator(data_dir=tmp / f"data-{warm}").start()
    agent = Agent(
        coordinator.url, tmp / f"agent-{warm}", runtime=runtime, extra_args=["--warm", str(warm)]
    )
    script = tmp / "hello.py"
    script.write_text("print('hi')\n")
    try:
        agent.start()
        _api_ms(coordinator)  # warm-up: first job, page cache, pool filled
        api, submit = [], []
        for _ in range(repeat):
            # Jobs arrive no faster than one a second: the pool has time to refill.
            time.sleep(1.0)
            api.append(_api_ms(coordinator))
            time.sleep(1.0)
            submit.append(_submit_ms(coordinator, script))
        return {"HTTP API": statistics.median(api), "compound submit": statistics.median(submit)}
    finally:
        agent.stop()
        coordinator.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", default="runc", choices=["runc", "runsc"])
    parser.add_argument("--repeat", type=int, default=10)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        warm = _measure(Path(tmp), options.runtime, 1, options.repeat)
        cold = _measure(Path(tmp), options.runtime, 0, options.repeat)
    baseline = statistics.median(_docker_run_ms(options.runtime) for _ in range(options.repeat))
    print(f"runtime {options.runtime}, median of {options.repeat}; docker run {baseline:.0f} ms")
    for case in ("HTTP API", "compound submit"):
        for label, values in (("warm 1", warm), ("warm 0", cold)):
            value = values[case]
            print(f"  {case:16} {label}  {value:7.1f} ms  {value / baseline:5.2f}x docker run")


if __name__ == "__main__":
    main()
