"""Proof by fault injection: seeded schedules of crashes, freezes and restarts of real
coordinator and agent processes while jobs run, then the invariants (see fault_run.py).

A failure names its seed; `bench/faults.py --seed N` replays that schedule alone.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fault_run import run
from faults import Plan

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
