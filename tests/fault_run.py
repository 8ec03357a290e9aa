"""One fault run: a seeded schedule driven against real processes, then the invariants.

``run(seed, plan, work_dir)`` starts a coordinator and agents (``fault_world.World``),
submits jobs and applies faults at the schedule's times while a watcher thread probes
/healthz and reads every job's status twice a second, waits for a quiet period in which
every job must end, and checks:

- every job reaches a final status within the lease timeout plus a bound after the last
  fault, and never leaves it or changes it once there (exactly one final status);
- no job stays `running` under a contributor with no live process for longer than the lease
  timeout (plus the sweep's granularity), counted while the coordinator is up;
- a succeeded job's last attempt printed exactly what a clean run prints, byte for byte;
- no container of an agent remains once it ended on SIGTERM (also at the end);
- /healthz answers whenever the coordinator is meant to be up (not killed, stopped, frozen);
- no job used more than ``MAX_ATTEMPTS`` attempts.

A violation is a sentence in ``RunResult.violations`` with the seed, so a failure replays.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from fault_world import World
from faults import Plan, Step, expected_stdout, job_script, schedule

TERMINAL = {"succeeded", "failed", "cancelled", "timed_out"}
MAX_ATTEMPTS = 2  # the coordinator's max_attempts
# Lease sweeps run every second; the watcher looks every half second and may be slowed.
HOLDER_BOUND_S = 3.0
# After the last fault: reconnects, then the jobs still queued run (a few seconds each).
SETTLE_BOUND_S = 45.0
WATCH_INTERVAL_S = 0.5
# Requeue and hand-back notes end an attempt: what follows is the next attempt's output.
ATTEMPT_ENDS = ("requeued", "handed back")
# The first step of each kind of fault episode: what is counted as one fault.
EPISODE_STARTS = {"sigkill", "sigterm", "sigstop", "pause", "drain"}


@dataclass
class RunResult:
    seed: int
    steps: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    jobs: int = 0
    resubmitted: int = 0  # jobs created twice because an answer was lost with the coordinator
    outcomes: Counter[str] = field(default_factory=Counter)
    # Attempts cut short by a fault and started again (proof the faults hit running jobs).
    interrupted: Counter[str] = field(default_factory=Counter)
    settle_s: float = 0.0
    wall_s: float = 0.0
    abandoned_identities: int = 0
    violations: list[str] = field(default_factory=list)


class Watcher(threading.Thread):
    """Probes /healthz and reads every job twice a second while the coordinator is up."""

    def __init__(self, world: World, lease_timeout_s: float) -> None:
        super().__init__(daemon=True)
        self.world = world
        self.lease_timeout_s = lease_timeout_s
        self.jobs: dict[str, dict[str, Any]] = {}  # latest view of each job
        self.final: dict[str, dict[str, Any]] = {}  # first final view of each job
        self.violations: list[str] = []
        self._holderless: dict[tuple[str, str], float] = {}
        self._reported: set[tuple[str, str]] = set()
        self._done = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.world.coordinator.url, timeout=5.0) as client:
            while not self._done.wait(WATCH_INTERVAL_S):
                self.look(client)

    def stop(self) -> None:
        self._done.set()
        self.join(30)

    def look(self, client: httpx.Client) -> None:
        up, epoch, up_since = self.world.coordinator_state()
        if not up:
            return
        try:
            healthy = client.get("/healthz").status_code == 200
        except httpx.HTTPError as error:
            healthy, problem = False, repr(error)
        else:
            problem = "not 200"
        still_up, same_epoch, _ = self.world.coordinator_state()
        if not healthy and still_up and same_epoch == epoch:
            self.violations.append(f"/healthz failed ({problem}) while the coordinator was up")
        try:
            views = client.get("/api/v1/jobs", params={"limit": 1000}).json()["jobs"]
        except (httpx.HTTPError, ValueError, KeyError):
            return
        now = time.monotonic()
        for view in views:
            self.observe(view, now, up_since)

    def observe(self, view: dict[str, Any], now: float, up_since: float) -> None:
        job_id, status = view["id"], view["status"]
        self.jobs[job_id] = view
        first = self.final.get(job_id)
        if first is not None:
            before = (first["status"], first["exit_code"], first["finished_at"])
            after = (status, view["exit_code"], view["finished_at"])
            if before != after:
                self.violations.append(f"job {job_id} ended twice: {before} then {after}")
                self.final[job_id] = view
        elif status in TERMINAL:
            self.final[job_id] = view
        if view["attempts"] > MAX_ATTEMPTS:
            self.violations.append(f"job {job_id} has {view['attempts']} attempts")
        holder = view.get("contributor_id")
        if status != "running" or not holder:
            return
        key = (job_id, holder)
        if self.world.holder_live(holder):
            self._holderless.pop(key, None)
            return
        since = max(self._holderless.setdefault(key, now), up_since)
        if now - since > self.lease_timeout_s + HOLDER_BOUND_S and key not in self._reported:
            self._reported.add(key)
            self.violations.append(
                f"job {job_id} stayed running under {holder} (no live process) for "
                f"{now - since:.1f} s, lease timeout {self.lease_timeout_s} s"
            )


class Submitter(threading.Thread):
    """Submits jobs as the schedule says, retrying while the coordinator is away."""

    def __init__(self, world: World) -> None:
        super().__init__(daemon=True)
        self.world = world
        self.pending: queue.Queue[Step | None] = queue.Queue()
        self.failures: list[str] = []

    def run(self) -> None:
        while (step := self.pending.get()) is not None:
            script = job_script(step.target, step.lines, step.pause_s)
            deadline = time.monotonic() + 120
            while not self._submit(step.target, script):
                if time.monotonic() > deadline:
                    self.failures.append(f"{step.target} could not be submitted in 120 s")
                    break
                time.sleep(0.2)

    def _submit(self, name: str, script: str) -> bool:
        if not self.world.coordinator_state()[0]:
            return False
        try:
            answer = self.world.coordinator.api(
                "POST", "/api/v1/jobs", json={"script": script, "name": name}
            )
        except httpx.HTTPError:
            return False
        return answer.status_code == 201


def final_attempt_stdout(records: list[dict[str, Any]]) -> str:
    """The stdout of a job's last attempt: what follows its last requeue or hand-back note."""
    out: list[str] = []
    for record in records:
        if record["stream"] == "system" and any(end in record["data"] for end in ATTEMPT_ENDS):
            out = []
        elif record["stream"] == "stdout":
            out.append(record["data"])
    return "".join(out)


