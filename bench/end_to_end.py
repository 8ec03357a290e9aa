"""(a)-(d), (h), (i): jobs through Compound against `docker run`, in one run.

A real coordinator and one real agent on loopback, with the agent's defaults (no --slots,
no --warm: what the machine lends, see agent.capacity) unless tuned, under each runtime
asked for (runc and runsc by default). Every Compound figure has a baseline measured in
the same run, interleaved with it so a noisy moment hurts both alike: the same script run
with ``docker run --rm --network none IMAGE python3 /job.py`` under runc (Docker's
default, no -u), its output read through a pipe. Each figure says its setup: runtime,
slots and warm containers.

    PYTHONPATH=src .venv/bin/python bench/end_to_end.py [--repeat 10] [--parts abcdhi]
        [--runtimes runc,runsc] [--slots N --warm N (tuned)]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from figures import (
    Figure,
    Target,
    from_samples,
    median_at_most,
    ratio_at_least,
    ratio_at_most,
    text_table,
)
from follow_client import follow
from http_load import Connection

from compound.agent.default_share import choose_lending
from compound.agent.runners.base import Limits
from support import TEST_IMAGE, Agent, Coordinator, product_env

TRIVIAL = "print('hello')\n"
SHORT_LINES = 100_000
SHORT_LINES_SCRIPT = f"for i in range({SHORT_LINES}):\n    print(f'line {{i}}')\n"
BIG_LINES_SCRIPT = "import sys\nfor _ in range(8):\n    sys.stdout.write('x' * 1048576 + '\\n')\n"
EXPECTED = {
    "short": "".join(f"line {i}\n" for i in range(SHORT_LINES)).encode(),
    "big": (("x" * 1048576 + "\n") * 8).encode(),
}
BURST_JOBS = 50
BACK_TO_BACK_RUNS = 20
# Rounds of part (d): each measures the baseline, then one burst.
BURST_ROUNDS = 3
RUN_TIMEOUT_S = 120.0
# (h): a batch of short scripts, this many in flight, against docker run as many at a time.
BATCH_JOBS = 100
BATCH_IN_FLIGHT = 2
BATCH_SCRIPT = "print(sum(range(10_000)))\n"
# (i): a job prints its clock once, then sleeps; how long until the line reached a follower.
PRINT_THEN_SLEEP = "import time\nprint(time.time())\ntime.sleep(1)\n"
# Keep-alive connections the burst's jobs are posted over.
SUBMIT_CONNECTIONS = 4


@dataclass
class Timed:
    first_line_s: float
    total_s: float
    stdout: bytes


def run_timed(command: list[str]) -> Timed:
    """Run ``command``; time to its first stdout line and to its exit (wall clock)."""
    began = time.perf_counter()
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, env=product_env())
        assert proc.stdout is not None
        # One buffered reader for all of stdout: what readline read ahead stays in it.
        first = proc.stdout.readline()
        first_line_s = time.perf_counter() - began
        rest = proc.stdout.read()
        proc.wait(RUN_TIMEOUT_S)
        total_s = time.perf_counter() - began
        if proc.returncode != 0:
            errors.seek(0)
            raise SystemExit(f"{command[:4]}... exited {proc.returncode}: {errors.read()[-500:]!r}")
    return Timed(first_line_s, total_s, first + rest)


def docker_run(script: Path) -> list[str]:
    return [
        "docker", "run", "--rm", "--network", "none",
        "-v", f"{script}:/job.py:ro", TEST_IMAGE, "python3", "/job.py",
    ]  # fmt: skip


def compound_submit(script: Path, url: str) -> list[str]:
    return [sys.executable, "-m", "compound", "submit", str(script), "-c", url]


def write_script(root: Path, name: str, text: str) -> Path:
    path = root / f"{name}.py"
    path.write_text(text)
    return path


def interleaved(repeat: int, *runs: Callable[[], Timed]) -> list[list[Timed]]:
    results: list[list[Timed]] = [[] for _ in runs]
    for _ in range(repeat):
        for index, run in enumerate(runs):
            results[index].append(run())
    return results


def trivial_figures(
    part: str,
    how: str,
    ours: list[Timed],
    docker: list[Timed],
    end_target: Target,
    first_target: Target | None,
) -> list[Figure]:
    """End to end and to the first line, each against the same measure of ``docker run``."""
    return [
        from_samples(part, f"trivial job, {how}, end to end", "s",
                     [t.total_s for t in ours], [t.total_s for t in docker], end_target),
        from_samples(part, f"trivial job, {how}, first line", "s",
                     [t.first_line_s for t in ours], [t.first_line_s for t in docker],
                     first_target),
    ]  # fmt: skip


def part_a(root: Path, coordinator: Coordinator, repeat: int) -> list[Figure]:
    script = write_script(root, "trivial", TRIVIAL)
    ours, docker = interleaved(
        repeat,
        lambda: run_timed(compound_submit(script, coordinator.url)),
        lambda: run_timed(docker_run(script)),
    )
    return trivial_figures(
        "a", "compound submit", ours, docker, ratio_at_most(0.5), ratio_at_most(0.4)
    )


async def api_run(client: httpx.AsyncClient, coordinator: Coordinator, script: str) -> Timed:
    """Submit over HTTP, follow over the socket: no CLI process to start."""
    began = time.monotonic()  # the follower's clock
    response = await client.post("/api/v1/jobs", json={"script": script})
    response.raise_for_status()
    followed = await follow(coordinator.ws_url, response.json()["id"])
    if followed.status != "succeeded" or followed.first_record_at is None:
        raise SystemExit(f"API job ended {followed.status}")
    return Timed(
        first_line_s=followed.first_record_at - began,
        total_s=time.monotonic() - began,
        stdout=bytes(followed.stdout),
    )


def part_b(root: Path, coordinator: Coordinator, repeat: int) -> list[Figure]:
    script = write_script(root, "trivial", TRIVIAL)
    docker: list[Timed] = []

    async def interleaved_runs() -> list[Timed]:
        # One HTTP client for the part, made before any timing, as an API user keeps one:
        # making it costs 40-60 ms on a busy machine (httpx builds a TLS context even for
        # http://), none of it ours.
        async with httpx.AsyncClient(base_url=coordinator.url, timeout=30) as client:
            ours = []
            for _ in range(repeat):
                ours.append(await api_run(client, coordinator, TRIVIAL))
                docker.append(run_timed(docker_run(script)))
            return ours

    ours = asyncio.run(interleaved_runs())
    return trivial_figures("b", "HTTP API + follow socket", ours, docker, ratio_at_most(0.25), None)


def part_c(root: Path, coordinator: Coordinator, repeat: int) -> list[Figure]:
    figures = []
    cases = [
        ("short", "100,000 short lines", SHORT_LINES_SCRIPT, 1.3),
        ("big", "8 x 1 MiB lines", BIG_LINES_SCRIPT, 1.5),
    ]
    for key, label, text, limit in cases:
        script = write_script(root, key, text)
        ours, docker = interleaved(
            repeat,
            lambda s=script: run_timed(compound_submit(s, coordinator.url)),  # type: ignore[misc]
            lambda s=script: run_timed(docker_run(s)),  # type: ignore[misc]
        )
        identical = all(t.stdout == EXPECTED[key] for t in ours + docker)
        figures.append(
            from_samples("c", f"{label}, compound submit, end to end", "s",
                         [t.total_s for t in ours], [t.total_s for t in docker],
                         ratio_at_most(limit) if identical else None,
                         note="byte-identical" if identical else "OUTPUT DIFFERS"),
        )  # fmt: skip
    return figures


async def burst(coordinator: Coordinator, count: int) -> float:
    """Submit ``count`` trivial jobs at once, follow them all; seconds until all ended."""
    began = time.perf_counter()
    ids = await _submit_all(coordinator, count)
    if len(ids) != count:
        raise SystemExit(f"only {len(ids)} of {count} burst jobs were accepted")
    ended = await asyncio.gather(*(follow(coordinator.ws_url, job_id) for job_id in ids))
    failed = [f.status for f in ended if f.status != "succeeded"]
    if failed:
        raise SystemExit(f"{len(failed)} burst jobs did not succeed: {failed[:3]}")
    return time.perf_counter() - began


async def _submit_all(coordinator: Coordinator, count: int) -> list[str]:
    """Post ``count`` trivial jobs at once over a few keep-alive connections, as a client
    library would; the ids of those accepted. (httpx opened a connection per request and
    cost ~1 ms of CPU each, on the two cores the measured system runs on.)"""
    body = json.dumps({"script": TRIVIAL}).encode()
    ids: list[str] = []

    async def submit(jobs: int) -> None:
        connection = Connection("127.0.0.1", coordinator.port)
        try:
            for _ in range(jobs):
                status, answer = await connection.post_json("/api/v1/jobs", body)
                if status == 201:
                    ids.append(json.loads(answer)["id"])
        finally:
            connection.close()

    shares = [count // SUBMIT_CONNECTIONS] * SUBMIT_CONNECTIONS
    for index in range(count % SUBMIT_CONNECTIONS):
        shares[index] += 1
    await asyncio.gather(*(submit(jobs) for jobs in shares if jobs))
    return ids


def part_d(root: Path, coordinator: Coordinator) -> list[Figure]:
    """Rounds of (``docker run`` back to back, then one burst), so that a drift of the
    machine's load meets both; the medians of the rounds' rates."""
    script = write_script(root, "trivial", TRIVIAL)
    docker_rates: list[float] = []
    ours_rates: list[float] = []
    for _ in range(BURST_ROUNDS):
        began = time.perf_counter()
        for _ in range(BACK_TO_BACK_RUNS):
            run_timed(docker_run(script))
        docker_rates.append(BACK_TO_BACK_RUNS / (time.perf_counter() - began))
        ours_rates.append(BURST_JOBS / asyncio.run(burst(coordinator, BURST_JOBS)))
    rounds = ", ".join(f"{o:.1f} vs {d:.2f}" for o, d in zip(ours_rates, docker_rates, strict=True))
    return [
        Figure("d", f"{BURST_JOBS} trivial jobs at once, one agent", "jobs/s",
               statistics.median(ours_rates), baseline=statistics.median(docker_rates),
               target=ratio_at_least(3.0),
               note=f"baseline: {BACK_TO_BACK_RUNS} docker runs back to back; median of "
               f"{BURST_ROUNDS} rounds, jobs/s: {rounds}"),
    ]  # fmt: skip


@dataclass
class Stack:
    """A coordinator and one agent, started for the benchmark and ended by it."""

    root: Path
    runtime: str = "runc"
    # None: the agent's default (what the machine lends).
    warm: int | None = None
    slots: int | None = None
    # False: --no-reuse, a fresh container for every job.
    reuse: bool = True
    coordinator: Coordinator | None = None
    agent: Agent | None = None

    @property
    def setup(self) -> str:
        """``runsc, slots 2, warm 2 (defaults)``: what the figures were measured with."""
        lending = choose_lending(self.slots, self.warm, Limits())
        tuned = self.slots is not None or self.warm is not None or not self.reuse
        return (
            f"{self.runtime}, slots {lending.slots}, warm {lending.warm}"
            f"{'' if self.reuse else ', no reuse'}{' (tuned)' if tuned else ' (defaults)'}"
        )

    def __enter__(self) -> Stack:
        self.coordinator = Coordinator(
            data_dir=self.root / "data", heartbeat_interval_s=5, lease_timeout_s=15
        ).start()
        self.agent = Agent(
            self.coordinator.url,
            self.root / "agent",
            name="bench",
            runtime=self.runtime,
            extra_args=[
                *([] if self.warm is None else ["--warm", str(self.warm)]),
                *([] if self.slots is None else ["--slots", str(self.slots)]),
                *([] if self.reuse else ["--no-reuse"]),
            ],
            machine_defaults=True,
        ).start()
        return self

    def __exit__(self, *_: object) -> None:
        if self.agent is not None:
            self.agent.stop()
        if self.coordinator is not None:
            self.coordinator.stop()


def part_h(root: Path, coordinator: Coordinator, runtime: str) -> list[Figure]:
    """A batch of short scripts, ``BATCH_IN_FLIGHT`` in flight through the API, against
    ``docker run`` as many at a time (runc); both as total seconds for the batch."""
    script = write_script(root, "batch", BATCH_SCRIPT)
    began = time.perf_counter()
    with ThreadPoolExecutor(BATCH_IN_FLIGHT) as pool:
        list(pool.map(lambda _: run_timed(docker_run(script)), range(BATCH_JOBS)))
    docker_s = time.perf_counter() - began

    async def batch() -> float:
        gate = asyncio.Semaphore(BATCH_IN_FLIGHT)
        async with httpx.AsyncClient(base_url=coordinator.url, timeout=60) as client:

            async def one() -> None:
                async with gate:
                    await api_run(client, coordinator, BATCH_SCRIPT)

            started = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(BATCH_JOBS)))
            return time.perf_counter() - started

    ours_s = asyncio.run(batch())
    limit = 0.7 if runtime == "runc" else 1.0
    return [
        Figure("h", f"batch of {BATCH_JOBS} short scripts, {BATCH_IN_FLIGHT} in flight", "s",
               ours_s, baseline=docker_s, target=ratio_at_most(limit),
               note=f"baseline: docker run (runc) {BATCH_IN_FLIGHT} at a time"),
    ]  # fmt: skip


def part_i(coordinator: Coordinator, repeat: int) -> list[Figure]:
    """A job prints its clock and sleeps: seconds from the print to a follower's receipt."""

    async def lags() -> list[float]:
        found = []
        async with httpx.AsyncClient(base_url=coordinator.url, timeout=30) as client:
            for _ in range(repeat):
                response = await client.post("/api/v1/jobs", json={"script": PRINT_THEN_SLEEP})
                response.raise_for_status()
                followed = await follow(coordinator.ws_url, response.json()["id"])
                if followed.first_record_wall is None or not followed.stdout:
                    raise SystemExit(f"print-then-sleep job ended {followed.status}")
                found.append(followed.first_record_wall - float(followed.stdout.split()[0]))
        return found

    samples = asyncio.run(lags())
    return [
        from_samples("i", "first line of a job that prints then sleeps, after the print", "s",
                     samples, target=median_at_most(0.15, "s")),
    ]  # fmt: skip


