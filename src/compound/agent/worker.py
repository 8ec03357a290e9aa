"""Runs the jobs the coordinator hands this agent, one execution per job.

A job's timeout counts from when it arrives, as the coordinator's does from its claim:
fetching its input files and preparing its packages use up its time, and the script gets
what is left. A job whose time runs out before its script starts ends ``timed_out`` saying
so.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from compound.agent.capacity import Capacity
from compound.agent.deps import DepsCancelled, DepsError, DepsTimedOut, Packages
from compound.agent.events import EventSink
from compound.agent.job_files import FilesError, JobFiles
from compound.agent.outbox import Outbox
from compound.agent.output import OutputCollector
from compound.agent.runners.base import OutputSink, Runner, RunResult, RunSpec
from compound.protocol import MAX_ERROR_CHARS, Done, Job, JobStatus, Stream
from compound.protocol.events import JobFinished, JobStarted
from compound.protocol.script_names import script_file_name

log = logging.getLogger("compound.agent")


class _CancelledEarly(Exception):
    """The job was cancelled while its input files were being fetched."""


class _OutOfTime(Exception):
    """The job's timeout ran out before its script could start; ``str()`` says during what."""


@dataclass(eq=False)
class Execution:
    job: Job
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    abandoned: bool = False
    # Why the agent gives this job back unfinished (it is leaving), if it does.
    handback: str | None = None
    task: asyncio.Task[None] | None = None
    # time.monotonic() when the job arrived: its timeout counts from here.
    received_at: float = field(default_factory=time.monotonic)

    def time_left_s(self) -> float | None:
        """Seconds of the job's timeout still left (None: it has no timeout)."""
        if self.job.timeout_s is None:
            return None
        return self.job.timeout_s - (time.monotonic() - self.received_at)

    def out_of_time(self, during: str) -> _OutOfTime:
        timeout_s = self.job.timeout_s or 0.0
        return _OutOfTime(
            f"timed out after {timeout_s:g} s while {during}, before the script started "
            "(the job's timeout counts its preparation)"
        )