def run(seed: int, plan: Plan, work_dir: Path, say: Callable[[str], None] = print) -> RunResult:
    """Drive the schedule of ``seed`` against real processes; the invariants' verdict."""
    steps = schedule(seed, plan)
    result = RunResult(seed=seed, steps=len(steps))
    say(f"fault run seed={seed} ({len(steps)} steps, replay: bench/faults.py --seed {seed})")
    began = time.monotonic()
    world = World(work_dir, plan.agents, plan.lease_timeout_s)
    world.start()
    watcher, submitter = Watcher(world, plan.lease_timeout_s), Submitter(world)
    watcher.start()
    submitter.start()
    try:
        _drive(steps, world, submitter, result, say)
        _settle(world, watcher, submitter, plan, steps, result)
    finally:  # the processes end even when the harness itself fails (or Ctrl-C)
        try:
            watcher.stop()
            submitter.pending.put(None)
        finally:
            result.abandoned_identities = len(world.stop())
        result.violations = [*result.violations, *watcher.violations, *world.violations]
        result.violations.extend(submitter.failures)
        result.wall_s = round(time.monotonic() - began, 1)
    result.violations = [f"seed {seed}: {violation}" for violation in result.violations]
    say(f"seed={seed}: {summary_line(result)}")
    return result


def _drive(
    steps: list[Step],
    world: World,
    submitter: Submitter,
    result: RunResult,
    say: Callable[[str], None],
) -> None:
    start = time.monotonic()
    for step in steps:
        # The schedule is the input: steps happen at their times, not on events.
        time.sleep(max(0.0, start + step.time_s - time.monotonic()))
        if step.action == "submit":
            submitter.pending.put(step)
            outcome = "queued for submission"
        else:
            outcome = world.apply(step)
            if step.action in EPISODE_STARTS:
                tally = result.faults if outcome == "done" else result.skipped
                tally[step.fault] += 1
        say(f"  {step}  {outcome}")


