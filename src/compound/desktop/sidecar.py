"""The agent sidecar: ``compound agent --events json`` as a child process of the desktop app.

The app learns the agent's state only from the typed events on its stdout (``parse_event``);
human output goes to a log file and is never parsed. Stopping is SIGTERM (the agent cancels
its job and removes the container), a grace period, then SIGKILL of the whole process group.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from compound.desktop.leftovers import remove_left_containers
from compound.desktop.settings import AppSettings
from compound.protocol.events import parse_event
from compound.tls import default_ca_file

log = logging.getLogger(__name__)

MAX_EVENTS_KEPT = 500
# A longer stdout line is cut; the rest no longer parses as an event and is dropped.
MAX_EVENT_LINE_CHARS = 1024 * 1024
STOP_GRACE_S = 30.0  # the agent drains (--drain-s), then hands its jobs back
KILL_WAIT_S = 5.0

EventDict = dict[str, Any]
Subscriber = Callable[[EventDict], None]


class AgentState(StrEnum):
    STOPPED = "stopped"
    RUNNING = "running"
    STOPPING = "stopping"


# The only legal lifecycle moves; ``_move`` enforces them.
_TRANSITIONS: dict[AgentState, frozenset[AgentState]] = {
    AgentState.STOPPED: frozenset({AgentState.RUNNING}),
    AgentState.RUNNING: frozenset({AgentState.STOPPING, AgentState.STOPPED}),
    AgentState.STOPPING: frozenset({AgentState.STOPPED}),
}


class SidecarError(RuntimeError):
    """The agent cannot be started; ``str(exc)`` is one sentence for the user."""


@dataclass(frozen=True)
class AgentStatus:
    running: bool
    state: AgentState
    pid: int | None
    exit_code: int | None
    coordinator_url: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "running": self.running,
            "state": self.state.value,
            "pid": self.pid,
            "exit_code": self.exit_code,
            "coordinator_url": self.coordinator_url,
        }


def agent_command(settings: AppSettings, state_dir: Path) -> list[str]:
    """The argv that starts an agent reporting typed events on stdout."""
    argv = [sys.executable, "-m", "compound", "agent"]
    argv += ["--coordinator", settings.coordinator_url, "--events", "json"]
    argv += ["--state-dir", str(state_dir)]
    # If the app dies without stopping it (SIGKILL, crash), the agent stops on its own.
    argv += ["--parent-pid", str(os.getpid())]
    if settings.agent_image:
        argv += ["--image", settings.agent_image]
    if settings.agent_runtime:
        argv += ["--runtime", settings.agent_runtime]
    if settings.agent_name:
        argv += ["--name", settings.agent_name]
    if settings.agent_warm is not None:
        argv += ["--warm", str(settings.agent_warm)]
    # The agent would read COMPOUND_CA_FILE itself; passing it keeps the trust visible in
    # its command line.
    ca_file = default_ca_file()
    if ca_file:
        argv += ["--ca-file", ca_file]
    return argv


def agent_env(settings: AppSettings) -> dict[str, str]:
    """The agent's environment: the stored token travels here, never on its command line."""
    env = dict(os.environ)
    token = settings.token()
    if token:
        env["COMPOUND_TOKEN"] = token
    return env


