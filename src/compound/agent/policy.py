"""When the machine lends itself, decided by pure functions from the donor's settings and
what was observed (local time, the machine's own CPU use, the battery); no I/O here.

The order of the reasons is the order a donor reads them: their own pause first, then
their hours, the battery, and a machine busy with its own work.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import time

from compound.agent.donor import DonorSettings, OnBattery
from compound.protocol import Lending

PAUSED_BY_DONOR = "paused by its donor"
OUTSIDE_HOURS = "outside its hours"
ON_BATTERY = "on battery"


@dataclass(frozen=True)
class Observed:
    local_time: time
    # The machine's CPU use without the jobs' was over the donor's threshold lately
    # (``IdleCpu``); ``cpu_percent`` is its last reading, None when unknown (shown in the
    # status, never in the reason).
    cpu_busy: bool = False
    cpu_percent: float | None = None
    # On battery power now; a machine without a battery never is.
    on_battery: bool = False


@dataclass(frozen=True)
class Decision:
    lending: Lending
    reason: str | None = None


def decide(donor: DonorSettings, observed: Observed) -> Decision:
    """What the machine lends now: active, or paused and why."""
    if donor.paused:
        return Decision(Lending.PAUSED, PAUSED_BY_DONOR)
    if donor.hours is not None and not donor.hours.contains(observed.local_time):
        return Decision(Lending.PAUSED, f"{OUTSIDE_HOURS} ({donor.hours})")
    if donor.on_battery is OnBattery.PAUSE and observed.on_battery:
        return Decision(Lending.PAUSED, ON_BATTERY)
    if donor.idle_cpu_percent is not None and observed.cpu_busy:
        # Not the reading itself: the reason would change at every look, and each change
        # is a log line, an event and a message to the coordinator. The reading is in the
        # agent's status (``non_job_cpu_percent``).
        return Decision(
            Lending.PAUSED,
            f"its donor is using the machine (CPU over {donor.idle_cpu_percent:g}%)",
        )
    return Decision(Lending.ACTIVE)


class IdleCpu:
    """Hysteresis of the idle-only rule (BOINC's ``suspend_cpu_usage``): busy as soon as the
    machine's own CPU use is over the threshold, idle again once it has stayed at or under
    it for ``resume_after_s``. Fed readings and clock times; does no I/O."""

    def __init__(self, resume_after_s: float) -> None:
        self.resume_after_s = resume_after_s
        self._last_over_s: float | None = None

    def observe(self, percent: float | None, threshold: float | None, now_s: float) -> bool:
        """Take one reading (None: unknown, changes nothing); whether the machine is busy."""
        if threshold is None:
            self._last_over_s = None
            return False
        if percent is not None and percent > threshold:
            self._last_over_s = now_s
        return self._last_over_s is not None and now_s - self._last_over_s < self.resume_after_s
