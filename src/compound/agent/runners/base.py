"""What the agent needs from a sandbox: run one job, stream its output, report how it ended."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from compound.protocol import JobStatus, Stream
from compound.protocol.script_names import DEFAULT_SCRIPT_NAME

MiB = 1024 * 1024

# Called with raw bytes as the process produces them, one stream at a time, in order.
OutputSink = Callable[[Stream, bytes], Awaitable[None]]


@dataclass(frozen=True)
class Limits:
    """Resource limits of one job's container (documented defaults, all configurable)."""

    memory_bytes: int = 512 * MiB
    cpus: float = 1.0
    pids: int = 256
    # RLIMIT_NOFILE: open files and sockets per process.
    nofile: int = 1024
    # RLIMIT_FSIZE: the largest file a job may write; past it a write fails with EFBIG.
    file_bytes: int = 256 * MiB


@dataclass(frozen=True)
class RunSpec:
    job_id: str
    script: str
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    timeout_s: float | None = None
    # A directory of the job's dependencies on this machine, mounted read-only in the
    # container and put on its sys.path; None: the image's packages only. The agent makes
    # it; never a path that came over the network.
    deps_dir: Path | None = None
    # A tar on the agent's disk (hash already checked) extracted read-only into the job's
    # working directory before it starts; the runner only reads it, the caller owns it.
    inputs_tar: Path | None = None
    # The script's file name in the job's directory (see protocol.script_names), so
    # tracebacks and ``__file__`` show it.
    script_name: str = DEFAULT_SCRIPT_NAME
    # Equal for two jobs exactly when one submitter sent both (see protocol.messages.Job):
    # a sandbox may be reused only between jobs of one tenant; None: never reused.
    tenant: str | None = None


@dataclass(frozen=True)
class RunResult:
    """How a job ended: SUCCEEDED (exit 0), FAILED, TIMED_OUT or CANCELLED."""

    status: JobStatus
    exit_code: int | None
    error: str | None = None
    # What the job left under ``outputs/`` in its working directory, as a tar on the agent's
    # disk (the caller uploads, then deletes it); None when there was nothing to collect.
    outputs_tar: Path | None = None
    # One sentence for the submitter when not everything came back (over the cap, bad entry).
    outputs_note: str | None = None


class Runner(Protocol):
    @property
    def runtime(self) -> str:
        """The container runtime jobs run under; final once ``prepare()`` returned."""
        ...

    async def prepare(self) -> None:
        """Check the sandbox is usable and remove leftovers of a crashed agent."""

    async def run(self, spec: RunSpec, on_output: OutputSink, cancel: asyncio.Event) -> RunResult:
        """Run ``spec`` to its end; all output has been passed to ``on_output`` on return.

        Setting ``cancel`` stops the job (SIGTERM, grace period, SIGKILL) and the result is
        CANCELLED; passing ``spec.timeout_s`` does the same and the result is TIMED_OUT.
        """
        ...

    async def pause_job(self, job_id: str) -> bool:
        """Freeze the running job (its processes get no CPU until thawed); whether it is
        frozen now. A stop (cancel, timeout) thaws it first."""
        ...

    async def unpause_job(self, job_id: str) -> bool:
        """Thaw a frozen job; whether it was frozen."""
        ...

    def frozen_jobs(self) -> set[str]:
        """The ids of the running jobs frozen now."""
        ...

    async def set_limits(self, limits: Limits) -> int:
        """Run the next jobs under ``limits``; apply its CPU and memory to the running ones
        where possible, and say to how many."""
        ...

    async def jobs_cpu_seconds(self) -> dict[str, float]:
        """CPU seconds each running job's sandbox used so far, by a key stable for its life."""
        ...

    async def close(self) -> None:
        """Release the connection to the sandbox engine."""