class AgentSidecar:
    """Starts, watches and stops one agent process; thread-safe, no asyncio.

    Events are kept (the last 500) and pushed to subscribers from the reader thread;
    subscribers must not block (the server hands them to its event loop).
    """

    def __init__(self, state_dir: Path, log_path: Path) -> None:
        self._state_dir = state_dir
        self._log_path = log_path
        self._lock = threading.Lock()
        self._state = AgentState.STOPPED
        self._proc: subprocess.Popen[str] | None = None
        self._exit_code: int | None = None
        self._coordinator_url: str | None = None
        self._events: deque[EventDict] = deque(maxlen=MAX_EVENTS_KEPT)
        # The latest event of each state-bearing type, kept past the 500-event window so
        # a page that joins late still learns the node id, the connection and the job.
        self._latest: dict[str, EventDict] = {}
        self._subscribers: list[Subscriber] = []
        self._exited = threading.Event()
        self._exited.set()

    @property
    def state_dir(self) -> Path:
        """The agent's state directory (its control socket is there)."""
        return self._state_dir

    # -- lifecycle ---------------------------------------------------------------------
    def _move(self, new: AgentState) -> None:
        if new not in _TRANSITIONS[self._state]:
            raise SidecarError(f"The agent cannot go from {self._state.value} to {new.value}.")
        self._state = new

    def start(self, settings: AppSettings) -> AgentStatus:
        """Start the agent unless it is already running; returns the new status."""
        with self._lock:
            if self._state is not AgentState.STOPPED:
                return self._status_locked()
            proc = self._spawn(agent_command(settings, self._state_dir), agent_env(settings))
            self._move(AgentState.RUNNING)
            self._proc, self._exit_code = proc, None
            self._coordinator_url = settings.coordinator_url
            self._exited.clear()
        threading.Thread(target=self._read, args=(proc,), name="agent-events", daemon=True).start()
        return self.status()

    def _spawn(self, argv: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
        self._state_dir.mkdir(parents=True, exist_ok=True)
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._log_path.open("ab") as stderr_file:
                return subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=stderr_file,
                    env=env,
                    text=True,
                    encoding="utf-8",
                    errors="replace",
                    # Its own process group: a terminal's Ctrl-C reaches the app only, and
                    # the app stops the agent gracefully; SIGKILL can take the whole group.
                    start_new_session=True,
                )
        except OSError as exc:
            raise SidecarError(f"The agent could not be started: {exc.strerror}.") from exc

    def stop(self, grace_s: float = STOP_GRACE_S) -> AgentStatus:
        """SIGTERM, wait up to ``grace_s``, then SIGKILL the group; returns when it is gone."""
        with self._lock:
            proc = self._proc if self._state is AgentState.RUNNING else None
            stopping_elsewhere = self._state is AgentState.STOPPING
            if proc is not None:
                self._move(AgentState.STOPPING)
        if proc is not None:
            killed = _terminate(proc, grace_s)
            self._exited.wait(KILL_WAIT_S)
            if killed:
                remove_left_containers(self._state_dir)
        elif stopping_elsewhere:
            self._exited.wait(grace_s + 2 * KILL_WAIT_S)
        return self.status()

    def wait_exited(self, timeout_s: float) -> bool:
        """True once the agent process has exited (or was never started)."""
        return self._exited.wait(timeout_s)

    # -- events --------------------------------------------------------------------------
    def _read(self, proc: subprocess.Popen[str]) -> None:
        stdout: IO[str] | None = proc.stdout
        if stdout is not None:
            with stdout:
                for line in iter(lambda: stdout.readline(MAX_EVENT_LINE_CHARS), ""):
                    self._handle_line(line)
        code = proc.wait()
        with self._lock:
            self._move(AgentState.STOPPED)
            self._exit_code = code
        self._publish({"type": "agent_exited", "code": code})
        self._exited.set()

    def _handle_line(self, line: str) -> None:
        event = parse_event(line)
        if event is None:
            log.debug("agent stdout line is not an event: %.200s", line)
            return
        self._publish(event.model_dump(mode="json"))

    def _publish(self, event: EventDict) -> None:
        # Events carry no clock; when the app received one lets a page that joins later
        # (replay) still show how long a job has been running.
        event = {**event, "received_at": time.time()}
        with self._lock:
            self._events.append(event)
            if event.get("type") != "log":
                self._latest[str(event.get("type"))] = event
            subscribers = list(self._subscribers)
        for deliver in subscribers:
            try:
                deliver(event)
            except Exception as exc:  # a broken subscriber must not stop the reader
                log.warning("dropped an agent event for a subscriber: %s", exc)

    def subscribe(self, deliver: Subscriber) -> list[EventDict]:
        """Register ``deliver`` and return the events to replay, atomically: no gap."""
        with self._lock:
            self._subscribers.append(deliver)
            return self._replay_locked()

    def _replay_locked(self) -> list[EventDict]:
        """Latest state events that fell out of the window (oldest first), then the window."""
        kept = {id(event) for event in self._events}
        older = [event for event in self._latest.values() if id(event) not in kept]
        older.sort(key=lambda event: float(event.get("received_at", 0.0)))
        return older + list(self._events)

    def unsubscribe(self, deliver: Subscriber) -> None:
        with self._lock:
            if deliver in self._subscribers:
                self._subscribers.remove(deliver)

    # -- status --------------------------------------------------------------------------
    def status(self) -> AgentStatus:
        with self._lock:
            return self._status_locked()

    def _status_locked(self) -> AgentStatus:
        running = self._state is not AgentState.STOPPED
        pid = self._proc.pid if self._proc is not None and running else None
        return AgentStatus(running, self._state, pid, self._exit_code, self._coordinator_url)


def _terminate(proc: subprocess.Popen[str], grace_s: float) -> bool:
    """SIGTERM the agent, then SIGKILL its process group if it outlives ``grace_s``.

    Returns True when it had to be killed (so it could not clean up after itself).
    """
    try:
        proc.send_signal(signal.SIGTERM)
    except ProcessLookupError:
        return False
    killed = False
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        log.warning("agent pid %s ignored SIGTERM for %.0f s; killing its group", proc.pid, grace_s)
        _kill_group(proc.pid)
        proc.wait(timeout=KILL_WAIT_S)
        killed = True
    # Anything the agent left in its group (a helper it spawned) goes with it.
    _kill_group(proc.pid)
    return killed


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
