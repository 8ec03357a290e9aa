"""Following a job from the terminal: output as it comes, reconnecting without loss."""

from __future__ import annotations

import asyncio
import signal
import sys
from itertools import groupby
from typing import TextIO

import websockets

from compound.agent.backoff import reconnect_delay_s
from compound.cli.client import NEEDS_TOKEN, ClientError, CoordinatorClient, follow_once
from compound.cli.exit_codes import ending_sentence, exit_code_for
from compound.protocol import (
    CLOSE_FORBIDDEN,
    CLOSE_UNAUTHORIZED,
    CLOSE_UNKNOWN_JOB,
    FollowEnd,
    FollowRecords,
    FollowStatus,
    JobStatus,
    JobView,
    ProtocolError,
    Stream,
)
from compound.tls import certificate_problem


class TerminalFollower:
    """Writes stdout records to stdout and stderr/system records to stderr, byte-exact."""

    def __init__(
        self,
        client: CoordinatorClient,
        job_id: str,
        cancel_on_interrupt: bool,
        stderr: TextIO = sys.stderr,
    ) -> None:
        self._client = client
        self._job_id = job_id
        self._cancel_on_interrupt = cancel_on_interrupt
        self._stderr = stderr
        self._last_seq = -1
        self._status_line_shown = False
        self._cancel_sent = False

    async def run(self) -> int:
        """Follow to the end; returns the exit code for the job's ending."""
        if self._cancel_on_interrupt:
            asyncio.get_running_loop().add_signal_handler(signal.SIGINT, self._interrupt)
        attempt = 0
        while True:
            try:
                async for message in follow_once(self._client, self._job_id, self._last_seq):
                    attempt = 0
                    if isinstance(message, FollowEnd):
                        return self._end(message.job)
                    self._handle(message)
            except (OSError, TimeoutError, websockets.WebSocketException, ProtocolError) as exc:
                refusal = _refusal(exc, self._job_id)
                if refusal is not None:
                    raise ClientError(refusal) from None
                delay = reconnect_delay_s(attempt)
                attempt += 1
                self._note(f"connection to the coordinator lost; reconnecting in {delay:.1f} s")
                await asyncio.sleep(delay)

    def _interrupt(self) -> None:
        if self._cancel_sent:
            raise KeyboardInterrupt
        self._cancel_sent = True
        self._note(f"cancelling job {self._job_id} (Ctrl-C again to stop following)")
        asyncio.get_running_loop().run_in_executor(None, self._cancel)

    def _cancel(self) -> None:
        try:
            self._client.cancel(self._job_id)
        except ClientError as exc:
            self._note(str(exc))

    def _handle(self, message: FollowRecords | FollowStatus) -> None:
        if isinstance(message, FollowStatus):
            self._show_status(message.job)
            return
        self._clear_status()
        fresh = [r for r in message.records if r.seq > self._last_seq]  # never print twice
        if not fresh:
            return
        self._last_seq = fresh[-1].seq
        # One write per run of the same stream, flushed per batch: output appears live even
        # when stdout is a pipe, and 100,000 lines are not 100,000 system calls.
        for stream, run in groupby(fresh, key=lambda r: r.stream is Stream.STDOUT):
            target = sys.stdout.buffer if stream else sys.stderr.buffer
            target.write("".join(r.data for r in run).encode("utf-8"))
            target.flush()

    def _show_status(self, job: JobView) -> None:
        if not self._stderr.isatty():
            return
        if job.status is JobStatus.QUEUED:
            where = f"position {job.queue_position}" if job.queue_position else "waiting"
            self._stderr.write(
                f"\r\x1b[2Kcompound: job {job.id} queued ({where}); "
                "waiting for an idle contributor…"
            )
            self._stderr.flush()
            self._status_line_shown = True
        else:
            self._clear_status()

    def _clear_status(self) -> None:
        if self._status_line_shown:
            self._stderr.write("\r\x1b[2K")
            self._stderr.flush()
            self._status_line_shown = False

    def _note(self, text: str) -> None:
        self._clear_status()
        self._stderr.write(f"compound: {text}\n")
        self._stderr.flush()

    def _end(self, job: JobView) -> int:
        self._clear_status()
        sentence = ending_sentence(job)
        if sentence:
            self._stderr.write(sentence + "\n")
            self._stderr.flush()
        return exit_code_for(job)


def _refusal(exc: Exception, job_id: str) -> str | None:
    """The sentence for a follow socket refused, by the coordinator or for its certificate;
    None for a lost one (worth reconnecting)."""
    problem = certificate_problem(exc)
    if problem is not None:
        return problem
    if not isinstance(exc, websockets.ConnectionClosed) or exc.rcvd is None:
        return None
    code = exc.rcvd.code
    if code == CLOSE_UNKNOWN_JOB:
        return f"no job with id {job_id!r}"
    if code == CLOSE_UNAUTHORIZED:
        return NEEDS_TOKEN
    if code == CLOSE_FORBIDDEN:
        return f"the coordinator refused: {exc.rcvd.reason or 'this token may not follow jobs'}"
    return None


def follow_job(client: CoordinatorClient, job_id: str, cancel_on_interrupt: bool) -> int:
    return asyncio.run(TerminalFollower(client, job_id, cancel_on_interrupt).run())