def _settle(
    world: World,
    watcher: Watcher,
    submitter: Submitter,
    plan: Plan,
    steps: list[Step],
    result: RunResult,
) -> None:
    """The quiet period: every job must end; then outputs are compared with clean runs."""
    quiet = time.monotonic()
    wanted = {step.target for step in steps if step.action == "submit"}
    limit_s = plan.lease_timeout_s + SETTLE_BOUND_S
    while time.monotonic() - quiet < limit_s:
        names = {view["name"] for view in watcher.jobs.values()}
        if names >= wanted and set(watcher.final) == set(watcher.jobs):
            break
        time.sleep(WATCH_INTERVAL_S)
    result.settle_s = round(time.monotonic() - quiet, 1)
    for job_id, view in watcher.jobs.items():
        if job_id not in watcher.final:
            result.violations.append(
                f"job {job_id} ({view['name']}) still {view['status']} {limit_s:.0f} s "
                "after the last fault"
            )
    missing = wanted - {view["name"] for view in watcher.jobs.values()}
    result.violations.extend(f"{name} never appeared" for name in sorted(missing))
    result.jobs = len(watcher.jobs)
    result.resubmitted = len(watcher.jobs) - len(wanted - missing)
    _judge_outputs(world, watcher, steps, result)


def _judge_outputs(world: World, watcher: Watcher, steps: list[Step], result: RunResult) -> None:
    """Outcomes, attempts cut short, and each succeeded job's output against a clean run."""
    lines = {step.target: step.lines for step in steps if step.action == "submit"}
    for job_id, view in watcher.final.items():
        result.outcomes[_outcome(view)] += 1
        records = world.coordinator.logs(job_id)
        for record in records:
            if record["stream"] == "system" and "requeued" in record["data"]:
                result.interrupted["requeued (lease expired)"] += 1
            elif record["stream"] == "system" and "handed back" in record["data"]:
                result.interrupted["handed back"] += 1
        if view["status"] == "succeeded":
            got = final_attempt_stdout(records)
            want = expected_stdout(view["name"], lines[view["name"]])
            if got != want:
                result.violations.append(
                    f"job {job_id} ({view['name']}) succeeded with stdout {got!r}, "
                    f"a clean run prints {want!r}; its log: "
                    + " ".join(f"{r['seq']}:{r['stream']}:{r['data'][:60]!r}" for r in records)
                )


def _outcome(view: dict[str, Any]) -> str:
    status: str = view["status"]
    return f"{status}: {view['error']}" if view.get("error") else status


def summary_line(result: RunResult) -> str:
    faults = ", ".join(f"{name} {count}" for name, count in sorted(result.faults.items()))
    outcomes = ", ".join(f"{name} {count}" for name, count in sorted(result.outcomes.items()))
    verdict = (
        f"{len(result.violations)} violation(s)" if result.violations else "all invariants hold"
    )
    interrupted = ", ".join(f"{k} {n}" for k, n in sorted(result.interrupted.items()))
    return (
        f"{result.jobs} jobs ({outcomes}; attempts cut: {interrupted or 'none'}); "
        f"faults: {faults or 'none'}; "
        f"settled in {result.settle_s} s; {verdict}"
    )