class Worker:
    def __init__(
        self,
        runner: Runner,
        outbox: Outbox,
        events: EventSink,
        max_output_bytes: int,
        packages: Packages | None = None,
        files: JobFiles | None = None,
        slots: int = 1,
    ) -> None:
        self._runner = runner
        # At most ``slots`` jobs fetch and run at once, whatever the coordinator sends: the
        # contributor lends at most that many times the per-job limits. Others wait here.
        # Its donor may change it live (from the next job).
        self.slots = Capacity(slots)
        # None: this contributor installs no packages (the coordinator sends it no such job).
        self._packages = packages
        self._files = files
        self._outbox = outbox
        self._events = events
        self._max_output_bytes = max_output_bytes
        self.executions: dict[str, Execution] = {}

    def start(self, job: Job) -> None:
        running = self.executions.get(job.job_id)
        if running is not None:
            if running.job.lease_id == job.lease_id:
                return  # a repeated assignment after a reconnect: it already runs
            # Given again under a new lease: the old one expired while this agent was away
            # (frozen, cut off), so the run under it is void; its reports would be refused
            # while the new lease, renewed by our heartbeats, kept the job for ever.
            self.abandon(job.job_id, "given again under a new lease")
        execution = Execution(job)
        job_log = self._outbox.open(job.job_id, job.lease_id, job.first_seq)
        if self._outbox.handing_back is not None:
            # Sent before the coordinator heard we are leaving: given back, never started.
            self.executions[job.job_id] = execution
            job_log.ending = _handback(job, self._outbox.handing_back, job.first_seq - 1)
            self._outbox.changed.set()
            return
        execution.task = asyncio.create_task(self._run(execution), name=f"job-{job.job_id}")
        self.executions[job.job_id] = execution

    def cancel(self, job_id: str) -> None:
        execution = self.executions.get(job_id)
        if execution is not None:
            execution.cancel.set()

    def abandon(self, job_id: str, reason: str, lease_id: str | None = None) -> None:
        """The coordinator gave the job to someone else or ended it: stop, report nothing.
        With ``lease_id``, only a run under that lease: one under a newer lease goes on."""
        if lease_id is not None and self._lease_of(job_id) not in (None, lease_id):
            # About a run this agent already replaced (an outbox resend after a reconnect
            # was refused while the new lease's job was on its way): not about this one.
            return
        execution = self.executions.pop(job_id, None)
        self._outbox.forget(job_id)
        if execution is not None:
            execution.abandoned = True
            execution.cancel.set()
            self._events.say(f"job {job_id} abandoned: {reason}", "warning")

    def _lease_of(self, job_id: str) -> str | None:
        execution = self.executions.get(job_id)
        if execution is not None:
            return execution.job.lease_id
        job_log = self._outbox.jobs.get(job_id)
        return job_log.lease_id if job_log is not None else None

    def forget(self, job_id: str) -> None:
        self.executions.pop(job_id, None)
        self._outbox.forget(job_id)

    async def drain(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the running jobs to end; whether they all did."""
        tasks = [e.task for e in self.executions.values() if e.task is not None]
        if not tasks:
            return True
        _, pending = await asyncio.wait(tasks, timeout=timeout_s)
        return not pending

    async def hand_back_all(self, reason: str, timeout_s: float) -> None:
        """Stop every running job and give it back unfinished (reported as a hand-back,
        never as cancelled), waiting up to ``timeout_s`` for their containers to go."""
        for execution in self.executions.values():
            if execution.task is not None and not execution.task.done():
                execution.handback = reason
                execution.cancel.set()
        await self.drain(timeout_s)

    def hand_back(self, job_id: str, reason: str) -> None:
        """Stop the running job and give it back unfinished (a hand-back, not a cancel)."""
        execution = self.executions.get(job_id)
        if execution is not None and execution.task is not None and not execution.task.done():
            execution.handback = reason
            execution.cancel.set()

    async def stop_all(self, timeout_s: float) -> None:
        for execution in self.executions.values():
            execution.cancel.set()
        tasks = [e.task for e in self.executions.values() if e.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)

    async def _run(self, execution: Execution) -> None:
        job = execution.job
        self._events.emit(JobStarted(job_id=job.job_id))
        self._events.say(f"job {job.job_id} started")
        # This execution's own log: bound now, so its output never reaches a later one's.
        job_log = self._outbox.jobs.get(job.job_id)
        collector = OutputCollector(
            job.first_seq,
            self._max_output_bytes,
            lambda r: self._outbox.add_to(job_log, r),
            on_gathered=self._outbox.changed.set,
        )
        if job_log is not None:
            job_log.gather = collector.drain

        async def on_output(stream: Stream, data: bytes) -> None:
            collector.feed(stream, data)

        result = await self._in_a_slot(execution, on_output, collector)
        if job_log is not None:
            job_log.output_over = True  # what is left goes without waiting for more
        collector.close()
        self._outbox.changed.set()
        if result.error and result.status is JobStatus.FAILED:
            collector.note(f"[compound] {result.error}")
        if result.outputs_note:
            collector.note(f"[compound] {result.outputs_note}")
        # Before the ending goes out: a submitter who sees the job end can download them.
        note = await self._return_outputs(execution, result)
        if note:
            collector.note(f"[compound] {note}")
        self._finish(execution, result, collector.last_seq)

    async def _in_a_slot(
        self, execution: Execution, on_output: OutputSink, collector: OutputCollector
    ) -> RunResult:
        """Fetch and run the job once a slot is free; cancelled while waiting, it never runs."""
        if not await self.slots.acquire_unless(execution.cancel):
            return RunResult(JobStatus.CANCELLED, None, "cancelled before it started")
        try:
            return await self._fetch_and_run(execution, on_output, collector)
        finally:
            await asyncio.shield(self.slots.release())

    async def _fetch_and_run(
        self, execution: Execution, on_output: OutputSink, collector: OutputCollector
    ) -> RunResult:
        """Fetch the job's input files, then run it; the inputs tar is gone on return."""
        try:
            inputs_tar = await self._fetch_inputs(execution)
        except FilesError as exc:
            return RunResult(JobStatus.FAILED, None, str(exc))
        except _CancelledEarly:
            return RunResult(JobStatus.CANCELLED, None, "cancelled before it started")
        except _OutOfTime as out:
            return _timed_out_early(out, collector)
        try:
            return await self._execute(execution, inputs_tar, on_output, collector)
        finally:
            if inputs_tar is not None:
                inputs_tar.unlink(missing_ok=True)

    async def _execute(
        self,
        execution: Execution,
        inputs_tar: Path | None,
        on_output: OutputSink,
        collector: OutputCollector,
    ) -> RunResult:
        job = execution.job
        spec = RunSpec(
            job.job_id,
            job.script,
            list(job.args),
            dict(job.env),
            job.timeout_s,
            inputs_tar=inputs_tar,
            script_name=script_file_name(job.name),
            tenant=job.tenant,
        )
        try:
            return await self._run_with_packages(execution, spec, on_output, collector)
        except DepsError as exc:
            return RunResult(JobStatus.FAILED, None, str(exc))
        except DepsCancelled:
            return RunResult(JobStatus.CANCELLED, None, "cancelled while preparing packages")
        except DepsTimedOut:
            return _timed_out_early(execution.out_of_time("preparing its packages"), collector)
        except _OutOfTime as out:
            return _timed_out_early(out, collector)
        except Exception as exc:
            log.exception("job %s: the runner failed", job.job_id)
            return RunResult(JobStatus.FAILED, None, f"the contributor could not run it: {exc}")

    async def _fetch_inputs(self, execution: Execution) -> Path | None:
        """The job's verified input tar (None: it has none). FilesError when it cannot be
        fetched, _CancelledEarly when the job is cancelled meanwhile."""
        job = execution.job
        if job.inputs is None:
            return None
        if self._files is None:
            raise FilesError("this contributor cannot fetch input files")
        fetch = asyncio.create_task(self._files.fetch_inputs(job.job_id, job.lease_id, job.inputs))
        cancelled = asyncio.create_task(execution.cancel.wait())
        time_left_s = execution.time_left_s()
        await asyncio.wait(
            {fetch, cancelled},
            timeout=None if time_left_s is None else max(0.0, time_left_s),
            return_when=asyncio.FIRST_COMPLETED,
        )
        cancelled.cancel()
        if not fetch.done():
            fetch.cancel()
            await asyncio.gather(fetch, return_exceptions=True)
            if execution.cancel.is_set():
                raise _CancelledEarly
            raise execution.out_of_time("fetching its input files")
        return fetch.result()

    async def _return_outputs(self, execution: Execution, result: RunResult) -> str | None:
        """Upload the job's output files (then delete the local tar); a note if that failed."""
        tar = result.outputs_tar
        if tar is None or execution.abandoned or execution.handback is not None:
            if tar is not None:
                tar.unlink(missing_ok=True)
            return None
        job = execution.job
        try:
            if self._files is None:
                raise FilesError("this contributor cannot return output files")
            count = await self._files.return_outputs(job.job_id, job.lease_id, tar)
        except FilesError as exc:
            log.warning("job %s: %s", job.job_id, exc, extra={"job_id": job.job_id})
            return f"output files not returned: {exc}"
        except OSError as exc:
            return f"output files not returned: {exc.strerror or exc}"
        finally:
            tar.unlink(missing_ok=True)
        self._events.say(f"job {job.job_id}: {count} output file(s) returned")
        return None

    async def _run_with_packages(
        self,
        execution: Execution,
        spec: RunSpec,
        on_output: OutputSink,
        collector: OutputCollector,
    ) -> RunResult:
        """Run the job, its packages (if any) prepared first and mounted while it runs."""
        requirements = list(execution.job.requirements)
        if not requirements:
            return await self._run_script(execution, spec, on_output)
        if self._packages is None:
            raise DepsError("this contributor does not install packages (it runs with --no-deps)")
        async with self._packages.prepared(
            requirements, collector.note, execution.cancel, execution.time_left_s()
        ) as deps_dir:
            return await self._run_script(execution, replace(spec, deps_dir=deps_dir), on_output)

    async def _run_script(
        self, execution: Execution, spec: RunSpec, on_output: OutputSink
    ) -> RunResult:
        """Run the script for the time its job has left; a timeout names the job's own."""
        time_left_s = execution.time_left_s()
        if time_left_s is None:
            return await self._runner.run(spec, on_output, execution.cancel)
        if time_left_s <= 0:
            raise execution.out_of_time("getting ready")
        result = await self._runner.run(
            replace(spec, timeout_s=time_left_s), on_output, execution.cancel
        )
        if result.status is JobStatus.TIMED_OUT:
            result = replace(result, error=f"timed out after {execution.job.timeout_s:g} s")
        return result

    def _finish(self, execution: Execution, result: RunResult, last_seq: int) -> None:
        job = execution.job
        self._events.emit(
            JobFinished(
                job_id=job.job_id,
                status=result.status,
                exit_code=result.exit_code,
                error=result.error,
            )
        )
        self._events.say(
            f"job {job.job_id} {result.status.value}"
            + (f" (exit {result.exit_code})" if result.exit_code is not None else "")
        )
        if execution.abandoned:
            return
        job_log = self._outbox.jobs.get(job.job_id)
        if job_log is not None and execution.handback is not None:
            job_log.ending = _handback(job, execution.handback, last_seq)
            self._outbox.changed.set()
        elif job_log is not None:
            job_log.ending = Done(
                job_id=job.job_id,
                lease_id=job.lease_id,
                status=result.status,
                exit_code=result.exit_code,
                # The coordinator refuses longer reasons; the note above has the full text.
                error=result.error[:MAX_ERROR_CHARS] if result.error else None,
                last_seq=last_seq,
            )
            self._outbox.changed.set()


def _handback(job: Job, reason: str, last_seq: int) -> Done:
    return Done(job_id=job.job_id, lease_id=job.lease_id, handback=reason, last_seq=last_seq)


def _timed_out_early(out: _OutOfTime, collector: OutputCollector) -> RunResult:
    collector.note(f"[compound] {out}")
    return RunResult(JobStatus.TIMED_OUT, None, str(out))
