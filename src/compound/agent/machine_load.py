"""What the machine does besides our jobs: its CPU use without the jobs', and whether it
runs on battery (psutil, and the runner's count of the jobs' CPU time)."""

from __future__ import annotations

import psutil

from compound.agent.runners.base import Runner

# Linux and macOS name these fields; the others count as busy.
_NOT_BUSY = ("idle", "iowait")
# Containers whose CPU count is remembered: far more than run or are kept at once.
_JOBS_REMEMBERED = 1024


class CpuMeter:
    """The machine's CPU use without the jobs', in percent of all its cores, between two
    readings: busy time of the whole machine minus the CPU time the jobs' sandboxes used."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner
        self._last: tuple[float, float] | None = None  # (busy, total) seconds
        self._jobs_last: dict[str, float] = {}

    async def non_job_percent(self) -> float | None:
        """Since the last call; None on the first (nothing to compare with yet)."""
        busy, total = _machine_seconds()
        jobs = await self._runner.jobs_cpu_seconds()
        # A job seen for the first time counts from zero: its sandbox started since.
        jobs_delta = sum(
            max(0.0, used - self._jobs_last.get(key, 0.0)) for key, used in jobs.items()
        )
        last, self._last = self._last, (busy, total)
        # Kept, not replaced: a container that runs its submitter's next job (see reuse)
        # comes back with its count where it left it.
        self._jobs_last.update(jobs)
        while len(self._jobs_last) > _JOBS_REMEMBERED:
            del self._jobs_last[next(iter(self._jobs_last))]
        if last is None or total <= last[1]:
            return None
        share = (busy - last[0] - jobs_delta) / (total - last[1])
        return min(100.0, max(0.0, share * 100.0))


def _machine_seconds() -> tuple[float, float]:
    times = psutil.cpu_times()._asdict()
    # Linux counts guest time inside user time already.
    total = sum(v for k, v in times.items() if k not in ("guest", "guest_nice"))
    idle = sum(times.get(k, 0.0) for k in _NOT_BUSY)
    return total - idle, total


def on_battery() -> bool:
    """Whether the machine runs on its battery now; never true without one."""
    try:
        battery = psutil.sensors_battery()
    except (AttributeError, NotImplementedError, OSError):
        return False
    return battery is not None and battery.power_plugged is False
