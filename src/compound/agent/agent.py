"""The contributor agent: stays connected to the coordinator for ever and runs its jobs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
from dataclasses import replace

import psutil
import websockets
from websockets.asyncio.client import connect

from compound.agent.connection import CoordinatorConnection
from compound.agent.control import socket_path
from compound.agent.control_server import ControlServer, ControlSocketError
from compound.agent.default_share import lending_line
from compound.agent.deps import Packages
from compound.agent.deps_cache import DepsCache, GiB
from compound.agent.deps_uv import UvSettings
from compound.agent.donor_controls import DonorControls
from compound.agent.events import EventSink
from compound.agent.job_files import JobFiles
from compound.agent.mount_dir import mount_dir
from compound.agent.outbox import Outbox
from compound.agent.runners.base import Runner
from compound.agent.settings import AgentSettings, contributor_ws_url
from compound.agent.worker import Worker
from compound.coordinators import CoordinatorList
from compound.protocol import (
    CLOSE_FORBIDDEN,
    CLOSE_UNAUTHORIZED,
    MAX_MESSAGE_BYTES,
    Lending,
    ProtocolError,
)
from compound.protocol.events import Connecting, Disconnected, Starting, Stopped
from compound.tls import (
    TlsConfigError,
    certificate_problem,
    ssl_context_for,
    websocket_ssl_options,
)

log = logging.getLogger("compound.agent")

# Time given to the running job's container to stop, and to the last logs to go out,
# when the agent itself is asked to stop.
STOP_FLUSH_S = 5.0
PARENT_CHECK_INTERVAL_S = 1.0


def _packages(settings: AgentSettings) -> Packages:
    # Not under the state directory: a job would read its path (see mount_dir).
    cache = DepsCache(mount_dir(settings.state_dir) / "deps", int(settings.deps_cache_gib * GiB))
    uv = UvSettings(index_url=settings.index_url)
    return Packages(cache, uv, settings.max_deps_download_bytes)


class SandboxUnavailable(Exception):
    """The container engine or the job image cannot be used; the agent cannot start."""


class Agent:
    def __init__(self, settings: AgentSettings, node_id: str, runner: Runner) -> None:
        self.settings = settings
        self.node_id = node_id
        self._runner = runner
        self._events = EventSink(settings.json_events)
        self._outbox = Outbox()
        # Several coordinators (one database): on a lost one, the next (coordinators.py).
        self._coordinators = CoordinatorList(settings.coordinator_urls)
        self._files = JobFiles(settings)
        self._worker = Worker(
            runner,
            self._outbox,
            self._events,
            settings.max_output_bytes,
            _packages(settings) if settings.deps else None,
            self._files,
            settings.slots,
        )
        self._stopping = asyncio.Event()
        # A second stop request: hand running jobs back at once, without draining.
        self._hurry = asyncio.Event()
        self._ssl: ssl.SSLContext | None = None
        # What its donor changes live, through the control socket in the state directory.
        self.controls = DonorControls(
            settings, self._worker, runner, self._outbox, self._events, self.request_stop
        )
        self._control = ControlServer(socket_path(settings.state_dir), self.controls.handle)

    def request_stop(self) -> None:
        """Stop: take no new job, let running ones finish for ``drain_s``, then hand them
        back. A second request hands them back at once."""
        if self._stopping.is_set():
            self._hurry.set()
        self._stopping.set()

    async def run(self) -> None:
        """Prepare the sandbox, then connect and reconnect until asked to stop.

        Raises TlsConfigError when the CA file cannot be used, SandboxUnavailable when jobs
        cannot run here.
        """
        self._events.emit(
            Starting(
                node_id=self.node_id,
                name=self.settings.name,
                coordinator_url=self.settings.coordinator_url,
                slots=self.settings.slots,
                warm=self.settings.warm,
            )
        )
        # Built once: a wss coordinator is verified against the system store and --ca-file.
        try:
            # One context for every wss coordinator of the list (ws ones need none).
            secure = [url for url in self._coordinators.urls if _is_secure(url)]
            self._ssl = ssl_context_for(
                contributor_ws_url(secure[0]) if secure else self.settings.contributor_ws_url,
                self.settings.ca_file,
            )
        except TlsConfigError as exc:
            self._events.emit(Stopped(reason=str(exc)))
            raise
        psutil.cpu_percent(interval=None)  # the first reading is meaningless; prime it
        # First: another agent with this state directory (the same node id) makes this one
        # stop before the sandbox's preparation removes that agent's containers as orphans.
        try:
            await self._control.start()
        except ControlSocketError as exc:
            self._events.emit(Stopped(reason=str(exc)))
            raise
        try:
            await self._runner.prepare()
        except Exception as exc:
            await self._control.close()
            await self._runner.close()
            self._events.emit(Stopped(reason=f"sandbox unavailable: {exc}"))
            raise SandboxUnavailable(f"cannot run jobs on this machine: {exc}") from exc
        self._adopt_runtime(self._runner.runtime)
        await self.controls.start()
        policies = asyncio.create_task(self.controls.run_policies(), name="policies")
        connection_task = asyncio.create_task(self._connect_forever(), name="connect")
        watcher = None
        if self.settings.parent_pid is not None:
            watcher = asyncio.create_task(self._stop_when_orphaned(self.settings.parent_pid))
        await self._stopping.wait()
        if watcher is not None:
            watcher.cancel()
        policies.cancel()
        try:
            await self._shutdown(connection_task)
        finally:
            await self._control.close()

    def _adopt_runtime(self, runtime: str) -> None:
        """Report the runtime jobs really run under (hello, contributors list), and say it."""
        if self.settings.runtime == "auto":
            chosen = (
                "gVisor (runsc)" if runtime == "runsc" else f"{runtime} (gVisor not registered)"
            )
            self._events.say(f"runtime auto: jobs run under {chosen}")
        else:
            self._events.say(f"jobs run under {runtime}")
        self._events.say(lending_line(self.settings))
        self.settings = replace(self.settings, runtime=runtime)

    async def _stop_when_orphaned(self, parent_pid: int) -> None:
        # Once the parent is gone the kernel re-parents us; nothing else would tell us.
        while os.getppid() == parent_pid:
            await asyncio.sleep(PARENT_CHECK_INTERVAL_S)
        self._events.say("the desktop app is gone: stopping", "warning")
        self.request_stop()

    async def _connect_forever(self) -> None:
        while True:
            coordinator = self._coordinators.current
            url = contributor_ws_url(coordinator)
            self._events.emit(Connecting(url=url, attempt=self._coordinators.failures))
            reason = await self._connect_once(coordinator, url)
            if reason is None:
                reason = "the coordinator closed the connection"
            delay = self._coordinators.failed()
            self._events.emit(Disconnected(reason=reason, retry_in_s=round(delay, 2)))
            following = self._coordinators.current
            elsewhere = f" at {following}" if following != coordinator else ""
            self._events.say(
                f"disconnected from {coordinator} ({reason}); retrying{elsewhere} in {delay:.1f} s",
                "warning",
            )
            await asyncio.sleep(delay)

    async def _connect_once(self, coordinator: str, url: str) -> str | None:
        """One connection's life; None if it was established and then closed. A connection
        that got as far as the coordinator's welcome counts as a success of the list (the
        outbox resends what that coordinator had not acknowledged, on the next one)."""
        connection = None
        try:
            async with connect(
                url,
                max_size=MAX_MESSAGE_BYTES,
                open_timeout=10,
                ping_interval=20,
                ping_timeout=20,
                additional_headers=_auth_headers(self.settings.token),
                **websocket_ssl_options(self._ssl if _is_secure(url) else None),
            ) as websocket:
                self._files.use_coordinator(coordinator)
                connection = CoordinatorConnection(
                    websocket,
                    replace(self.settings, coordinator_url=coordinator),
                    self.node_id,
                    self._worker,
                    self._outbox,
                    self._events,
                )
                await connection.run()
        except websockets.ConnectionClosed as exc:
            return _closed_reason(exc)
        except ProtocolError as exc:
            log.warning("coordinator sent a bad message: %s", exc.reason)
            return f"protocol error: {exc.reason}"
        except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
            # A refused certificate is an OSError too, but retrying alone will not fix it:
            # say what will.
            problem = certificate_problem(exc)
            if problem is not None:
                return problem
            return f"cannot reach the coordinator: {exc or type(exc).__name__}"
        finally:
            if connection is not None and connection.welcomed:
                self._coordinators.succeeded()
        return None

    async def _shutdown(self, connection_task: asyncio.Task[None]) -> None:
        leaving = "its contributor is stopping"
        self.controls.draining = True  # no command or policy lends again from here
        self._outbox.lend(Lending.DRAINING, leaving)
        running = len(self._worker.executions)
        if running and not self._hurry.is_set():
            self._events.say(
                f"stopping: {running} running job(s) may finish within {self.settings.drain_s:g}"
                " s, then go back to the queue (stop again to hand them back now)"
            )
            await self._drain_unless_hurried()
        if self._worker.executions:
            self._events.say("stopping: handing running jobs back to the coordinator")
        await self._worker.hand_back_all(leaving, self.settings.grace_s + STOP_FLUSH_S)
        # Give the connection a moment to report the endings before it goes.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._outbox.empty.wait(), STOP_FLUSH_S)
        connection_task.cancel()
        await asyncio.gather(connection_task, return_exceptions=True)
        await self._runner.close()
        self._events.emit(Stopped(reason="asked to stop"))

    async def _drain_unless_hurried(self) -> None:
        drained = asyncio.create_task(self._worker.drain(self.settings.drain_s))
        hurried = asyncio.create_task(self._hurry.wait())
        await asyncio.wait({drained, hurried}, return_when=asyncio.FIRST_COMPLETED)
        for task in (drained, hurried):
            task.cancel()
        await asyncio.gather(drained, hurried, return_exceptions=True)


def _is_secure(url: str) -> bool:
    return url.startswith(("https://", "wss://"))


def _auth_headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _closed_reason(exc: websockets.ConnectionClosed) -> str:
    if exc.rcvd is None:
        return "connection closed (no close frame)"
    if exc.rcvd.code == CLOSE_UNAUTHORIZED:
        return "the coordinator needs a valid contributor token: set COMPOUND_TOKEN or --token"
    if exc.rcvd.code == CLOSE_FORBIDDEN:
        return f"the coordinator refused this agent: {exc.rcvd.reason or 'forbidden'}"
    return f"connection closed ({exc.rcvd.code})"


def install_stop_signals(agent: Agent) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, agent.request_stop)
