"""One job's container from its start to its removal: start, claim, final state, remove.

A ``Sandbox`` is a started container whose launcher waits for its job on stdin, with the
attach connection opened before the start (so no byte of output is ever missed). Warm ones
(started by the pool) have an idle watch: a container that says anything or ends before its
job arrives is dead, and is never handed a job.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiodocker
import aiohttp
from aiodocker.containers import DockerContainer
from aiodocker.exceptions import DockerError

from compound.agent.runners.docker.engine import resolve_url
from compound.agent.runners.docker.stream import Attachment

# The engine went away mid-run (restart, crash). Not all OSError: the sink may raise those.
TRANSPORT_ERRORS = (aiohttp.ClientError, ConnectionError)
SIGKILL_EXIT = 128 + 9
# How long a finished job's container may take to end before it is removed by force.
EXIT_WAIT_S = 5.0
# How long a job waits for a kept container to be ready (its next interpreter started).
READY_WAIT_S = 10.0
FIRST_COMPLETED = asyncio.FIRST_COMPLETED
# The engine's RFC 3339 time with nanoseconds, in UTC.
_ENGINE_TIME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z")


@dataclass
class Sandbox:
    """A started container whose launcher waits for its job on stdin."""

    container: DockerContainer
    attachment: Attachment
    # Warm (started by the pool) only: ends when the idle container says anything or ends.
    idle_watch: asyncio.Task[None] | None = None
    # Warm only, once claimed: the job's container name, given while the job runs.
    rename_to: str | None = None
    # Set when its job ended by itself in a launcher asked to stay: it may run the next job
    # of the same submitter (see reuse).
    reusable: bool = False
    # The trailer's marker of its last job (a kept one's launcher says it is ready with it).
    marker: bytes = b""
    # Kept for a next job only: set once its launcher said it is ready for one.
    kept_ready: asyncio.Event | None = None

    @property
    def warm(self) -> bool:
        return self.idle_watch is not None

    def usable(self) -> bool:
        return self.idle_watch is None or not self.idle_watch.done()

    def ready(self) -> bool:
        """Whether a job handed over now starts at once (a kept one's interpreter is up)."""
        return self.usable() and (self.kept_ready is None or self.kept_ready.is_set())

    async def claim(self) -> bool:
        """Stop the idle watch so the job's pump owns the stream; False if it had died.

        A kept one is first waited for until its launcher says it is ready: what it says
        must not reach the job's output."""
        if self.idle_watch is None:
            return True
        if self.kept_ready is not None and not await self._until_ready():
            self.idle_watch.cancel()
            return False
        self.idle_watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.idle_watch
        return self.idle_watch.cancelled()

    async def _until_ready(self) -> bool:
        assert self.kept_ready is not None and self.idle_watch is not None
        waiting = asyncio.create_task(self.kept_ready.wait())
        try:
            await asyncio.wait(
                {waiting, self.idle_watch}, timeout=READY_WAIT_S, return_when=FIRST_COMPLETED
            )
        finally:
            waiting.cancel()
        return self.kept_ready.is_set() and not self.idle_watch.done()


async def watch_kept(sandbox: Sandbox, ask: bytes, token: bytes) -> None:
    """The idle watch of a kept container: ``ask`` its launcher whether it is ready, and
    its answer ``token`` sets ``kept_ready``; then, like a warm one's, the watch ends when
    the container says anything more or ends."""
    assert sandbox.kept_ready is not None
    await sandbox.attachment.write_stdin(ask)
    if await sandbox.attachment.read_stdout(len(token)) != token:
        return
    sandbox.kept_ready.set()
    await sandbox.attachment.until_readable()


async def start_sandbox(
    docker: aiodocker.Docker,
    docker_url: str | None,
    config: dict[str, Any],
    name: str,
    boot: bytes,
) -> Sandbox:
    """Create, attach (before the start, to miss no byte) and start a container, and send
    ``boot`` to its stdin (the program its command reads before waiting for a job)."""
    container = await _create(docker, config, name)
    try:
        url = resolve_url(docker_url)
        attachment = await Attachment.open(url, docker.api_version, container.id)
        try:
            await container.start()
            await attachment.write_stdin(boot)
        except BaseException:
            await attachment.close()
            raise
    except BaseException:
        await asyncio.shield(remove(container))
        raise
    return Sandbox(container, attachment)


async def _create(docker: aiodocker.Docker, config: dict[str, Any], name: str) -> DockerContainer:
    """Create the container; cancelled meanwhile, wait for the engine's answer and remove it.

    Cancelling the request itself would leave a container the engine made but we never
    heard of (until the next ``prepare()``).
    """
    creating = asyncio.ensure_future(docker.containers.create(config, name=name))
    try:
        return await asyncio.shield(creating)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await remove(await creating)
        raise


async def claimed(sandbox: Sandbox, name: str, discard: Callable[[Sandbox], None]) -> bool:
    """Whether the warm ``sandbox`` is the caller's to use (to be renamed ``name`` by
    ``rename``); else discarded."""
    try:
        usable = await sandbox.claim()
    except BaseException:
        discard(sandbox)
        raise
    if not usable:
        discard(sandbox)
        return False
    sandbox.rename_to = name
    return True


async def rename(sandbox: Sandbox) -> None:
    """Give a claimed warm container its job's name (cosmetic: ``docker ps`` shows the job).

    Beside the job, not before it: one engine round trip (~5 ms, more on a busy engine)
    off every pooled job's start. A container gone meanwhile shows in the job's result.
    """
    if sandbox.rename_to is not None:
        with contextlib.suppress(DockerError, *TRANSPORT_ERRORS):
            await sandbox.container.rename(sandbox.rename_to)


@dataclass(frozen=True)
class FinalState:
    exit_code: int | None
    oom_killed: bool = False
    # When the container ended (seconds since the epoch), when it was inspected.
    finished_at: float | None = None

    def ended_before(self, moment: float) -> bool:
        return self.finished_at is not None and self.finished_at < moment


async def final_state(
    container: DockerContainer, inspect_when: Callable[[int | None], bool]
) -> FinalState:
    """The exit code, and the inspected details when ``inspect_when(exit_code)``.

    The output has ended, so the container has too and ``wait`` answers at once; the inspect
    is one more round trip, kept off the common path (a job that exits by itself).
    """
    status = await container.wait()
    code = status.get("StatusCode")
    exit_code = code if isinstance(code, int) else None
    if not inspect_when(exit_code):
        return FinalState(exit_code)
    state = (await container.show()).get("State", {})
    return FinalState(exit_code, bool(state.get("OOMKilled")), _epoch(state.get("FinishedAt")))


def _epoch(text: object) -> float | None:
    match = _ENGINE_TIME.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        return None
    whole = datetime.fromisoformat(match[1]).replace(tzinfo=UTC).timestamp()
    return whole + float(f"0.{match[2] or 0}")


async def close_and_remove(sandbox: Sandbox) -> None:
    if sandbox.idle_watch is not None:
        sandbox.idle_watch.cancel()
    try:
        await sandbox.attachment.close()
    finally:  # the container goes even when its stream fails to close cleanly
        await remove(sandbox.container)


async def remove_once_ended(sandbox: Sandbox) -> None:
    """Close the stream and remove the container of a finished job once it has ended.

    Its launcher exits right after the result, so the container ends within milliseconds;
    removing it then costs the engine ~15 ms of CPU less than a forced removal of a
    running one (which goes through an extra kill of the runtime). One that does not end
    in ``EXIT_WAIT_S`` is removed by force all the same.
    """
    await sandbox.attachment.close()
    with contextlib.suppress(DockerError, *TRANSPORT_ERRORS, TimeoutError):
        await asyncio.wait_for(sandbox.container.wait(), EXIT_WAIT_S)
    await remove(sandbox.container)


async def remove(container: DockerContainer) -> None:
    # 404: already gone. Anything else is logged by the engine; the next prepare() retries.
    with contextlib.suppress(DockerError, *TRANSPORT_ERRORS):
        await container.delete(force=True)
