"""Defaults sized to the machine: the agent's slots and warm containers, the coordinator's
connection cap."""

from __future__ import annotations

from dataclasses import replace

from compound.agent.default_share import (
    Lending,
    Machine,
    choose_lending,
    default_lending,
    lending_line,
)
from compound.agent.runners.base import Limits
from compound.agent.settings import MAX_WARM, AgentSettings
from compound.coordinator.serving.fd_limit import (
    MAX_DEFAULT_CONNECTIONS,
    RESERVED_FDS,
    connection_cap,
)
from compound.protocol import MAX_SLOTS

GiB = 1024**3
MiB = 1024**2


def test_slots_follow_cores_and_memory() -> None:
    """One slot per job's worth of cores and of memory, whichever is fewer; warm = slots."""
    limits = Limits(memory_bytes=512 * MiB, cpus=1.0)
    assert default_lending(Machine(cores=8, memory_bytes=16 * GiB), limits) == Lending(8, 8)
    assert default_lending(Machine(cores=8, memory_bytes=2 * GiB), limits) == Lending(4, 4)
    two_cores_each = Limits(memory_bytes=512 * MiB, cpus=2.0)
    assert default_lending(Machine(cores=8, memory_bytes=16 * GiB), two_cores_each).slots == 4


def test_slots_are_at_least_one_and_within_caps() -> None:
    """A small machine still lends one slot; a huge one stays within the caps."""
    limits = Limits(memory_bytes=4 * GiB, cpus=4.0)
    assert default_lending(Machine(cores=2, memory_bytes=1 * GiB), limits) == Lending(1, 1)
    huge = default_lending(Machine(cores=512, memory_bytes=4096 * GiB), Limits())
    assert huge == Lending(MAX_SLOTS, MAX_WARM)


def test_unknown_memory_limits_by_cores_alone() -> None:
    """A machine whose memory cannot be read lends by its cores."""
    assert default_lending(Machine(cores=3, memory_bytes=0), Limits()).slots == 3


def test_flags_win_over_the_machine() -> None:
    """``--slots`` and ``--warm`` still say otherwise, each on its own."""
    machine = Machine(cores=8, memory_bytes=16 * GiB)
    assert choose_lending(2, None, Limits(), machine) == Lending(2, 8)
    assert choose_lending(None, 0, Limits(), machine) == Lending(8, 0)


def test_this_machine_is_read() -> None:
    """The machine this runs on has at least one core and some memory."""
    here = Machine.here()
    assert here.cores >= 1 and here.memory_bytes > 0


def test_connection_cap_follows_the_fd_limit() -> None:
    """With no flag the cap is what the open-file limit lets in (with headroom), capped."""
    assert connection_cap(0, 20_000, 4096) == 20_000 - 4096 - RESERVED_FDS
    assert connection_cap(0, 1 << 20, 4096) == MAX_DEFAULT_CONNECTIONS
    assert connection_cap(0, 20_000, 4096) >= 10_000


def test_a_given_cap_is_kept_within_the_fd_limit() -> None:
    """A cap the contributor gave stays, lowered only when the fd limit is smaller."""
    assert connection_cap(500, 20_000, 4096) == 500
    assert connection_cap(50_000, 20_000, 4096) == 20_000 - 4096 - RESERVED_FDS


def test_the_start_line_says_what_is_lent_and_whether_containers_are_kept() -> None:
    """Slots, warm containers, the per-job limits, and reuse on or off (--no-reuse)."""
    settings = AgentSettings(coordinator_url="http://127.0.0.1:1", slots=2, warm=2)
    line = lending_line(settings)
    assert line.startswith("lending 2 slots (jobs at once), 2 warm containers; per job 1 core,")
    assert line.endswith("a job's container is kept for its submitter's next job")
    assert lending_line(replace(settings, reuse=False)).endswith("a fresh container for every job")
