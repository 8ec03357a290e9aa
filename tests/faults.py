"""Fault schedules for the fault-injection harness: seed in, a list of timed steps out.

Pure: ``schedule(seed, plan)`` draws everything from ``random.Random(seed)`` and touches no
process, so a seed printed by a failing run replays the same schedule. A schedule is a list
of ``Step``s sorted by time: jobs submitted throughout, and per target (the coordinator,
each agent) a sequence of fault episodes that never overlap on one target and always end
with the target running again (a SIGKILL is followed by a restart, a SIGSTOP by a SIGCONT).

The kinds of fault are one table, ``FAULTS``; a kind needing something the agent may not
have yet (``needs="control"``: `compound agent pause|resume|drain`) is still scheduled and
skipped at run time when missing, so a seed means the same schedule everywhere.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

COORDINATOR = "coordinator"


@dataclass(frozen=True)
class Step:
    """One thing the executor does at ``time_s`` seconds into the run."""

    time_s: float
    action: str  # submit, sigkill, sigterm, sigstop, sigcont, start, start_new, pause, ...
    target: str  # "coordinator", "agent0", ..., or a job name for "submit"
    fault: str = ""  # the fault episode this step belongs to ("" for a submission)
    lines: int = 0  # submit: lines the job prints
    pause_s: float = 0.0  # submit: seconds it sleeps after each line

    def __str__(self) -> str:
        what = f"lines={self.lines} pause={self.pause_s}" if self.action == "submit" else self.fault
        return f"{self.time_s:6.2f}s {self.action:<9} {self.target:<11} {what}"


@dataclass(frozen=True)
class Plan:
    """The shape of a run: how long faults go on, how many agents and jobs."""

    duration_s: float = 30.0
    agents: int = 2
    jobs: int = 10
    lease_timeout_s: float = 3.0
    # Calm between two episodes on one target, seconds (drawn uniformly).
    gap_s: tuple[float, float] = (3.0, 9.0)


Episode = Callable[[random.Random, float, str, float], list[tuple[float, str]]]


@dataclass(frozen=True)
class Fault:
    """A kind of fault episode: what it targets, how often it is drawn, its steps."""

    name: str
    target: str  # "agent" or "coordinator"
    weight: int
    # (rng, start time, target, lease timeout) -> [(time, action), ...]
    steps: Episode
    needs: str = ""  # a capability the executor may lack ("control"); then skipped


def _then(action: str, after: str, low_s: float, high_s: float) -> Episode:
    """An episode of two steps: ``action``, then ``after`` a uniform delay later."""

    def steps(
        rng: random.Random, at: float, target: str, lease_s: float
    ) -> list[tuple[float, str]]:
        return [(at, action), (at + rng.uniform(low_s, high_s), after)]

    return steps


def _freeze_past_lease(
    rng: random.Random, at: float, target: str, lease_s: float
) -> list[tuple[float, str]]:
    # The honest dropped connection on loopback: frozen long enough for the peer to give up.
    return [(at, "sigstop"), (at + lease_s + rng.uniform(0.5, 3.0), "sigcont")]


FAULTS: tuple[Fault, ...] = (
    Fault("agent-kill-same", "agent", 3, _then("sigkill", "start", 0.3, 3.0)),
    Fault("agent-kill-new", "agent", 2, _then("sigkill", "start_new", 0.3, 3.0)),
    Fault("agent-term-same", "agent", 2, _then("sigterm", "start", 0.5, 3.0)),
    Fault("agent-term-new", "agent", 1, _then("sigterm", "start_new", 0.5, 3.0)),
    Fault("agent-freeze-short", "agent", 2, _then("sigstop", "sigcont", 0.2, 1.5)),
    Fault("agent-drop-connection", "agent", 2, _freeze_past_lease),
    Fault("agent-pause", "agent", 2, _then("pause", "resume", 1.0, 4.0), needs="control"),
    Fault("agent-drain", "agent", 1, _then("drain", "resume", 1.0, 4.0), needs="control"),
    Fault("coordinator-kill", COORDINATOR, 3, _then("sigkill", "start", 0.2, 2.0)),
    Fault("coordinator-term", COORDINATOR, 1, _then("sigterm", "start", 0.2, 2.0)),
    Fault("coordinator-freeze", COORDINATOR, 2, _then("sigstop", "sigcont", 0.3, 2.0)),
    Fault("coordinator-drop-connections", COORDINATOR, 1, _freeze_past_lease),
)


def _episodes(rng: random.Random, plan: Plan, target: str, kind: str) -> list[Step]:
    """Fault episodes on one target, one after another with calm between, within the run."""
    choices = [fault for fault in FAULTS if fault.target == kind]
    weights = [fault.weight for fault in choices]
    steps: list[Step] = []
    at = rng.uniform(1.0, plan.gap_s[1])
    while at < plan.duration_s:
        fault = rng.choices(choices, weights)[0]
        episode = fault.steps(rng, at, target, plan.lease_timeout_s)
        steps.extend(Step(round(t, 2), action, target, fault.name) for t, action in episode)
        at = episode[-1][0] + rng.uniform(*plan.gap_s)
    return steps


def _submissions(rng: random.Random, plan: Plan) -> list[Step]:
    """Jobs spread over the run: a few lines each, most sleeping up to a few seconds in all."""
    steps = []
    for index in range(plan.jobs):
        lines = rng.randint(1, 8)
        pause_s = rng.choice((0.0, 0.1, 0.25, 0.5))
        at = rng.uniform(0.0, plan.duration_s * 0.8)
        steps.append(Step(round(at, 2), "submit", f"job{index}", lines=lines, pause_s=pause_s))
    return steps


def schedule(seed: int, plan: Plan) -> list[Step]:
    """The run for ``seed``: every submission and fault step, in time order."""
    rng = random.Random(seed)
    steps = _submissions(rng, plan)
    steps.extend(_episodes(rng, plan, COORDINATOR, COORDINATOR))
    for index in range(plan.agents):
        steps.extend(_episodes(rng, plan, f"agent{index}", "agent"))
    return sorted(steps, key=lambda step: step.time_s)


def job_script(name: str, lines: int, pause_s: float) -> str:
    """The script of a submitted job: numbered lines, then a last one without a newline."""
    return (
        "import time\n"
        f"for i in range({lines}):\n"
        f"    print(f'{name} line {{i}}', flush=True)\n"
        f"    time.sleep({pause_s})\n"
        f"print('{name} done \\u00e9', end='')\n"
    )


def expected_stdout(name: str, lines: int) -> str:
    """What ``job_script`` prints on a clean run, byte for byte."""
    return "".join(f"{name} line {i}\n" for i in range(lines)) + f"{name} done \u00e9"
