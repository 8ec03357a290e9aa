"""Benchmark: where the CPU of part (d) goes, per job and per process, from /proc.

Part (d) keeps both cores busy, so its jobs/s is the machines' CPU divided by the CPU one
job costs across every process it touches. This runs the same burst as ``end_to_end.py``
(50 trivial jobs posted at once, each followed, one agent with ``--warm 4 --slots 4``) twice
after a warm-up and splits the CPU the machine spent meanwhile (``/proc/stat``) by process:
the coordinator, the agent, this process (the submitter and followers), dockerd, containerd,
what the init process reaped (the containers' shims, runc and the containers' own processes,
which exit during the burst), kernel threads, and the rest (anything else running):

    PYTHONPATH=src .venv/bin/python bench/burst_cpu.py [--jobs 50] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import end_to_end
from figures import Figure

TICKS_PER_S = os.sysconf("SC_CLK_TCK")
GROUPS = (
    "coordinator",
    "agent",
    "submitter (bench)",
    "dockerd",
    "containerd",
    "shims, runc, containers",
    "kernel threads",
    "other",
    "unattributed",
)
# /proc/PID/stat's flags: a kernel thread.
PF_KTHREAD = 0x00200000


@dataclass(frozen=True)
class Process:
    command: str
    ticks: int  # its own CPU and that of the children it reaped
    kernel: bool


def processes() -> dict[int, Process]:
    found: dict[int, Process] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            command = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue  # ended meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] == "Z":
            continue  # its CPU goes to the parent that reaps it: counted there
        ticks = sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
        kernel = bool(int(fields[6]) & PF_KTHREAD)
        found[int(entry)] = Process(command.decode(errors="replace"), ticks, kernel)
    return found


def machine_ticks() -> int:
    """Busy CPU ticks of the whole machine since boot (idle and iowait left out)."""
    values = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return sum(values) - values[3] - values[4]


def group_of(pid: int, process: Process, own: dict[int, str]) -> str:
    if pid in own:
        return own[pid]
    if process.kernel:
        return "kernel threads"
    command = process.command
    name = Path(command).name
    if pid == 1 or name.startswith("containerd-shim"):
        return "shims, runc, containers"
    if name in ("dockerd", "containerd"):
        return name
    return "other"


def split(
    before: dict[int, Process], after: dict[int, Process], own: dict[int, str], busy: int
) -> dict[str, int]:
    """CPU ticks spent between the two snapshots, by group; ``busy``: the machine's."""
    spent = dict.fromkeys(GROUPS, 0)
    for pid, process in after.items():
        earlier = before.get(pid)
        start = earlier.ticks if earlier is not None and earlier.command == process.command else 0
        spent[group_of(pid, process, own)] += process.ticks - start
    # Processes that started and ended unreaped by a parent seen here, interrupts, rounding.
    spent["unattributed"] = busy - sum(spent.values())
    return spent


def measure(jobs: int = end_to_end.BURST_JOBS, rounds: int = 2) -> list[Figure]:
    with (
        tempfile.TemporaryDirectory(prefix="compound-bench-cpu-") as workdir,
        end_to_end.Stack(Path(workdir)) as stack,
    ):
        totals, rates, by_group = _bursts(stack, jobs, rounds)
    parts = ", ".join(f"{group} {ms:.0f}" for group, ms in by_group.items())
    return [
        Figure("d", f"CPU per job, {jobs} at once (whole machine)", "ms", min(totals),
               target=None,
               note=f"informational; {rounds} bursts at {', '.join(f'{r:.1f}' for r in rates)} "
                    f"jobs/s; ms per job by process: {parts}"),
    ]  # fmt: skip


def _bursts(
    stack: end_to_end.Stack, jobs: int, rounds: int
) -> tuple[list[float], list[float], dict[str, float]]:
    """CPU ms per job of the machine per burst, jobs/s per burst, mean ms per job by group."""
    coordinator, agent = stack.coordinator, stack.agent
    assert coordinator is not None and coordinator.proc is not None
    assert agent is not None and agent.proc is not None
    own = {
        coordinator.proc.pid: "coordinator",
        agent.proc.pid: "agent",
        os.getpid(): "submitter (bench)",
    }
    asyncio.run(end_to_end.burst(coordinator, 8))  # warms the engine and the pool
    totals: list[float] = []
    rates: list[float] = []
    by_group = dict.fromkeys(GROUPS, 0.0)
    for _ in range(rounds):
        before, busy_before = processes(), machine_ticks()
        took = asyncio.run(end_to_end.burst(coordinator, jobs))
        time.sleep(0.5)  # the last containers' removal is part of their cost
        after, busy_after = processes(), machine_ticks()
        totals.append((busy_after - busy_before) * 1000 / TICKS_PER_S / jobs)
        rates.append(jobs / took)
        for group, ticks in split(before, after, own, busy_after - busy_before).items():
            by_group[group] += ticks * 1000 / TICKS_PER_S / jobs / rounds
    return totals, rates, by_group


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=end_to_end.BURST_JOBS)
    parser.add_argument("--rounds", type=int, default=2)
    options = parser.parse_args()
    for figure in measure(options.jobs, options.rounds):
        print(figure)
