"""Run many fault-injection schedules (tests/fault_run.py) and write down what happened.

    PYTHONPATH=src python bench/faults.py --seeds 100-399 --out bench/faults-results.json
    PYTHONPATH=src python bench/faults.py --seed 17          # replay one schedule, verbosely

Each seed is one schedule (tests/faults.py) run against a fresh coordinator and agents on
the real Docker engine. The summary (schedules, faults applied and skipped, jobs and their
outcomes, every violation with its seed) is printed and, with --out, written as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fault_run import RunResult, run, summary_line
from faults import Plan


def seed_range(text: str) -> range:
    first, _, last = text.partition("-")
    return range(int(first), int(last or first) + 1)


def summarise(results: list[RunResult], plan: Plan, seeds: str) -> dict[str, object]:
    faults: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    interrupted: Counter[str] = Counter()
    for result in results:
        interrupted.update(result.interrupted)
        faults.update(result.faults)
        skipped.update(result.skipped)
        outcomes.update(result.outcomes)
    return {
        "seeds": seeds,
        "plan": {"duration_s": plan.duration_s, "agents": plan.agents, "jobs": plan.jobs},
        "schedules": len(results),
        "steps": sum(r.steps for r in results),
        "faults": dict(sorted(faults.items())),
        "skipped": dict(sorted(skipped.items())),
        "jobs": sum(r.jobs for r in results),
        "resubmitted": sum(r.resubmitted for r in results),
        "outcomes": dict(sorted(outcomes.items())),
        "attempts_cut": dict(sorted(interrupted.items())),
        "max_settle_s": max((r.settle_s for r in results), default=0.0),
        "wall_s": round(sum(r.wall_s for r in results), 1),
        "violations": [v for r in results for v in r.violations],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="1-20", help="a seed range, FIRST-LAST")
    parser.add_argument("--seed", type=int, help="one seed, every step printed")
    parser.add_argument("--agents", type=int, default=Plan.agents)
    parser.add_argument("--jobs", type=int, default=Plan.jobs)
    parser.add_argument("--duration-s", type=float, default=Plan.duration_s)
    parser.add_argument("--out", type=Path, help="where to write the JSON summary")
    options = parser.parse_args()
    plan = Plan(duration_s=options.duration_s, agents=options.agents, jobs=options.jobs)
    seeds = str(options.seed) if options.seed is not None else options.seeds
    verbose = options.seed is not None
    results = []
    try:
        for seed in seed_range(seeds):
            with tempfile.TemporaryDirectory(prefix=f"faults-{seed}-") as work_dir:
                result = run(seed, plan, Path(work_dir), say=print if verbose else lambda _: None)
            results.append(result)
            stamp = time.strftime("%H:%M:%S")
            print(f"[{stamp}] seed {seed}: {summary_line(result)}", flush=True)
            for violation in result.violations:
                print(f"    {violation}", flush=True)
    except KeyboardInterrupt:  # Ctrl-C: the seeds run so far are still summarised
        print("interrupted", flush=True)
    ran = f"{results[0].seed}-{results[-1].seed}" if results else seeds
    summary = summarise(results, plan, ran)
    print(json.dumps(summary, indent=2))
    if options.out:
        options.out.write_text(json.dumps(summary, indent=2) + "\n")
    return 1 if summary["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
