"""Run each job in a fresh, locked-down Docker container (runc, or gVisor's runsc).

The container has no network, no capabilities, an unprivileged user, bounded memory, CPU,
processes, open files and file size, a read-only root and two size-bounded tmpfs mounts
(``/tmp``, the job's home and working directory, and ``/job``, its script). The script
travels through the container's stdin to a launcher that writes it into ``/job`` and execs
it; no host path is ever mounted. All streams are attached before the start, so the first
byte of output is never missed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiodocker
import aiohttp
from aiodocker.containers import DockerContainer
from aiodocker.exceptions import DockerError

from compound.agent.docker_engine import EngineError, check_engine, connect, describe, resolve_url
from compound.agent.runners.base import Limits, MiB, OutputSink, RunResult, RunSpec
from compound.agent.runners.docker_outputs import OUTPUTS_TAR_PREFIX, OutputsReceiver
from compound.agent.runners.docker_spec import (
    JOB_LABEL,
    MANAGED_LABEL,
    NODE_LABEL,
    DockerRunnerSettings,
    Runtime,
    choose_runtime,
    container_config,
    files_control,
    job_payload,
)
from compound.agent.runners.docker_stream import Attachment
from compound.agent.runners.sandbox_env import refused_variable
from compound.protocol import JobStatus

# How long close() waits for finished jobs' containers to be removed.
REMOVAL_WAIT_S = 30.0
LOST_ENGINE = "lost the connection to the Docker engine while running the job"
# Once the job is gone and its outputs are arriving, how long they may take past the grace.
OUTPUTS_WAIT_S = 30.0
# The engine went away mid-run (restart, crash). Not all OSError: the sink may raise those.
_TRANSPORT_ERRORS = (aiohttp.ClientError, ConnectionError)

__all__ = [
    "JOB_LABEL",
    "MANAGED_LABEL",
    "NODE_LABEL",
    "DockerRunner",
    "DockerRunnerSettings",
    "container_config",
]


class DockerRunner:
    """Runs jobs through the local Docker engine; one container per job, always removed."""

    def __init__(self, settings: DockerRunnerSettings) -> None:
        self.settings = settings
        self._docker: aiodocker.Docker | None = None
        self._runtime: Runtime | None = None
        self._removals: set[asyncio.Task[None]] = set()

    @property
    def runtime(self) -> str:
        """The runtime jobs run under: the chosen one once known, else the setting."""
        return self._runtime or self.settings.runtime

    async def _resolve_runtime(self, docker: aiodocker.Docker) -> Runtime:
        if self._runtime is None:
            info = await docker.system.info()
            self._runtime = choose_runtime(self.settings.runtime, info.get("Runtimes") or {})
        return self._runtime

    def _client(self) -> aiodocker.Docker:
        if self._docker is None:
            self._docker = connect(self.settings.docker_url)
        return self._docker

    async def prepare(self) -> None:
        """Check engine, runtime and image; remove containers a crashed agent left behind.

        Raises EngineError with one sentence saying what to do when something is missing.
        """
        docker = self._client()
        await check_engine(docker)
        try:
            await self._resolve_runtime(docker)
            await self._check_image(docker)
            await self.remove_orphans()
            _prepare_outputs_dir(self.settings.outputs_dir)
        except DockerError as exc:
            raise EngineError(describe(exc)) from exc

    async def _check_image(self, docker: aiodocker.Docker) -> None:
        try:
            await docker.images.inspect(self.settings.image)
        except DockerError as exc:
            if exc.status == 404:
                raise EngineError(self._missing_image()) from exc
            raise

    def _missing_image(self) -> str:
        return f"the image {self.settings.image} is missing: run `compound image ensure`"

    async def remove_orphans(self) -> int:
        """Remove this node's managed containers (none run outside ``run()``); how many."""
        labels = [f"{MANAGED_LABEL}=1", f"{NODE_LABEL}={self.settings.node_id}"]
        containers = await self._client().containers.list(all=True, filters={"label": labels})
        for container in containers:
            await _remove(container)
        return len(containers)

    async def run(self, spec: RunSpec, on_output: OutputSink, cancel: asyncio.Event) -> RunResult:
        if cancel.is_set():
            # Cancelled while queued here: nothing was started, so there is no exit code.
            return RunResult(JobStatus.CANCELLED, None)
        refusal = refused_variable(spec.env)
        if refusal is not None:
            return _engine_failure(refusal)
        inputs_bytes = _inputs_bytes(spec.inputs_tar)
        if inputs_bytes is None:
            return _engine_failure("the job's input files are missing on this machine")
        docker = self._client()
        try:
            runtime = await self._resolve_runtime(docker)
            container = await docker.containers.create(
                container_config(spec, self.settings, runtime, inputs_bytes)
            )
        except DockerError as exc:
            missing = exc.status == 404
            return _engine_failure(self._missing_image() if missing else describe(exc))
        except EngineError as exc:
            return _engine_failure(str(exc))
        except _TRANSPORT_ERRORS:
            return _engine_failure(LOST_ENGINE)
        try:
            result = await self._run_described(container, spec, inputs_bytes, on_output, cancel)
        except BaseException:
            # Shielded: a cancelled run() still removes its container before re-raising.
            await asyncio.shield(_remove(container))
            raise
        # Removal (hundreds of ms, seconds on a busy engine) is off the path that reports
        # the result; close() and removals_done() wait for it.
        self._remove_in_background(container)
        return result

    async def _run_described(
        self,
        container: DockerContainer,
        spec: RunSpec,
        inputs_bytes: int,
        on_output: OutputSink,
        cancel: asyncio.Event,
    ) -> RunResult:
        """Run the created container; engine failures become results with a reason."""
        outputs = OutputsReceiver(self.settings, on_output)
        try:
            result = await self._run_container(container, spec, inputs_bytes, outputs, cancel)
        except (DockerError, EngineError, *_TRANSPORT_ERRORS) as exc:
            result = _engine_failure(_engine_sentence(exc))
        except BaseException:
            outputs.discard()
            raise
        return outputs.result(result)

    def _remove_in_background(self, container: DockerContainer) -> None:
        task = asyncio.create_task(_remove(container), name=f"remove-{container.id[:12]}")
        self._removals.add(task)
        task.add_done_callback(self._removals.discard)

    async def removals_done(self) -> None:
        """Wait until the container of every finished run is removed."""
        while self._removals:
            await asyncio.gather(*list(self._removals), return_exceptions=True)

    async def _run_container(
        self,
        container: DockerContainer,
        spec: RunSpec,
        inputs_bytes: int,
        outputs: OutputsReceiver,
        cancel: asyncio.Event,
    ) -> RunResult:
        url = resolve_url(self.settings.docker_url)
        api_version = self._client().api_version
        attachment = await Attachment.open(url, api_version, container.id)
        try:
            await container.start()
            pump = asyncio.create_task(attachment.pump(outputs))
            # Beside the pump, not before it: a container that dies without reading its stdin
            # must not hold up the supervision (timeout, cancel) of the job.
            feed = asyncio.create_task(
                attachment.send_stdin_file(
                    _stdin_head(spec, inputs_bytes, outputs.marker, self.settings),
                    spec.inputs_tar,
                )
            )
            try:
                stopped_as = await self._supervise(
                    container, pump, spec.timeout_s, cancel, outputs.outputs_started
                )
            finally:
                await _finish(feed)
                await _finish(pump)
            await outputs.end_of_output()
            state = await _final_state(container)
        finally:
            await attachment.close()
        return _result(stopped_as, state, spec.timeout_s, self.settings.limits)

    async def _supervise(
        self,
        container: DockerContainer,
        pump: asyncio.Task[None],
        timeout_s: float | None,
        cancel: asyncio.Event,
        outputs_started: Callable[[], bool],
    ) -> JobStatus | None:
        """Wait for the output to end; on cancel or timeout stop the job and say which."""
        cancelled = asyncio.create_task(cancel.wait())
        try:
            done, _ = await asyncio.wait(
                {pump, cancelled}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            cancelled.cancel()
        if pump in done:
            pump.result()
            return None
        await self._stop(container, pump, outputs_started)
        return JobStatus.CANCELLED if cancelled in done else JobStatus.TIMED_OUT

    async def _stop(
        self,
        container: DockerContainer,
        pump: asyncio.Task[None],
        outputs_started: Callable[[], bool],
    ) -> None:
        """SIGTERM, up to ``grace_s`` for the script to exit, then SIGKILL.

        The launcher kills the job before the grace is over; outputs on their way by then
        get up to ``OUTPUTS_WAIT_S`` more.
        """
        await _signal(container, "SIGTERM")
        done, _ = await asyncio.wait({pump}, timeout=self.settings.grace_s)
        if not done and outputs_started():
            done, _ = await asyncio.wait({pump}, timeout=OUTPUTS_WAIT_S)
        if not done:
            await _signal(container, "SIGKILL")
        # The engine closes the attach stream once the container is gone: all output is in.
        await pump

    async def close(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.removals_done(), REMOVAL_WAIT_S)
        if self._docker is not None:
            await self._docker.close()
            self._docker = None


@dataclass(frozen=True)
class _FinalState:
    exit_code: int | None
    oom_killed: bool


async def _final_state(container: DockerContainer) -> _FinalState:
    status = await container.wait()
    details = await container.show()
    code = status.get("StatusCode")
    return _FinalState(
        exit_code=code if isinstance(code, int) else None,
        oom_killed=bool(details.get("State", {}).get("OOMKilled")),
    )


def _result(
    stopped_as: JobStatus | None, state: _FinalState, timeout_s: float | None, limits: Limits
) -> RunResult:
    if stopped_as is JobStatus.TIMED_OUT:
        return RunResult(stopped_as, state.exit_code, f"timed out after {timeout_s:g} s")
    if stopped_as is JobStatus.CANCELLED:
        return RunResult(stopped_as, state.exit_code)
    if state.exit_code == 0:
        return RunResult(JobStatus.SUCCEEDED, 0)
    error = None
    if state.oom_killed:
        error = f"ran out of memory (limit {limits.memory_bytes // MiB} MiB)"
    return RunResult(JobStatus.FAILED, state.exit_code, error)


def _prepare_outputs_dir(outputs_dir: Path | None) -> None:
    """Create the outputs tars' directory; remove tars a crashed agent left there."""
    if outputs_dir is None:
        return
    try:
        outputs_dir.mkdir(parents=True, exist_ok=True)
        for stale in outputs_dir.glob(f"{OUTPUTS_TAR_PREFIX}*.tar"):
            stale.unlink(missing_ok=True)
    except OSError as exc:
        raise EngineError(f"cannot use {outputs_dir} for job outputs: {exc.strerror}") from exc


def _inputs_bytes(inputs_tar: Path | None) -> int | None:
    """The size of the inputs tar (0 without one), or None when it is not there."""
    if inputs_tar is None:
        return 0
    try:
        return inputs_tar.stat().st_size
    except OSError:
        return None


def _stdin_head(
    spec: RunSpec, inputs_bytes: int, marker: bytes, settings: DockerRunnerSettings
) -> bytes:
    """What goes to the launcher's stdin before the inputs tar."""
    return job_payload(spec.script) + files_control(marker, inputs_bytes, settings)


def _engine_sentence(exc: BaseException) -> str:
    if isinstance(exc, DockerError):
        return describe(exc)
    if isinstance(exc, EngineError):
        return str(exc)
    return LOST_ENGINE


def _engine_failure(sentence: str) -> RunResult:
    return RunResult(JobStatus.FAILED, None, sentence)


async def _signal(container: DockerContainer, signal: str) -> None:
    # 409: the container already ended between our decision and the signal; that is fine.
    with contextlib.suppress(DockerError):
        await container.kill(signal=signal)


async def _finish(task: asyncio.Task[None]) -> None:
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _remove(container: DockerContainer) -> None:
    # 404: already gone. Anything else is logged by the engine; the next prepare() retries.
    with contextlib.suppress(DockerError, *_TRANSPORT_ERRORS):
        await container.delete(force=True)
