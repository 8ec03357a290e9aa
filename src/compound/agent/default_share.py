"""What this machine can lend by default: how many jobs at once, how many warm containers.

A contributor who passes no flag gets the speed the machine allows: one slot per job's
worth of CPU and memory (the per-job limits), at least one, and as many warm containers
as slots (each is one job's container started ahead, so every slot's next job starts at
once). ``--slots`` and ``--warm`` still say otherwise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from compound.agent.runners.base import Limits
from compound.agent.settings import MAX_WARM, AgentSettings
from compound.protocol import MAX_SLOTS


@dataclass(frozen=True)
class Machine:
    """What the machine has: usable cores and physical memory."""

    cores: int
    memory_bytes: int

    @classmethod
    def here(cls) -> Machine:
        """This machine, as this process sees it (its CPU affinity, all of its memory)."""
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cores = os.cpu_count() or 1
        try:
            memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            memory = 0
        return cls(cores=max(1, cores), memory_bytes=max(0, memory))


@dataclass(frozen=True)
class Lending:
    """Jobs at once and containers started ahead of demand."""

    slots: int
    warm: int


def default_lending(machine: Machine, limits: Limits) -> Lending:
    """``slots = max(1, min(cores // cpus, memory // per-job memory))``, ``warm = slots``
    (both within their caps). Unknown memory (0) limits by cores alone."""
    by_cpu = int(machine.cores // limits.cpus) if limits.cpus > 0 else machine.cores
    by_memory = machine.memory_bytes // limits.memory_bytes if machine.memory_bytes else by_cpu
    slots = max(1, min(by_cpu, by_memory, MAX_SLOTS))
    return Lending(slots=slots, warm=min(slots, MAX_WARM))


def choose_lending(
    slots: int | None, warm: int | None, limits: Limits, machine: Machine | None = None
) -> Lending:
    """The machine's defaults where the contributor said nothing (None)."""
    default = default_lending(machine or Machine.here(), limits)
    return Lending(
        slots=default.slots if slots is None else slots,
        warm=default.warm if warm is None else warm,
    )


def lending_line(settings: AgentSettings) -> str:
    """The agent's start line about what it lends, e.g. ``lending 2 slots, 2 warm ...``."""
    limits = settings.limits
    return (
        f"lending {settings.slots} slot{'s' if settings.slots != 1 else ''} (jobs at once),"
        f" {settings.warm} warm container{'s' if settings.warm != 1 else ''};"
        f" per job {limits.cpus:g} core{'s' if limits.cpus != 1 else ''},"
        f" {limits.memory_bytes // (1024 * 1024)} MiB;"
        + (
            " a job's container is kept for its submitter's next job"
            if settings.reuse
            else " a fresh container for every job"
        )
    )
