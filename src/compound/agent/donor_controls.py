"""What the donor changes on the running agent, and the loop applying their policies.

``DonorControls`` owns what the agent lends (through the outbox, which tells the
coordinator), freezes and thaws running jobs through the runner, gives back jobs frozen too
long, applies live limits and slots, keeps the donor's settings in ``donor.json``, and
answers control requests (``control``). Every few seconds it observes the machine and asks
the pure ``policy.decide`` what to lend.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

from compound.agent import donor as donor_file
from compound.agent.control import Request, answer_line, refusal_line
from compound.agent.donor import DonorSettings, SettingError, described, with_setting
from compound.agent.events import EventSink
from compound.agent.machine_load import CpuMeter, on_battery
from compound.agent.outbox import Outbox
from compound.agent.policy import Decision, IdleCpu, Observed, decide
from compound.agent.runners.base import Limits, MiB, Runner
from compound.agent.settings import AgentSettings
from compound.agent.worker import Worker
from compound.protocol import Lending
from compound.protocol.events import LendingChanged

DRAIN_REASON = "its donor asked it to drain"
_DRAIN_POLL_S = 0.5


class DonorControls:
    def __init__(
        self,
        settings: AgentSettings,
        worker: Worker,
        runner: Runner,
        outbox: Outbox,
        events: EventSink,
        stop: Callable[[], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        meter: CpuMeter | None = None,
    ) -> None:
        """``clock`` (monotonic seconds) and ``meter`` are the policies' view of time and of
        the machine's CPU use: tests give their own, to decide without waiting."""
        self._settings = settings
        self._worker = worker
        self._runner = runner
        self._outbox = outbox
        self._events = events
        self._stop = stop
        self.donor, warning = donor_file.load(settings.state_dir)
        if warning:
            events.say(warning, "warning")
        self.decision = Decision(Lending.ACTIVE)
        self.draining = False
        self._clock = clock
        self._idle = IdleCpu(self.idle_resume_s)
        self._meter = meter or CpuMeter(runner)
        self._cpu_percent: float | None = None
        self._frozen_since: dict[str, float] = {}
        # One change at a time: the donor's commands and the policy loop.
        self._lock = asyncio.Lock()
        self._drainer: asyncio.Task[None] | None = None
        # What the last LendingChanged event said: a new one goes out when this changes.
        self._told: LendingChanged | None = None

    @property
    def limits(self) -> Limits:
        base = self._settings.limits
        return replace(
            base,
            cpus=self.donor.cpus or base.cpus,
            memory_bytes=self.donor.memory_mib * MiB
            if self.donor.memory_mib
            else base.memory_bytes,
        )

    @property
    def slots(self) -> int:
        return self.donor.slots or self._settings.slots

    @property
    def idle_resume_s(self) -> float:
        """How long the machine stays calm before idle-only lending resumes: the donor's
        choice, else the agent's ``--idle-resume-s``."""
        if self.donor.idle_resume_s is None:
            return self._settings.idle_resume_s
        return self.donor.idle_resume_s

    async def start(self) -> None:
        """Apply the kept settings before the first connection, and decide once."""
        if self.donor.cpus or self.donor.memory_mib:
            await self._runner.set_limits(self.limits)
        if self.donor.slots:
            await self._apply_slots()
        await self.evaluate()

    async def run_policies(self) -> None:
        """Observe and decide every ``policy_interval_s``, for ever."""
        while True:
            await asyncio.sleep(self._settings.policy_interval_s)
            await self.evaluate()

    async def evaluate(self) -> None:
        async with self._lock:
            if self.draining:
                return
            # Read every time, so the next reading compares with a recent one.
            self._cpu_percent = await self._meter.non_job_percent()
            # The donor may have changed it since the last look: this decision uses it.
            self._idle.resume_after_s = self.idle_resume_s
            busy = self._idle.observe(self._cpu_percent, self.donor.idle_cpu_percent, self._clock())
            observed = Observed(
                local_time=datetime.now().time(),
                cpu_busy=busy,
                cpu_percent=self._cpu_percent,
                on_battery=on_battery(),
            )
            await self._apply(decide(self.donor, observed))
            self._hand_back_long_paused()
            self._tell()

    async def _apply(self, decision: Decision) -> None:
        if decision.lending is Lending.PAUSED:
            # Told first, so the coordinator sends nothing more while jobs freeze.
            self._outbox.lend(Lending.PAUSED, decision.reason)
            await self._freeze_running()
        else:
            await self._thaw_all()
            self._outbox.lend(Lending.ACTIVE, None)
        if decision != self.decision:
            self._events.say(
                f"paused: {decision.reason}" if decision.lending is Lending.PAUSED else "resumed"
            )
        self.decision = decision

    async def _freeze_running(self) -> None:
        # A job still preparing has no container yet: it is frozen at a later round.
        for job_id, execution in list(self._worker.executions.items()):
            if execution.task is None or execution.task.done() or execution.handback:
                continue
            if job_id not in self._frozen_since and await self._runner.pause_job(job_id):
                self._frozen_since[job_id] = self._clock()
        self._forget_ended()

    async def _thaw_all(self) -> None:
        for job_id in list(self._frozen_since):
            await self._runner.unpause_job(job_id)
        self._frozen_since.clear()

    def _forget_ended(self) -> None:
        frozen = self._runner.frozen_jobs()
        for job_id in [j for j in self._frozen_since if j not in frozen]:
            del self._frozen_since[job_id]

    def _hand_back_long_paused(self) -> None:
        """A job frozen longer than ``max_pause_s`` goes back to run elsewhere (the runner
        thaws it so it can be stopped)."""
        limit_s = self._settings.max_pause_s
        now = self._clock()
        for job_id, since in list(self._frozen_since.items()):
            if now - since > limit_s:
                self._events.say(f"job {job_id} paused over {limit_s:g} s: handing it back")
                self._worker.hand_back(job_id, f"its contributor paused it over {limit_s:g} s")
                del self._frozen_since[job_id]

    def _tell(self) -> None:
        """Emit the lending state (and the frozen jobs) when it differs from the last told."""
        event = LendingChanged(
            lending=Lending.DRAINING if self.draining else self.decision.lending,
            reason=DRAIN_REASON if self.draining else self.decision.reason,
            frozen_jobs=sorted(self._frozen_since),
        )
        if event != self._told:
            self._events.emit(event)
            self._told = event

    # ------------------------------------------------------------------ the donor's commands

    async def handle(self, request: Request) -> bytes:
        """The answer line to one control request."""
        if request.command == "status":
            return answer_line(self.sentence(), self.status())
        if self.draining:
            return refusal_line("the agent is draining: it takes no more commands but status")
        if request.command == "drain":
            return answer_line(await self._drain())
        if request.command == "set":
            try:
                return answer_line(await self._set(request.key, request.value))
            except SettingError as exc:
                return refusal_line(str(exc))
        paused = request.command == "pause"
        await self._keep(replace(self.donor, paused=paused))
        await self.evaluate()
        return answer_line(self.sentence())

    async def _set(self, key: str, value: str) -> str:
        limits_before = self.limits
        await self._keep(with_setting(self.donor, key, value))
        text = described(self.donor)[key]
        note = ""
        if key in ("cpus", "memory-mib") and self.limits != limits_before:
            updated = await self._runner.set_limits(self.limits)
            note = f"; the next jobs get it, {updated} running job(s) took it now"
        elif key == "slots":
            await self._apply_slots()
            note = f"; {self.slots} job(s) at once from the next job"
        elif key == "idle-resume-s":
            note = f"; idle-only lending resumes after {self.idle_resume_s:g} s of calm"
            if self.donor.idle_cpu_percent is None:
                note += " (idle-cpu-percent is off: no effect until it is set)"
        await self.evaluate()
        return f"{key} set to {text}{note}. {self.sentence()}"

    async def _apply_slots(self) -> None:
        await self._worker.slots.resize(self.slots)
        self._outbox.lend_slots(self.slots)

    async def _keep(self, donor: DonorSettings) -> None:
        self.donor = donor
        try:
            await asyncio.to_thread(donor_file.save, self._settings.state_dir, donor)
        except OSError as exc:
            self._events.say(f"cannot keep the settings in donor.json: {exc.strerror}", "warning")

    async def _drain(self) -> str:
        async with self._lock:
            self.draining = True
            self._outbox.lend(Lending.DRAINING, DRAIN_REASON)
            await self._thaw_all()
            self._tell()
        running = self._running_count()
        self._events.say(f"draining: {running} running job(s) finish, then the agent exits")
        self._drainer = asyncio.create_task(self._stop_once_drained(), name="drain")
        return f"Draining: no new job comes; {running} running job(s) finish, then the agent exits."

    async def _stop_once_drained(self) -> None:
        while self._running_count():
            await self._worker.drain(_DRAIN_POLL_S)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._outbox.empty.wait(), 10.0)
        self._stop()

    def _running_count(self) -> int:
        return sum(
            1 for e in self._worker.executions.values() if e.task is not None and not e.task.done()
        )

    def sentence(self) -> str:
        if self.draining:
            return "Draining: it finishes its running jobs, then exits."
        if self.decision.lending is Lending.PAUSED:
            return f"Paused ({self.decision.reason}): running jobs are frozen, no new job comes."
        return "Active: it takes jobs."

    def status(self) -> dict[str, Any]:
        frozen = self._runner.frozen_jobs()
        now = self._clock()
        settings = described(self.donor)
        for key, value in (
            ("cpus", f"{self.limits.cpus:g}"),
            ("memory-mib", str(self.limits.memory_bytes // MiB)),
            ("slots", str(self.slots)),
            ("idle-resume-s", f"{self.idle_resume_s:g}"),
        ):
            if settings[key] == "default":
                settings[key] = f"{value} (default)"
        return {
            "lending": Lending.DRAINING.value if self.draining else self.decision.lending.value,
            "reason": DRAIN_REASON if self.draining else self.decision.reason,
            "settings": settings,
            "slots": self.slots,
            "non_job_cpu_percent": self._cpu_percent,
            "jobs": [
                {
                    "job_id": job_id,
                    "frozen": job_id in frozen,
                    "frozen_for_s": (
                        round(now - self._frozen_since[job_id], 1)
                        if job_id in self._frozen_since
                        else None
                    ),
                }
                for job_id, e in self._worker.executions.items()
                if e.task is not None and not e.task.done()
            ],
        }