def run_stack(
    root: Path,
    runtime: str,
    parts: str,
    repeat: int,
    heavy_repeat: int,
    warm: int | None = None,
    slots: int | None = None,
    reuse: bool = True,
) -> list[Figure]:
    """The parts asked for, against one coordinator and one agent (``runtime``; the
    agent's defaults unless ``warm``/``slots``/``reuse`` tune it), each figure labelled with
    its setup."""
    with Stack(root, runtime, warm, slots, reuse) as stack:
        assert stack.coordinator is not None
        # One untimed run each warms the page cache, Docker and the agent.
        script = write_script(root, "trivial", TRIVIAL)
        run_timed(compound_submit(script, stack.coordinator.url))
        run_timed(docker_run(script))
        coordinator = stack.coordinator
        runs: dict[str, Callable[[], list[Figure]]] = {
            "a": lambda: part_a(root, coordinator, repeat),
            "b": lambda: part_b(root, coordinator, repeat),
            "c": lambda: part_c(root, coordinator, heavy_repeat),
            "d": lambda: part_d(root, coordinator),
            "h": lambda: part_h(root, coordinator, runtime),
            "i": lambda: part_i(coordinator, repeat),
        }
        figures = [figure for part in parts for figure in runs[part]()]
        return [replace(figure, setup=stack.setup) for figure in figures]


