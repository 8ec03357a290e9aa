"""A donor controls a running agent over its control socket: pause freezes jobs and stops
new ones, a long pause hands jobs back, drain finishes then exits, settings persist, and
the idle-only and hours policies pause it by themselves."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from compound.agent.control_client import ask
from support import Agent, Coordinator, run_cli, stream_text, wait_until

LEASE_TIMEOUT_S = 60.0
COUNTER = "import time\nfor i in range(100000):\n    print(i, flush=True)\n    time.sleep(0.1)\n"
FAST = ["--policy-interval-s", "0.2"]


@pytest.fixture
def patient(tmp_path: Path) -> Iterator[Coordinator]:
    """A coordinator whose leases outlast every test here."""
    server = Coordinator(
        data_dir=tmp_path / "patient", lease_timeout_s=LEASE_TIMEOUT_S, extra_args=[]
    ).start()
    yield server
    server.stop()


def ctl(agent: Agent, *args: str) -> subprocess.CompletedProcess[bytes]:
    return run_cli("agent", *args, "--state-dir", str(agent.state_dir), timeout_s=30)


def status(agent: Agent) -> dict[str, Any]:
    done = ctl(agent, "status", "--json")
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def counted(coordinator: Coordinator, job_id: str) -> int:
    """The last counter the job printed (-1 before any)."""
    lines = stream_text(coordinator.logs(job_id)).split()
    return int(lines[-1]) if lines else -1


def paused_in_docker(job_id: str) -> bool:
    names = subprocess.run(
        ["docker", "ps", "--filter", "status=paused", "--format", "{{.Names}}"],
        capture_output=True,
        text=True,
    ).stdout
    return job_id in names


@pytest.mark.timeout(120)
def test_pause_freezes_a_running_job_and_no_new_job_comes(
    patient: Coordinator, start_agent: Callable[..., Agent]
) -> None:
    """pause: the job's container is frozen (it prints nothing), the coordinator gives the
    paused agent no new job; resume: the job counts on and the queued job starts."""
    agent = start_agent(coordinator_url=patient.url, extra_args=["--slots", "2", *FAST])
    job_id = patient.submit(COUNTER, timeout_s=100)
    wait_until(lambda: counted(patient, job_id) >= 3, 60, "the job counting")
    paused = ctl(agent, "pause")
    assert paused.returncode == 0, paused.stderr
    assert b"Paused (paused by its donor)" in paused.stdout
    wait_until(lambda: paused_in_docker(job_id), 10, "the container paused")
    state = status(agent)
    assert state["lending"] == "paused" and state["reason"] == "paused by its donor"
    assert state["jobs"] == [
        {"job_id": job_id, "frozen": True, "frozen_for_s": state["jobs"][0]["frozen_for_s"]}
    ]
    second = patient.submit("print('second')")
    time.sleep(1.0)  # what was printed before the freeze reaches the coordinator
    frozen_at = counted(patient, job_id)
    time.sleep(1.5)
    assert counted(patient, job_id) == frozen_at, "the job ran while paused"
    assert patient.job(second)["status"] == "queued"
    resumed = ctl(agent, "resume")
    assert resumed.returncode == 0 and b"Active" in resumed.stdout
    wait_until(lambda: counted(patient, job_id) > frozen_at + 3, 30, "the job counting again")
    patient.wait_for_status(second, {"succeeded"}, timeout_s=60)
    run_cli("cancel", job_id, coordinator=patient)


@pytest.mark.timeout(120)
def test_a_job_paused_too_long_is_handed_back(
    patient: Coordinator, start_agent: Callable[..., Agent]
) -> None:
    """Past --max-pause-s the frozen job is thawed, stopped and handed back: queued again,
    never cancelled, and no container of it remains."""
    agent = start_agent(coordinator_url=patient.url, extra_args=["--max-pause-s", "1", *FAST])
    job_id = patient.submit(COUNTER, timeout_s=100)
    wait_until(lambda: counted(patient, job_id) >= 1, 60, "the job counting")
    assert ctl(agent, "pause").returncode == 0
    wait_until(lambda: patient.job(job_id)["status"] == "queued", 30, "the job handed back")
    notes = stream_text(patient.logs(job_id), "system")
    assert "its contributor paused it over 1 s" in notes and "cancel" not in notes
    assert status(agent)["jobs"] == []


@pytest.mark.timeout(120)
def test_drain_finishes_the_running_job_then_exits_0(
    patient: Coordinator, start_agent: Callable[..., Agent]
) -> None:
    """drain: the running job ends where it runs, nothing new is taken, the agent exits 0."""
    agent = start_agent(coordinator_url=patient.url)
    job_id = patient.submit(
        "import time\nprint('begun', flush=True)\ntime.sleep(3)\nprint('end')\n"
    )
    wait_until(lambda: patient.logs(job_id), 60, "the job's output")
    drained = ctl(agent, "drain")
    assert drained.returncode == 0 and b"Draining" in drained.stdout
    other = patient.submit("print('later')")
    assert agent.proc is not None and agent.proc.wait(timeout=60) == 0
    done = patient.job(job_id)
    assert done["status"] == "succeeded" and stream_text(patient.logs(job_id)) == "begun\nend\n"
    assert patient.job(other)["status"] == "queued"
    gone = ctl(agent, "status")
    assert gone.returncode == 3 and b"no agent is running" in gone.stderr


@pytest.mark.timeout(120)
def test_settings_persist_across_a_restart(
    patient: Coordinator, start_agent: Callable[..., Agent]
) -> None:
    """set is kept in donor.json and applies again after a restart; a bad value is refused
    with a sentence and changes nothing."""
    agent = start_agent(coordinator_url=patient.url)
    for key, value in [("slots", "2"), ("cpus", "0.5"), ("memory-mib", "256")]:
        done = ctl(agent, "set", key, value)
        assert done.returncode == 0, done.stderr
    refused = ctl(agent, "set", "hours", "9 to 5")
    assert refused.returncode == 1 and b"HH:MM-HH:MM" in refused.stderr
    agent.stop()
    again = start_agent(coordinator_url=patient.url, state_dir=agent.state_dir)
    state = status(again)
    assert state["slots"] == 2 and state["lending"] == "active"
    assert state["settings"]["cpus"] == "0.5" and state["settings"]["memory-mib"] == "256"
    assert state["settings"]["hours"] == "always"
    text = ctl(again, "status").stdout.decode()
    assert "Active: it takes jobs." in text and "slots: 2" in text


@pytest.mark.timeout(120)
def test_hours_that_exclude_now_pause_the_agent(
    patient: Coordinator, start_agent: Callable[..., Agent]
) -> None:
    """A window of hours that does not hold the present pauses the agent, with the reason;
    always lifts it."""
    agent = start_agent(coordinator_url=patient.url, extra_args=FAST)
    now = time.localtime()
    start = (now.tm_hour + 2) % 24
    window = f"{start:02d}:00-{(start + 1) % 24:02d}:00"
    assert ctl(agent, "set", "hours", window).returncode == 0
    state = status(agent)
    assert state["lending"] == "paused" and state["reason"] == f"outside its hours ({window})"
    job_id = patient.submit("print(1)")
    time.sleep(1.0)
    assert patient.job(job_id)["status"] == "queued"
    assert ctl(agent, "set", "hours", "always").returncode == 0
    patient.wait_for_status(job_id, {"succeeded"}, timeout_s=60)


# A hog on every core keeps the machine's own CPU use at about 100% (every core busy; the
# frozen job's share, subtracted, is nil), so at most 95% it is crossed whatever else runs;
# this far over the calm machine's busiest reading the test's own processes do not cross it.
# High, so that the resume (under it for --idle-resume-s) survives other work's bursts.
IDLE_MARGIN_PERCENT = 20.0
IDLE_THRESHOLD_RANGE = (90.0, 95.0)
HOG_S = 120.0


def idle_threshold(calm_within_s: float = 90.0) -> int:
    """An idle-cpu-percent for this machine now: over its busiest of three 1 s readings (the
    test's own coordinator, agent and job included) by IDLE_MARGIN_PERCENT, within
    IDLE_THRESHOLD_RANGE. Waits for a machine busy with other work to calm; skips only when
    it stays too busy for a resume to be observable at all."""
    import psutil

    low, high = IDLE_THRESHOLD_RANGE
    deadline = time.monotonic() + calm_within_s
    while True:
        busiest = max(psutil.cpu_percent(interval=1.0) for _ in range(3))
        if busiest + IDLE_MARGIN_PERCENT <= high:
            return int(max(low, busiest + IDLE_MARGIN_PERCENT))
        if time.monotonic() > deadline:
            pytest.skip(
                f"other work kept this machine's CPU at {busiest:.0f}% for {calm_within_s:g} s:"
                " no threshold lies between its use and a hog's, so idleness cannot be seen"
            )


@contextlib.contextmanager
def cpu_hog() -> Iterator[list[int]]:
    """One busy loop per core, outside any sandbox (each ends by itself after HOG_S);
    killed by PID on leaving. Yields their PIDs."""
    loop = f"import time\nend = time.monotonic() + {HOG_S}\nwhile time.monotonic() < end: pass\n"
    hogs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(os.cpu_count() or 1):
            hogs.append(subprocess.Popen([sys.executable, "-c", loop]))
        yield [hog.pid for hog in hogs]
    finally:
        for hog in hogs:
            hog.send_signal(signal.SIGKILL)
            hog.wait()


def lending_now(state_dir: Path) -> dict[str, Any]:
    """The agent's status over its control socket, as the CLI asks, without starting a
    Python process per look (whose start-up would count as the donor using the machine)."""
    answer = ask(state_dir, "status")
    assert answer["ok"], answer
    result: dict[str, Any] = answer["status"]
    return result


def is_active(state_dir: Path) -> bool:
    return lending_now(state_dir)["lending"] == "active"


@pytest.mark.timeout(180)
def test_idle_only_pauses_while_the_machine_is_busy(
    patient: Coordinator, start_agent: Callable[..., Agent]
) -> None:
    """idle-cpu-percent: a CPU hog outside the sandbox pauses the agent with the reason and
    freezes its job (it prints nothing); it resumes and the job counts on once the hog has
    stopped for --idle-resume-s."""
    policy = ["--policy-interval-s", "1", "--idle-resume-s", "2"]
    agent = start_agent(coordinator_url=patient.url, extra_args=policy)
    job_id = patient.submit(COUNTER, timeout_s=150)
    wait_until(lambda: counted(patient, job_id) >= 3, 60, "the job counting")
    threshold = idle_threshold()
    assert ctl(agent, "set", "idle-cpu-percent", str(threshold)).returncode == 0
    # The CLI's own start-up may have crossed it: lending again once a reading of the time
    # after it (at most two looks later) says the machine is idle.
    settled = time.monotonic() + 2.5
    wait_until(lambda: time.monotonic() > settled and is_active(agent.state_dir), 30, "idleness")
    with cpu_hog():
        state = wait_until(
            lambda: (s := lending_now(agent.state_dir))["lending"] == "paused" and s, 30, "a pause"
        )
        assert state["reason"] == f"its donor is using the machine (CPU over {threshold}%)"
        assert state["non_job_cpu_percent"] > threshold
        wait_until(lambda: paused_in_docker(job_id), 10, "the container paused")
        time.sleep(1.0)  # what was printed before the freeze reaches the coordinator
        frozen_at = counted(patient, job_id)
        time.sleep(1.5)
        assert counted(patient, job_id) == frozen_at, "the job ran while paused"
    wait_until(lambda: is_active(agent.state_dir), 60, "the resume")
    wait_until(lambda: counted(patient, job_id) > frozen_at + 3, 30, "the job counting again")
    shown = ctl(agent, "status").stdout.decode()
    assert f"idle-cpu-percent: {threshold}" in shown, shown
    run_cli("cancel", job_id, coordinator=patient)


@pytest.mark.timeout(60)
def test_hostile_control_clients_do_not_hurt_the_agent(
    start_agent: Callable[..., Agent],
) -> None:
    """Garbage, a huge line and a stalled client get refusals or are cut off; the socket is
    0600 and the agent still answers."""
    agent = start_agent()
    path = agent.state_dir / "control.sock"
    assert path.stat().st_mode & 0o777 == 0o600
    assert agent.state_dir.stat().st_mode & 0o777 == 0o700
    stalled = [_connect(path) for _ in range(3)]
    for stall in stalled:
        stall.sendall(b'{"command": ')
    for payload in (b"\x00\xff garbage\n", b"x" * 1_000_000 + b"\n", b"[[[[\n"):
        client = _connect(path)
        with contextlib.suppress(OSError):  # cut off mid-line: also fine
            client.sendall(payload)
        answer = _read_all(client)
        assert answer == b"" or json.loads(answer)["ok"] is False
        client.close()
    assert status(agent)["lending"] == "active"
    for stall in stalled:
        assert json.loads(_read_all(stall))["ok"] is False  # cut off after the read timeout
        stall.close()


def _connect(path: Path) -> socket.socket:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(15)
    if len(os.fsencode(path)) > 100:
        client.connect(f"/proc/self/fd/{os.open(path.parent, os.O_PATH)}/{path.name}")
    else:
        client.connect(str(path))
    return client


def _read_all(client: socket.socket) -> bytes:
    received = b""
    try:
        while chunk := client.recv(65536):
            received += chunk
    except OSError:
        pass
    return received.strip()
