"""Run each job in a fresh, locked-down Docker container (runc, or gVisor's runsc).

The container has no network, no capabilities, an unprivileged user, bounded memory, CPU,
processes, open files and file size, a read-only root and two size-bounded tmpfs mounts
(``/tmp``, the job's home, and ``/job``, its working directory with its script, input files
and ``outputs/``). The job (script, arguments, environment, input files) travels through the
container's stdin to a launcher that writes it into ``/job`` and runs it; when the job ends,
the launcher sends what it left in ``outputs/`` after the job's output (see
outputs) with the job's exit code: the result goes back then, while the container's
end and removal happen in the background. All streams are attached before the start, so the
first byte of output is never missed. Containers are started ahead of demand by a
``WarmPool``; one whose job ended by itself may be kept for the next job of the same
submitter (``ReuseStash``), else it is removed after its job.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiodocker
from aiodocker.containers import DockerContainer
from aiodocker.exceptions import DockerError

from compound.agent.runners.base import Limits, MiB, OutputSink, RunResult, RunSpec
from compound.agent.runners.docker import controls
from compound.agent.runners.docker.engine import EngineError, check_engine, connect, describe
from compound.agent.runners.docker.env import refused_variable
from compound.agent.runners.docker.orphans import remove_orphans
from compound.agent.runners.docker.outputs import OUTPUTS_TAR_PREFIX, OutputsReceiver
from compound.agent.runners.docker.payload import SITECUSTOMIZE, PayloadTooBig
from compound.agent.runners.docker.reuse import ReuseStash
from compound.agent.runners.docker.runtime import Chosen, choose_runtime
from compound.agent.runners.docker.sandbox import (
    SIGKILL_EXIT,
    TRANSPORT_ERRORS,
    FinalState,
    Sandbox,
    claimed,
    close_and_remove,
    final_state,
    remove,
    remove_once_ended,
    rename,
    start_sandbox,
    watch_kept,
)
from compound.agent.runners.docker.spec import (
    ASK_READY,
    LAUNCHER_BOOT,
    MANAGED_LABEL,
    NODE_LABEL,
    POOL_LABEL,
    READY_SUFFIX,
    SITECUSTOMIZE_NAME,
    DockerRunnerSettings,
    SandboxKey,
    container_config,
    files_control,
    job_name,
    job_payload,
    sandbox_key,
    script_refusal,
    warm_name,
)
from compound.agent.runners.docker.warm_pool import WarmPool
from compound.protocol import JobStatus, Stream

# How long close() waits for finished jobs' containers to be removed.
REMOVAL_WAIT_S = 30.0
LOST_ENGINE = "lost the connection to the Docker engine while running the job"
# Once the job is gone and its outputs are arriving, how long they may take past the grace.
OUTPUTS_WAIT_S = 30.0

__all__ = [
    "MANAGED_LABEL",
    "NODE_LABEL",
    "POOL_LABEL",
    "DockerRunner",
    "DockerRunnerSettings",
    "container_config",
]


class DockerRunner:
    """Runs jobs through the local Docker engine; one container per job, always removed."""

    def __init__(self, settings: DockerRunnerSettings) -> None:
        self.settings = settings
        self._docker: aiodocker.Docker | None = None
        self._runtime: Chosen | None = None
        # The engine's machine, known with the runtime (picks the seccomp profile).
        self._architecture: str | None = None
        self._removals: set[asyncio.Task[None]] = set()
        # Our sitecustomize's directory on this machine, mounted into every container.
        self._site: Path | None = None
        self.warm_pool: WarmPool[SandboxKey, Sandbox] = WarmPool(
            settings.warm, self._start_warm, Sandbox.usable, self._discard
        )
        # Finished containers, each for the next job of its submitter (key, tenant).
        self.reuse: ReuseStash[tuple[SandboxKey, str], Sandbox] = ReuseStash(
            settings.reuse, Sandbox.usable, self._discard, settings.reuse_idle_s
        )
        # The container of each job running now, and the ids of those frozen by a pause.
        self._running: dict[str, DockerContainer] = {}
        self._frozen: set[str] = set()

    @property
    def runtime(self) -> str:
        """The runtime jobs run under: the chosen one once known, else the setting."""
        return str(self._runtime or self.settings.runtime)

    async def _resolve_engine(self, docker: aiodocker.Docker) -> Chosen:
        """The runtime to use; the engine's architecture is learnt from the same answer."""
        if self._runtime is None:
            info = await docker.system.info()
            self._runtime = choose_runtime(self.settings.runtime, info.get("Runtimes") or {})
            architecture = info.get("Architecture")
            self._architecture = architecture if isinstance(architecture, str) else None
        return self._runtime

    def _client(self) -> aiodocker.Docker:
        if self._docker is None:
            self._docker = connect(self.settings.docker_url)
        return self._docker

    async def prepare(self) -> None:
        """Check engine, runtime and image; remove containers a crashed agent left behind.

        Then the warm pool starts filling, for jobs without a dependency directory.
        Raises EngineError with one sentence saying what to do when something is missing.
        """
        docker = self._client()
        await check_engine(docker)
        try:
            runtime = await self._resolve_engine(docker)
            await self._check_image(docker)
            await self.remove_orphans()
            _prepare_outputs_dir(self.settings.outputs_dir)
            write_site(self._site_source())
        except DockerError as exc:
            raise EngineError(describe(exc)) from exc
        self.warm_pool.refill(sandbox_key(self.settings, runtime, None, self._architecture))

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
        """Remove this node's managed containers, warm ones included; how many.

        Only for ``prepare()``: no job runs yet and the pool is empty.
        """
        return len(await remove_orphans(self._client(), self.settings.node_id))

    async def run(self, spec: RunSpec, on_output: OutputSink, cancel: asyncio.Event) -> RunResult:
        if cancel.is_set():
            # Cancelled while queued here: nothing was started, so there is no exit code.
            return RunResult(JobStatus.CANCELLED, None)
        prepared = await self._prepared(spec)
        if isinstance(prepared, RunResult):
            return prepared
        key, job = prepared
        result = await self._run_once(key, spec, job, on_output, cancel, warm=True)
        if result is None:
            # The warm container died before the job reached it: nothing of the job ran.
            result = await self._run_once(key, spec, job, on_output, cancel, warm=False)
        assert result is not None  # a fresh container always yields a result
        return result

    async def _prepared(self, spec: RunSpec) -> tuple[SandboxKey, _JobInput] | RunResult:
        """The container key and stdin of ``spec``, or the failure saying why it cannot run."""
        refusal = refused_variable(spec.env)
        if refusal is not None:
            return _engine_failure(refusal)
        inputs_bytes = _inputs_bytes(spec.inputs_tar)
        if inputs_bytes is None:
            return _engine_failure("the job's input files are missing on this machine")
        try:
            runtime = await self._resolve_engine(self._client())
        except (DockerError, EngineError, *TRANSPORT_ERRORS) as exc:
            return self._failure(exc)
        key = sandbox_key(self.settings, runtime, spec.deps_dir, self._architecture)
        refusal = script_refusal(spec, key, inputs_bytes, self.settings.outputs_room_bytes)
        if refusal is not None:
            return _engine_failure(refusal)
        try:
            return key, _JobInput(job_payload(spec, key), spec.inputs_tar, inputs_bytes)
        except PayloadTooBig as exc:
            return _engine_failure(str(exc))

    def _failure(self, exc: BaseException) -> RunResult:
        """The result of a job the engine failed before its container ran."""
        if isinstance(exc, DockerError):
            missing = exc.status == 404
            return _engine_failure(self._missing_image() if missing else describe(exc))
        if isinstance(exc, EngineError):
            return _engine_failure(str(exc))
        return _engine_failure(LOST_ENGINE)

    async def _run_once(
        self,
        key: SandboxKey,
        spec: RunSpec,
        job: _JobInput,
        on_output: OutputSink,
        cancel: asyncio.Event,
        *,
        warm: bool,
    ) -> RunResult | None:
        """Run the job in a container (warm if ``warm`` and one is ready, else fresh).

        None: the warm container turned out dead before it read the job; run it again.
        """
        try:
            sandbox = await self._sandbox_for(key, spec.job_id, warm=warm, tenant=spec.tenant)
        except (DockerError, EngineError, *TRANSPORT_ERRORS) as exc:
            return self._failure(exc)
        self._running[spec.job_id] = sandbox.container
        stay = spec.tenant is not None and self.reuse.size > 0
        try:
            result = await self._run_described(sandbox, spec, job, on_output, cancel, stay)
        except BaseException:
            # Shielded: a cancelled run() still removes its container before re-raising.
            await asyncio.shield(remove(sandbox.container))
            raise
        finally:
            self._running.pop(spec.job_id, None)
            self._frozen.discard(sandbox.container.id)
        if sandbox.reusable and spec.tenant is not None:
            self._keep(sandbox, key, spec.tenant, sandbox.marker)
        else:
            # Removal (hundreds of ms, seconds on a busy engine) is off the path that reports
            # the result; close() and removals_done() wait for it.
            self._in_background(remove_once_ended(sandbox), sandbox)
        return result

    def _keep(self, sandbox: Sandbox, key: SandboxKey, tenant: str, marker: bytes) -> None:
        """Hold the finished ``sandbox`` for its submitter's next job, watched as a warm one
        once its launcher says it is ready (the last job's ``marker``, then READY_SUFFIX)."""
        sandbox.reusable = False
        sandbox.rename_to = None
        sandbox.kept_ready = asyncio.Event()
        token = marker + READY_SUFFIX
        sandbox.idle_watch = asyncio.create_task(watch_kept(sandbox, ASK_READY, token))
        self.reuse.keep((key, tenant), sandbox)

    async def _sandbox_for(
        self, key: SandboxKey, job_id: str, *, warm: bool, tenant: str | None = None
    ) -> Sandbox:
        """If ``warm``: a container kept for ``tenant``'s jobs of ``key``, else a warm one,
        whichever is usable; else a fresh one."""
        name = job_name(job_id)
        sandbox = await self._ready_sandbox(key, tenant) if warm else None
        if sandbox is not None and not await claimed(sandbox, name, self._discard):
            sandbox = None
        # The next job of this kind finds one ready: started while this one runs.
        self.warm_pool.refill(key)
        if sandbox is None:
            sandbox = await self._start_sandbox(key, name, pooled=False)
        return sandbox

    async def _ready_sandbox(self, key: SandboxKey, tenant: str | None) -> Sandbox | None:
        """A started container for the job: one kept for its submitter (ready first, else
        the one whose next interpreter is starting: it is up long before a new container
        would be, and costs the machine nothing), else a warm one (idle, else the one
        starting first); None when there is none."""
        kept = (key, tenant) if tenant is not None else None
        if kept is not None:
            sandbox = self.reuse.take(kept, Sandbox.ready) or self.reuse.take(kept)
            if sandbox is not None:
                return sandbox
        return await self.warm_pool.take_ready(key)

    @property
    def site_dir(self) -> Path | None:
        """Where our sitecustomize is kept for the containers, once the first needed it."""
        return self._site

    def _site_source(self) -> Path:
        """The directory with our sitecustomize (a private temporary one unless the settings
        name one); put back if something removed it meanwhile."""
        if self._site is None:
            self._site = self.settings.site_dir or Path(tempfile.mkdtemp(prefix="compound-site-"))
        if not (self._site / SITECUSTOMIZE_NAME).is_file():
            write_site(self._site)
        return self._site

    async def _start_sandbox(self, key: SandboxKey, name: str, *, pooled: bool) -> Sandbox:
        config = container_config(key, self.settings.node_id, self._site_source(), pooled=pooled)
        return await start_sandbox(
            self._client(), self.settings.docker_url, config, name, LAUNCHER_BOOT
        )

    async def _start_warm(self, key: SandboxKey) -> Sandbox:
        sandbox = await self._start_sandbox(key, warm_name(), pooled=True)
        sandbox.idle_watch = asyncio.create_task(sandbox.attachment.until_readable())
        return sandbox

    def _discard(self, sandbox: Sandbox) -> None:
        """Close the sandbox's stream and remove its container, in the background."""
        self._in_background(close_and_remove(sandbox), sandbox)

    def _in_background(self, removal: Coroutine[Any, Any, None], sandbox: Sandbox) -> None:
        task = asyncio.create_task(removal, name=f"remove-{sandbox.container.id[:12]}")
        self._removals.add(task)
        task.add_done_callback(self._removals.discard)

    def warm_container_ids(self) -> set[str]:
        """Ids of the idle containers in the warm pool."""
        return {sandbox.container.id for sandbox in self.warm_pool.idle()}

    async def _run_described(
        self,
        sandbox: Sandbox,
        spec: RunSpec,
        job: _JobInput,
        on_output: OutputSink,
        cancel: asyncio.Event,
        stay: bool,
    ) -> RunResult | None:
        """Run the job in the started container; engine failures become results with a reason.

        None: the container was warm and had ended before the job was handed to it.
        ``stay``: ask the launcher to stay for another job (see reuse).
        """
        outputs = OutputsReceiver(self.settings, on_output)
        try:
            result = await self._run_container(sandbox, spec, job, outputs, cancel, stay)
        except (DockerError, EngineError, *TRANSPORT_ERRORS) as exc:
            result = _engine_failure(_engine_sentence(exc))
        except BaseException:
            outputs.discard()
            raise
        if result is None:
            outputs.discard()
            return None
        return outputs.result(result)

    async def removals_done(self) -> None:
        """Wait until the container of every finished run is removed."""
        while self._removals:
            await asyncio.gather(*list(self._removals), return_exceptions=True)

    async def _run_container(
        self,
        sandbox: Sandbox,
        spec: RunSpec,
        job: _JobInput,
        outputs: OutputsReceiver,
        cancel: asyncio.Event,
        stay: bool,
    ) -> RunResult | None:
        container, attachment = sandbox.container, sandbox.attachment
        # Counted before the trailer is split off: a job that ran always says something.
        sink = _CountingSink(outputs)
        try:
            handed_at = time.time()
            # Stops at the launcher's end frame: the result need not wait for the container.
            ended = outputs.launcher_ended
            pump = asyncio.create_task(attachment.pump(sink, lambda: ended() is not None))
            # Beside the pump, not before it: a container that dies without reading its stdin
            # must not hold up the supervision (timeout, cancel) of the job. The timeout
            # counts from here, when the job is handed over, not from the container's start.
            control = files_control(outputs.marker, job.inputs_bytes, self.settings, stay=stay)
            head = job.payload + control
            # Kept open for a next job when the container may stay (closed at its removal).
            sending = attachment.send_stdin_file(head, job.inputs_tar, close=not stay)
            feed = asyncio.create_task(sending)
            renamed = asyncio.create_task(rename(sandbox))
            try:
                stopped_as = await self._supervise(
                    container, pump, spec.timeout_s, cancel, outputs.outputs_started
                )
            finally:
                await _finish(feed)
                await _finish(pump)
                # Long done by now (a job ending within the rename's round trip waits it).
                await asyncio.gather(renamed, return_exceptions=True)
            await outputs.end_of_output()
            # A warm container killed just before the handover (past the idle watch) ends
            # silent and non-zero: only then is the time it ended worth a round trip.
            silent_warm = sandbox.warm and sink.bytes_seen == 0

            def inspect_when(code: int | None) -> bool:
                unexplained = code == SIGKILL_EXIT or (silent_warm and code != 0)
                return stopped_as is None and unexplained

            footer = outputs.launcher_ended()
            sandbox.reusable = stay and stopped_as is None and footer is not None and footer.stays
            sandbox.marker = outputs.marker
            if not sandbox.reusable:
                # A launcher that was asked to stay reads EOF and ends: the engine's wait
                # below answers.
                await attachment.close()
            state = _told_state(stopped_as, outputs) or await final_state(container, inspect_when)
        finally:
            if not sandbox.reusable:
                await attachment.close()
        if silent_warm and stopped_as is None and state.ended_before(handed_at):
            return None
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
        if container.id in self._frozen:
            # A frozen container takes no signal: thawed first, so it can be stopped.
            await controls.unpause(container)
            self._frozen.discard(container.id)
        await _signal(container, "SIGTERM")
        done, _ = await asyncio.wait({pump}, timeout=self.settings.grace_s)
        if not done and outputs_started():
            done, _ = await asyncio.wait({pump}, timeout=OUTPUTS_WAIT_S)
        if not done:
            await _signal(container, "SIGKILL")
        # The engine closes the attach stream once the container is gone: all output is in.
        await pump

    async def pause_job(self, job_id: str) -> bool:
        """Freeze the running job's container; whether it is frozen now."""
        container = self._running.get(job_id)
        if container is None:
            return False
        if container.id not in self._frozen and await controls.pause(container):
            self._frozen.add(container.id)
        return container.id in self._frozen

    async def unpause_job(self, job_id: str) -> bool:
        """Thaw the job's container; whether it was frozen."""
        container = self._running.get(job_id)
        if container is None or container.id not in self._frozen:
            return False
        self._frozen.discard(container.id)
        await controls.unpause(container)
        return True

    def frozen_jobs(self) -> set[str]:
        return {job for job, c in self._running.items() if c.id in self._frozen}

    async def set_limits(self, limits: Limits) -> int:
        """New CPU and memory limits: for the next jobs, and (``docker update``) for the
        running ones where the engine allows; how many running ones took them."""
        self.settings = replace(self.settings, limits=limits)
        # Kept containers have the old limits (their key never matches again): gone now.
        self.reuse.close()
        if self._runtime is not None:
            # Warm containers of the old limits are discarded as the new ones start.
            self.warm_pool.refill(
                sandbox_key(self.settings, self._runtime, None, self._architecture)
            )
        applied = 0
        for container in list(self._running.values()):
            applied += await controls.update_limits(container, limits)
        return applied

    async def jobs_cpu_seconds(self) -> dict[str, float]:
        """CPU seconds used so far by each running job's container, by container id."""
        used: dict[str, float] = {}
        for container in list(self._running.values()):
            seconds = await controls.cpu_seconds(container)
            if seconds is not None:
                used[container.id] = seconds
        return used

    async def close(self) -> None:
        """Remove the warm and kept containers, wait for removals, release the engine
        connection."""
        self.reuse.close()
        await self.warm_pool.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.removals_done(), REMOVAL_WAIT_S)
        if self._docker is not None:
            # The last word: whatever of this node the engine still has (a warm start that
            # failed half-way, a removal it refused) goes now, not at the next start.
            with contextlib.suppress(DockerError, TimeoutError, OSError, *TRANSPORT_ERRORS):
                await asyncio.wait_for(self.remove_orphans(), REMOVAL_WAIT_S)
            await self._docker.close()
            self._docker = None
        if self._site is not None and self.settings.site_dir is None:
            shutil.rmtree(self._site, ignore_errors=True)
            self._site = None