def main(
    repeat: int = 10,
    heavy_repeat: int = 3,
    runtimes: tuple[str, ...] = ("runc", "runsc"),
    parts: str = "abcdhi",
    warm: int | None = None,
    slots: int | None = None,
    reuse: bool = True,
) -> list[Figure]:
    """Every part under every runtime with the agent's defaults (or ``warm``/``slots``/
    ``reuse``)."""
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="compound-bench-e2e-") as workdir:
        for runtime in runtimes:
            root = Path(workdir) / runtime
            root.mkdir()
            figures += run_stack(root, runtime, parts, repeat, heavy_repeat, warm, slots, reuse)
    return figures


def single_use(runtimes: tuple[str, ...] = ("runc", "runsc"), parts: str = "dh") -> list[Figure]:
    """Extra rows: the parts asked for with ``--no-reuse`` (a fresh container for every job:
    what jobs of many submitters, one each, get)."""
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="compound-bench-single-use-") as workdir:
        for runtime in runtimes:
            root = Path(workdir) / runtime
            root.mkdir()
            figures += run_stack(root, runtime, parts, 5, 2, reuse=False)
    # Extra rows, informational: the targets are for what users get with the defaults.
    return [replace(figure, target=None) for figure in figures]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--heavy-repeat", type=int, default=3)
    parser.add_argument("--runtimes", default="runc,runsc", help="comma-separated")
    parser.add_argument("--warm", type=int, default=None, help="the agent's --warm (tuned)")
    parser.add_argument("--slots", type=int, default=None, help="the agent's --slots (tuned)")
    parser.add_argument("--no-reuse", action="store_true", help="the agent's --no-reuse (tuned)")
    parser.add_argument("--parts", default="abcdhi", help="which of the parts, e.g. ci")
    options = parser.parse_args()
    if set(options.parts) - set("abcdhi"):
        parser.error("--parts takes letters from abcdhi")
    figures = main(
        options.repeat,
        options.heavy_repeat,
        tuple(options.runtimes.split(",")),
        options.parts,
        options.warm,
        options.slots,
        not options.no_reuse,
    )
    print(text_table(figures))
