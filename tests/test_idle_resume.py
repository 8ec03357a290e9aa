"""idle-resume-s set over the agent's real control socket (and with the real CLI) is the
delay the very next idle-only decision uses, is kept in donor.json, and junk is refused with
its sentence while the old value stays. The donor controls run in this process with the
test's clock and CPU readings, so the delays are decided without waiting for them; the
runner is a stand-in (no job runs here: Docker's part is tested in test_agent_controls)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from compound.agent.control import socket_path
from compound.agent.control_client import ask
from compound.agent.control_server import ControlServer, socket_address
from compound.agent.donor import DONOR_FILE
from compound.agent.donor_controls import DonorControls
from compound.agent.events import EventSink
from compound.agent.machine_load import CpuMeter
from compound.agent.outbox import Outbox
from compound.agent.settings import AgentSettings
from compound.agent.worker import Worker
from compound.protocol import Lending
from support import run_cli

SENTENCE = "idle-resume-s: seconds from 0 to 3600, or default"
BUSY = "its donor is using the machine (CPU over 50%)"


class IdleRunner:
    """A runner with no job: what the donor controls ask of one when nothing runs."""

    def frozen_jobs(self) -> set[str]:
        return set()

    async def pause_job(self, job_id: str) -> bool:
        return False

    async def unpause_job(self, job_id: str) -> bool:
        return False

    async def set_limits(self, limits: Any) -> int:
        return 0

    async def jobs_cpu_seconds(self) -> dict[str, float]:
        return {}


class Readings(CpuMeter):
    """The machine's own CPU use as the test says it is now (None: no reading yet)."""

    def __init__(self) -> None:
        super().__init__(IdleRunner())
        self.percent: float | None = None

    async def non_job_percent(self) -> float | None:
        return self.percent


class Clock:
    """Monotonic seconds that move only when the test moves them."""

    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


@dataclass
class Live:
    controls: DonorControls
    outbox: Outbox
    clock: Clock
    cpu: Readings
    state_dir: Path

    async def ask(self, command: str, key: str = "", value: str = "") -> dict[str, Any]:
        """The agent's answer over its control socket, as `compound agent` asks."""
        return await asyncio.to_thread(ask, self.state_dir, command, key, value)

    async def look(self, percent: float, after_s: float) -> Lending:
        """One look of the policy loop ``after_s`` after the last, reading ``percent``."""
        self.clock.now_s += after_s
        self.cpu.percent = percent
        await self.controls.evaluate()
        return self.controls.decision.lending

    async def shown(self) -> str:
        answer = await self.ask("status")
        value: str = answer["status"]["settings"]["idle-resume-s"]
        return value

    def kept(self) -> str:
        value: str = json.loads((self.state_dir / DONOR_FILE).read_text())["idle-resume-s"]
        return value


def donor_controls(state_dir: Path, clock: Clock, cpu: Readings) -> tuple[DonorControls, Outbox]:
    """The agent's donor controls (its --idle-resume-s left at 30 s), as agent.py builds them."""
    settings = AgentSettings(coordinator_url="ws://127.0.0.1:9", state_dir=state_dir)
    runner, outbox, events = IdleRunner(), Outbox(), EventSink(json=False)
    worker = Worker(runner, outbox, events, max_output_bytes=1024)
    controls = DonorControls(
        settings, worker, runner, outbox, events, lambda: None, clock=clock, meter=cpu
    )
    return controls, outbox


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    """Donor controls answering on a real control socket in a fresh state directory."""
    state_dir = tmp_path / "agent"
    clock, cpu = Clock(), Readings()
    controls, outbox = donor_controls(state_dir, clock, cpu)
    server = ControlServer(socket_path(state_dir), controls.handle)
    await server.start()
    await controls.start()
    yield Live(controls, outbox, clock, cpu, state_dir)
    await server.close()


