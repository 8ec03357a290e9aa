"""The real processes of a fault run: one coordinator and a few agents, and their liveness.

``World`` owns them and applies steps to them (signals, restarts with the same or a new
identity, pause/resume/drain through `compound agent`); it also answers, for the watcher
thread, whether the coordinator is up and whether a contributor id has a live process right
now. The coordinator's data directory and each agent's state directory survive restarts; a
"new identity" is a fresh state directory, hence a fresh node id.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from faults import COORDINATOR, Step
from support import Agent, Coordinator, end_process, product_env, wait_until

AGENT_DRAIN_S = 1.0


def node_containers(node_id: str) -> list[str]:
    """Every container a node made (job and warm ones), running or not."""
    result = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=compound.node_id={node_id}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.split()


def agent_has_control() -> bool:
    """Whether this agent has `compound agent pause` (the control socket) at all."""
    probe = subprocess.run(
        [sys.executable, "-m", "compound", "agent", "pause", "--help"],
        capture_output=True,
        env=product_env(),
        timeout=60,
    )
    # `--help` is eager: an agent without the subcommand prints its own usage and exits 0.
    return probe.returncode == 0 and b"agent pause" in probe.stdout


@dataclass
class Slot:
    """One agent position: its current process and every identity it has had."""

    label: str
    base_dir: Path
    agent: Agent | None = None
    frozen: bool = False
    generation: int = 0
    # node id -> how its last process ended ("sigterm", "sigkill"; absent while it runs)
    identities: dict[str, str] = field(default_factory=dict)

    @property
    def state_dir(self) -> Path:
        return self.base_dir / f"{self.label}-{self.generation}"


class World:
    """The coordinator and agents of one run, and the facts the invariants need."""

    def __init__(self, work_dir: Path, agents: int, lease_timeout_s: float) -> None:
        self.coordinator = Coordinator(
            data_dir=work_dir / "coordinator", lease_timeout_s=lease_timeout_s
        )
        self.slots = {f"agent{i}": Slot(f"agent{i}", work_dir) for i in range(agents)}
        self.has_control = agent_has_control()
        self.violations: list[str] = []
        self._lock = threading.Lock()
        self._coordinator_up = False
        self._coordinator_epoch = 0  # bumped whenever the coordinator goes down or comes up
        self._coordinator_up_since = 0.0

    # --- facts for the watcher -------------------------------------------------------------

    def coordinator_state(self) -> tuple[bool, int, float]:
        """(up, epoch, monotonic time it came up)."""
        with self._lock:
            return self._coordinator_up, self._coordinator_epoch, self._coordinator_up_since

    def holder_live(self, node_id: str) -> bool:
        """Whether ``node_id`` is a running, unfrozen agent process now (unknown ids: yes)."""
        with self._lock:
            for slot in self.slots.values():
                if node_id in slot.identities:
                    return False  # an identity that ended and was not started again
                agent = slot.agent
                if agent is not None and _node_id(agent) == node_id:
                    alive = agent.proc is not None and agent.proc.poll() is None
                    return alive and not slot.frozen
            return True

    def _set_coordinator(self, up: bool) -> None:
        with self._lock:
            self._coordinator_up = up
            self._coordinator_epoch += 1
            if up:
                self._coordinator_up_since = time.monotonic()

    # --- steps -----------------------------------------------------------------------------

    def start(self) -> None:
        self.coordinator.start()
        self._set_coordinator(True)
        for slot in self.slots.values():
            self._start_agent(slot)

    def apply(self, step: Step) -> str:
        """Do ``step``; returns "done" or why it was skipped."""
        if step.action in ("pause", "resume", "drain"):
            if not self.has_control:
                return "skipped: no `compound agent pause`"
            slot = self.slots[step.target]
            if step.action == "resume" and _exited(slot):
                # A drained agent exits 0 once its jobs are done (an upgrade): coming back
                # is starting it again with the same identity, not resuming it.
                self._ended(slot, "drain")
                self._start_agent(slot)
                return "done (started again after its drain)"
            return self._control(slot, step.action)
        if step.target == COORDINATOR:
            self._coordinator_step(step.action)
        else:
            self._agent_step(self.slots[step.target], step.action)
        return "done"

    def _coordinator_step(self, action: str) -> None:
        coordinator = self.coordinator
        assert coordinator.proc is not None
        if action in ("sigkill", "sigterm", "sigstop"):
            self._set_coordinator(False)
            sig = {"sigkill": signal.SIGKILL, "sigterm": signal.SIGTERM}.get(action)
            coordinator.proc.send_signal(sig or signal.SIGSTOP)
            if sig is not None:
                coordinator.proc.wait(30)
        elif action == "sigcont":
            coordinator.proc.send_signal(signal.SIGCONT)
            self._set_coordinator(True)
        elif action == "start":
            coordinator.start()  # same port, same data directory
            self._set_coordinator(True)

    def _agent_step(self, slot: Slot, action: str) -> None:
        agent = slot.agent
        assert agent is not None and agent.proc is not None
        if action == "sigkill":
            agent.proc.kill()
            agent.proc.wait(30)
            self._ended(slot, "sigkill")
        elif action == "sigterm":
            agent.proc.send_signal(signal.SIGTERM)
        elif action == "sigstop":
            agent.proc.send_signal(signal.SIGSTOP)
            slot.frozen = True
        elif action == "sigcont":
            agent.proc.send_signal(signal.SIGCONT)
            slot.frozen = False
        elif action in ("start", "start_new"):
            if agent.proc.poll() is None:  # a SIGTERM's drain and hand-back, then exit
                agent.proc.wait(AGENT_DRAIN_S + 30)
                self._ended(slot, "sigterm")
            if action == "start_new":
                slot.generation += 1
            self._start_agent(slot)

    def _ended(self, slot: Slot, how: str) -> None:
        assert slot.agent is not None
        node_id = _node_id(slot.agent)
        with self._lock:
            slot.identities[node_id] = how
        if how in ("sigterm", "drain"):
            self.check_no_containers(node_id, f"{slot.label} after its {how}")

    def _start_agent(self, slot: Slot) -> None:
        agent = Agent(
            self.coordinator.url,
            slot.state_dir,
            name=slot.label,
            extra_args=["--drain-s", str(AGENT_DRAIN_S)],
        )
        agent.start(wait_connected=False)
        # Started means its stop signals are handled: a SIGTERM while Python still imports
        # ends the process at once, which is a kill, not the clean stop the invariants judge.
        agent.wait_event("starting", timeout_s=60)
        node_id = wait_until(lambda: _node_id(agent), 30, f"{slot.label}'s node id")
        with self._lock:
            slot.agent, slot.frozen = agent, False
            slot.identities.pop(node_id, None)

    def _control(self, slot: Slot, action: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "compound", "agent", action, "--state-dir", str(slot.state_dir)],
            capture_output=True,
            env=product_env(),
            timeout=30,
        )
        return "done" if result.returncode == 0 else f"failed: {result.stderr[-200:]!r}"

    # --- the end ---------------------------------------------------------------------------

    def check_no_containers(self, node_id: str, when: str) -> None:
        leftovers = wait_until_empty(node_id)
        if leftovers:
            described = subprocess.run(
                [
                    "docker",
                    "ps",
                    "-a",
                    "--format",
                    "{{.Names}} {{.Status}}",
                    "--filter",
                    f"label=compound.node_id={node_id}",
                ],
                capture_output=True,
                text=True,
            ).stdout.split("\n")
            self.violations.append(
                f"{len(leftovers)} container(s) of {node_id} remain ({when}): "
                + "; ".join(line for line in described if line)
            )

    def stop(self) -> list[str]:
        """SIGTERM every agent and check each left nothing behind; stop the coordinator.
        Returns the node ids abandoned after a SIGKILL (their containers are removed here:
        only that identity's restart would remove them)."""
        for slot in self.slots.values():
            if slot.agent is not None and slot.agent.proc is not None:
                slot.agent.proc.send_signal(signal.SIGCONT)
                # The drain, the hand-back and the containers' removal may take a while on a
                # loaded machine; an agent that had to be SIGKILLed is counted as such.
                end_process(slot.agent.proc, signal.SIGTERM, timeout_s=AGENT_DRAIN_S + 60)
                # -SIGTERM: the signal's default action ended it, no cleanup ran: a kill too.
                killed = slot.agent.proc.returncode in (-signal.SIGKILL, -signal.SIGTERM)
                self._ended(slot, "sigkill" if killed else "sigterm")
        if self.coordinator.proc is not None:
            self.coordinator.proc.send_signal(signal.SIGCONT)
            self.coordinator.stop()
        abandoned = []
        for slot in self.slots.values():
            for node_id, how in slot.identities.items():
                if how == "sigkill":
                    abandoned.append(node_id)
                    leftovers = node_containers(node_id)
                    if leftovers:
                        subprocess.run(["docker", "rm", "-f", *leftovers], capture_output=True)
        return abandoned


def wait_until_empty(node_id: str, timeout_s: float = 5.0) -> list[str]:
    """The node's containers once none remain, or those still there after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while (leftovers := node_containers(node_id)) and time.monotonic() < deadline:
        time.sleep(0.25)
    return leftovers


def _exited(slot: Slot) -> bool:
    return (
        slot.agent is not None
        and slot.agent.proc is not None
        and slot.agent.proc.poll() is not None
    )


def _node_id(agent: Agent) -> str:
    try:
        return agent.node_id
    except FileNotFoundError:
        return ""
