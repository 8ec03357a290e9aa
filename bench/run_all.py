"""The benchmark suite: every figure of issue 8 in one run, one table, bench/RESULTS.md.

Parts, each bounded in time (a part past its limit is stopped, its processes ended, and
its row marked as such), in this order:

- (a)-(d), (h), (i) ``end_to_end.py``: jobs against ``docker run`` (runc) in the same run,
  with the agent's defaults, under runc and under runsc; then (d) and (h) with
  ``--no-reuse`` (a fresh container for every job, as jobs of many submitters get);
- ``engine_ceiling.py``: single-use containers/s the engine allows under each runtime, the
  bound of (d) (under gVisor (d) is also held to 90% of it);
- ``burst_cpu.py``: the CPU one job of (d) costs, by process (what bounds (d) on 2 cores);
- (e)-(f) ``scale.py``: dispatch to 100 simulated contributors; 1,000 and 10,000 heartbeating;
- (g) ``fanout.py``: one job of 1,000,000 lines to 10 followers;
- (18) ``cluster.py``: dispatch with 1-3 coordinators on one PostgreSQL against SQLite,
  cross-coordinator first line, failover after a SIGKILL (docs/cluster.md);
  ``cluster_presence.py``: 10,000 contributors over 2 coordinators on PostgreSQL;
- ``deps_start.py`` if present (per-job dependencies): its ``main()`` returns figures;
- ``profiles.py``: py-spy flame graphs of (a) and (c), kept as bench/profile_*.svg.

    bash scripts/bench            # or: PYTHONPATH=src .venv/bin/python bench/run_all.py
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.util
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import burst_cpu
import cluster as several_coordinators
import cluster_presence
import end_to_end
import engine_ceiling
import fanout
import profiles
import scale
from figures import Figure, markdown_table, ratio_at_least, text_table

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "RESULTS.md"
README = BENCH.parent / "README.md"
ANALYSIS = BENCH / "ANALYSIS.md"
BEGIN_TABLE = "<!-- bench table begin -->"
END_TABLE = "<!-- bench table end -->"


class PartTimedOut(BaseException):
    """Raised from SIGALRM when a part runs past its limit."""


def _on_alarm(_signum: int, _frame: Any) -> None:
    raise PartTimedOut


def run_part(name: str, limit_s: int, work: Callable[[], list[Figure]]) -> tuple[list[Figure], str]:
    """Run one part within ``limit_s``; a failure or timeout becomes a note, not a crash."""
    print(f"bench: {name} (at most {limit_s} s) ...", flush=True)
    began = time.monotonic()
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(limit_s)
    try:
        figures = work()
        outcome = f"{name}: {time.monotonic() - began:.0f} s"
    except PartTimedOut:
        figures, outcome = [], f"{name}: STOPPED after {limit_s} s (time limit)"
    except (Exception, SystemExit) as exc:  # one broken part must not cost the others
        traceback.print_exc()
        figures, outcome = [], f"{name}: FAILED ({type(exc).__name__}: {exc})"
    finally:
        signal.alarm(0)
    print(f"bench: {outcome}", flush=True)
    return figures, outcome


def deps_part() -> Callable[[], list[Figure]] | None:
    """The per-job dependencies benchmark, if that work has been merged."""
    if importlib.util.find_spec("deps_start") is None:
        return None
    module = importlib.import_module("deps_start")

    def work() -> list[Figure]:
        return as_figures(module.main())

    return work


def as_figures(result: Any) -> list[Figure]:
    """Figures from another part's ``main()``: a list of Figure, or a name -> number mapping."""
    if isinstance(result, list):
        return [f for f in result if isinstance(f, Figure)]
    if isinstance(result, dict):
        return [
            Figure("deps", str(name), "", float(value))
            for name, value in result.items()
            if isinstance(value, int | float)
        ]
    return []


def _command_output(command: list[str]) -> str:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    return result.stdout.strip() or "unavailable"


def machine() -> dict[str, str]:
    memory_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory_kib = int(line.split()[1])
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.machine(),
    )
    return {
        "cores": str(os.cpu_count()),
        "cpu": model,
        "ram": f"{memory_kib / 2**20:.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "docker": _command_output(["docker", "version", "--format", "{{.Server.Version}}"]),
        "runtime": "each figure's setup column (runtime, the agent's slots and warm"
        " containers; defaults unless tuned); baselines: docker run under runc; the"
        " coordinator and agent as subprocesses on 127.0.0.1",
        "load average at start": " ".join(f"{v:.2f}" for v in os.getloadavg()),
    }