def _told_state(stopped_as: JobStatus | None, outputs: OutputsReceiver) -> FinalState | None:
    """The final state as the launcher told it, when that is the whole story.

    Not after a stop (the engine's wait orders the stop's signals and the exit), nor for a
    SIGKILL (the engine alone knows whether it was the out-of-memory killer), nor without the
    end frame (the launcher itself was killed): the container's own state tells then.
    """
    footer = outputs.launcher_ended()
    if stopped_as is not None or footer is None:
        return None
    # A launcher that stays for another job never ends the container: its word is all.
    if footer.exit_code == SIGKILL_EXIT and not footer.stays:
        return None
    return FinalState(footer.exit_code)


def _result(
    stopped_as: JobStatus | None, state: FinalState, timeout_s: float | None, limits: Limits
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


class _CountingSink:
    """Passes output on and counts it."""

    def __init__(self, sink: OutputSink) -> None:
        self._sink = sink
        self.bytes_seen = 0

    async def __call__(self, stream: Stream, data: bytes) -> None:
        self.bytes_seen += len(data)
        await self._sink(stream, data)


@dataclass(frozen=True)
class _JobInput:
    """What goes to the launcher's stdin: the payload, then (after the files section's
    head, which is per run) the inputs tar streamed from disk."""

    payload: bytes
    inputs_tar: Path | None
    inputs_bytes: int


def write_site(directory: Path) -> None:
    """Put our sitecustomize in ``directory`` (made if missing) for containers to mount.

    Readable by the job's user, writable by nobody else: every job's interpreter runs it.
    """
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    directory.chmod(0o755)
    target = directory / SITECUSTOMIZE_NAME
    if target.is_file() and target.read_bytes() == SITECUSTOMIZE:
        return
    staged = directory / f".{SITECUSTOMIZE_NAME}.{uuid.uuid4().hex}"
    staged.write_bytes(SITECUSTOMIZE)
    staged.chmod(0o644)
    staged.replace(target)


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