@pytest.mark.timeout(30)
async def test_the_delay_set_over_the_socket_is_the_next_decisions(live: Live) -> None:
    """Paused for a busy machine, the agent waits the default 30 s of calm; set to 10 s while
    20 s calm, the set's own look lends again; set to 120 s, a new pause lasts exactly 120 s
    of calm; the coordinator is told each time, and a restart keeps it."""
    assert (await live.ask("set", "idle-cpu-percent", "50"))["ok"]
    assert await live.shown() == "30 (default)"
    assert await live.look(90, after_s=1) is Lending.PAUSED
    assert live.controls.decision.reason == BUSY
    assert await live.look(10, after_s=20) is Lending.PAUSED  # 20 s of calm < 30 s

    answer = await live.ask("set", "idle-resume-s", "10")
    assert answer["ok"], answer
    assert answer["message"].startswith("idle-resume-s set to 10; idle-only lending resumes")
    assert answer["message"].endswith("Active: it takes jobs.")
    assert live.outbox.lending is Lending.ACTIVE
    assert await live.shown() == "10"

    assert (await live.ask("set", "idle-resume-s", "120"))["ok"]
    assert await live.look(90, after_s=1) is Lending.PAUSED
    assert live.outbox.lending is Lending.PAUSED and live.outbox.lending_reason == BUSY
    assert await live.look(10, after_s=60) is Lending.PAUSED
    assert await live.look(10, after_s=59.5) is Lending.PAUSED
    assert await live.look(10, after_s=0.5) is Lending.ACTIVE  # 120 s of calm
    assert live.outbox.lending is Lending.ACTIVE
    assert live.kept() == "120"

    again, _ = donor_controls(live.state_dir, Clock(), Readings())
    assert again.idle_resume_s == 120.0


@pytest.mark.timeout(30)
async def test_junk_is_refused_with_the_sentence_and_the_old_value_stays(live: Live) -> None:
    """Negative, NaN, huge, text or not text at all: refused (the sentence, or the request's
    own), and the kept and used value is still the one set before."""
    assert (await live.ask("set", "idle-resume-s", "120"))["ok"]
    for junk in ("-1", "nan", "1e9", "3600.5", "soon", "30 s", "off"):
        answer = await live.ask("set", "idle-resume-s", junk)
        assert answer == {"ok": False, "message": SENTENCE}, junk
    with socket_address(socket_path(live.state_dir)) as address:
        reader, writer = await asyncio.open_unix_connection(address)
    writer.write(b'{"command": "set", "key": "idle-resume-s", "value": -5}\n')
    refused = json.loads(await reader.readline())
    writer.close()
    assert refused == {"ok": False, "message": "set needs a key and a value, both text"}
    assert await live.shown() == "120" and live.kept() == "120"
    assert live.controls.idle_resume_s == 120.0


@pytest.mark.timeout(60)
async def test_the_cli_sets_shows_and_refuses_it(live: Live) -> None:
    """`compound agent set idle-resume-s 120` answers and `status` lists it; a bad value exits
    1 with the sentence; default shows the agent's own 30 s."""

    async def cli(*args: str) -> tuple[int, str, str]:
        done = await asyncio.to_thread(
            run_cli, "agent", *args, "--state-dir", str(live.state_dir), timeout_s=30
        )
        return done.returncode, done.stdout.decode(), done.stderr.decode()

    code, out, err = await cli("set", "idle-resume-s", "120")
    assert code == 0, err
    assert "idle-resume-s set to 120; idle-only lending resumes after 120 s of calm" in out
    assert "idle-cpu-percent is off" in out
    code, out, err = await cli("set", "idle-resume-s", "-3")
    assert code == 1 and SENTENCE in err
    code, out, err = await cli("status")
    assert code == 0 and "  idle-resume-s: 120\n" in out, out
    assert (await live.ask("set", "idle-resume-s", "default"))["ok"]
    code, out, err = await cli("status")
    assert "  idle-resume-s: 30 (default)\n" in out, out
