"""Proof by fault injection: seeded schedules of crashes, freezes and restarts of real
coordinator and agent processes while jobs run, then the invariants (see fault_run.py).

A failure names its seed; `bench/faults.py --seed N` replays that schedule alone.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fault_run import Watcher, final_attempt_stdout, run
from faults import Plan, expected_stdout, schedule

# Fixed seeds: the fast set CI runs (~30 s of faults each); bench/faults.py runs hundreds.
CI_SEEDS = (1, 2, 3)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("seed", CI_SEEDS)
def test_invariants_hold_under_a_fault_schedule(
    seed: int, docker_engine: str, tmp_path: Path
) -> None:
    """Under the seeded schedule every job ends exactly once, in time, with exact output;
    no lease outlives its holder, no container its agent; /healthz always answers."""
    result = run(seed, Plan(), tmp_path)
    assert not result.violations, "\n".join(result.violations)


def test_a_seed_always_gives_the_same_schedule() -> None:
    """The schedule is a pure function of the seed, so a printed seed replays its run."""
    assert schedule(7, Plan()) == schedule(7, Plan())
    assert schedule(7, Plan()) != schedule(8, Plan())


@pytest.mark.parametrize("seed", range(50))
def test_every_episode_ends_with_its_target_running(seed: int) -> None:
    """Per target, episodes never overlap and each ends by bringing the target back, and
    every job is submitted once."""
    steps = schedule(seed, Plan())
    ends = {"sigkill": "start", "sigterm": "start", "sigstop": "sigcont", "pause": "resume"}
    ends["drain"] = "resume"
    open_episode: dict[str, str] = {}
    for step in steps:
        if step.action == "submit":
            continue
        if step.target in open_episode:
            assert step.action in (ends[open_episode.pop(step.target)], "start_new"), step
        else:
            open_episode[step.target] = step.action
    assert not open_episode
    submitted = [step.target for step in steps if step.action == "submit"]
    assert sorted(submitted) == sorted(f"job{i}" for i in range(Plan().jobs))


def test_the_final_attempt_is_what_follows_the_last_requeue() -> None:
    """Output before a requeue or hand-back note belongs to an earlier attempt."""
    records = [
        {"stream": "stdout", "data": "job0 line 0\n"},
        {"stream": "system", "data": "[compound] contributor lost; job requeued\n"},
        {"stream": "stdout", "data": "job0 line 0\n"},
        {"stream": "stderr", "data": "warning\n"},
        {"stream": "system", "data": "[compound] attempt 1 handed back (stopping); queued\n"},
        {"stream": "stdout", "data": expected_stdout("job0", 1)},
    ]
    assert final_attempt_stdout(records) == expected_stdout("job0", 1)


class StubWorld:
    """The liveness facts the watcher asks for, set by hand."""

    def __init__(self) -> None:
        self.live: set[str] = set()

    def coordinator_state(self) -> tuple[bool, int, float]:
        return True, 1, 0.0

    def holder_live(self, node_id: str) -> bool:
        return node_id in self.live


def view(status: str, holder: str | None = None, finished_at: float | None = None) -> dict:
    return {
        "id": "j1",
        "status": status,
        "contributor_id": holder,
        "exit_code": 0 if finished_at else None,
        "finished_at": finished_at,
        "attempts": 1,
    }


def test_the_watcher_sees_a_second_ending_and_a_holderless_lease() -> None:
    """The checker is not blind: a final status that changes, and a job running under a dead
    contributor past the lease timeout, are both violations."""
    world = StubWorld()
    watcher = Watcher(world, lease_timeout_s=3.0)  # type: ignore[arg-type]
    watcher.observe(view("running", "node-a"), now=10.0, up_since=0.0)
    watcher.observe(view("running", "node-a"), now=13.0, up_since=0.0)
    assert not watcher.violations, "within the lease timeout plus the bound"
    watcher.observe(view("running", "node-a"), now=16.5, up_since=0.0)
    assert "stayed running under node-a" in watcher.violations[0]
    watcher.observe(view("succeeded", finished_at=20.0), now=20.0, up_since=0.0)
    watcher.observe(view("failed", finished_at=21.0), now=21.0, up_since=0.0)
    assert "ended twice" in watcher.violations[1]