def write_results(
    figures: list[Figure], outcomes: list[str], facts: dict[str, str], command: str
) -> None:
    notes = [f"- ({f.part}) {f.name}: {f.note}" for f in figures if f.note]
    analysis = ANALYSIS.read_text() if ANALYSIS.exists() else ""
    text = "\n".join(
        [
            "# Benchmark results",
            "",
            f"Measured {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC} with `{command}`.",
            "Every ratio is Compound's median over the baseline's median, from the same run.",
            "",
            *[f"- {key}: {value}" for key, value in facts.items()],
            "",
            BEGIN_TABLE,
            markdown_table(figures),
            END_TABLE,
            "",
            "## Notes",
            "",
            *notes,
            "",
            "## Parts",
            "",
            *[f"- {outcome}" for outcome in outcomes],
            "",
            analysis,
        ]
    )
    RESULTS.write_text(text.rstrip() + "\n")


def update_readme(figures: list[Figure], facts: dict[str, str]) -> None:
    """Put the table between the README's markers, saying where and when it was measured."""
    if not README.exists():
        return
    text = README.read_text()
    if BEGIN_TABLE not in text or END_TABLE not in text:
        return
    head, rest = text.split(BEGIN_TABLE, 1)
    _, tail = rest.split(END_TABLE, 1)
    load_1min = float(facts["load average at start"].split()[0])
    busy = load_1min > 0.5 * (os.cpu_count() or 1)
    where = (
        f"Measured {datetime.datetime.now(datetime.UTC):%Y-%m-%d} on {facts['cores']} cores "
        f"({facts['cpu']}), load average {facts['load average at start']} at the start"
        f"{' (a busy machine: other work was running)' if busy else ''}; details in "
        "bench/RESULTS.md."
    )
    README.write_text(
        f"{head}{BEGIN_TABLE}\n{where}\n\n{markdown_table(figures)}\n{END_TABLE}{tail}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10, help="runs of each trivial-job figure")
    parser.add_argument("--heavy-repeat", type=int, default=3, help="runs of each (c) figure")
    parser.add_argument("--no-profiles", action="store_true")
    options = parser.parse_args()
    began = time.monotonic()
    facts = machine()
    parts: list[tuple[str, int, Callable[[], list[Figure]]]] = [
        (
            "(a)-(i) end to end, agent defaults, runc and runsc",
            720,
            lambda: end_to_end.main(options.repeat, options.heavy_repeat),
        ),
        ("(d), (h) single-use containers (--no-reuse), runc and runsc", 300, end_to_end.single_use),
        ("(d) engine ceiling, runc", 120, lambda: _ceiling("runc")),
        ("(d) engine ceiling, runsc", 150, lambda: _ceiling("runsc")),
        ("(d) CPU per job", 120, burst_cpu.measure),
        ("(e) dispatch", 90, scale.dispatch_main),
        ("(f) 1,000 contributors", 120, lambda: scale.presence_main(1000)),
        ("(f) 10,000 contributors", 300, lambda: scale.presence_main(10_000)),
        ("(g) fan-out", 180, fanout.main),
        # Issue 18: 1-3 coordinators on one PostgreSQL, cross-coordinator follow, failover.
        ("(18) several coordinators", 240, several_coordinators.main),
        ("(18) 10,000 contributors over 2 coordinators", 360, cluster_presence.main),
    ]
    deps = deps_part()
    if deps is not None:
        parts.append(("per-job dependencies", 90, deps))
    if not options.no_profiles:
        parts.append(("profiles of (a) and (c)", 90, lambda: _profiles()))
    figures: list[Figure] = []
    outcomes: list[str] = []
    for name, limit_s, work in parts:
        found, outcome = run_part(name, limit_s, work)
        figures += found
        outcomes.append(outcome)
    figures += against_ceiling(figures)
    outcomes.append(f"whole suite: {time.monotonic() - began:.0f} s")
    print()
    print(text_table(figures))
    print()
    for line in outcomes:
        print(f"bench: {line}")
    write_results(figures, outcomes, facts, "bash scripts/bench")
    update_readme(figures, facts)
    print(f"bench: wrote {RESULTS} and the table in {README.name}")


def _ceiling(runtime: str) -> list[Figure]:
    return [replace(f, setup=runtime) for f in engine_ceiling.main(runtime=runtime)]


def against_ceiling(figures: list[Figure]) -> list[Figure]:
    """(d) under gVisor against the engine's own ceiling for runsc containers (the target
    when 3x ``docker run`` back to back is out of reach under gVisor)."""
    ceiling = next(
        (f for f in figures if f.name.startswith("engine ceiling") and f.setup == "runsc"), None
    )
    bursts = [
        f for f in figures if f.part == "d" and f.unit == "jobs/s" and f.setup.startswith("runsc")
    ]
    if ceiling is None:
        return []
    return [
        Figure(
            "d",
            f"{burst.name}: share of the engine's runsc ceiling",
            "jobs/s",
            burst.median,
            baseline=ceiling.median,
            # Informational for the extra rows, as they are.
            target=ratio_at_least(0.9) if burst.target is not None else None,
            setup=burst.setup,
        )
        for burst in bursts
    ]


def _profiles() -> list[Figure]:
    profiles.main(BENCH)
    return []


if __name__ == "__main__":
    main()
