"""Following a job from the terminal: output as it comes, reconnecting without loss.

Synchronous and light on purpose: the follow socket is ``follow_socket.py`` (standard
library only) and its messages are read by ``protocol/follow_wire.py`` (no pydantic), so
`compound submit` starts following within a few milliseconds of its job being queued.
"""

from __future__ import annotations

import signal
import sys
import time
from itertools import groupby
from typing import TYPE_CHECKING, Any, TextIO

from compound.cli.client import NEEDS_TOKEN, ClientError, CoordinatorClient
from compound.cli.exit_codes import ending_sentence, exit_code_for
from compound.cli.follow_socket import Closed, FollowSocket, FrameError, HandshakeError
from compound.cli.job_output import JobOutput
from compound.cli.waiting import waiting_sentence
from compound.protocol.errors import (
    CLOSE_FORBIDDEN,
    CLOSE_UNAUTHORIZED,
    CLOSE_UNKNOWN_JOB,
    ProtocolError,
)
from compound.protocol.follow_wire import (
    WireEnd,
    WireJob,
    WireRecords,
    WireStatus,
    decode_follow_message,
)
from compound.protocol.limits import MAX_MESSAGE_BYTES
from compound.protocol.status import JobStatus, Stream

if TYPE_CHECKING:
    import threading

# A cancel request still under way when the job's end arrives gets this long to finish.
CANCEL_JOIN_S = 5.0


class TerminalFollower:
    """Writes stdout records to stdout and stderr/system records to stderr: byte-exact to a
    pipe or file, sanitised to a terminal (``job_output.py``)."""

    def __init__(
        self,
        client: CoordinatorClient,
        job_id: str,
        cancel_on_interrupt: bool,
        stderr: TextIO = sys.stderr,
        output: JobOutput | None = None,
    ) -> None:
        self._client = client
        self._job_id = job_id
        self._cancel_on_interrupt = cancel_on_interrupt
        self._stderr = stderr
        self._output = output or JobOutput.of_process()
        self._last_seq = -1
        self._status_line_shown = False
        self._cancel: threading.Thread | None = None
        # The attempt whose records were shown last, and the last one whose end was said.
        self._attempt: int | None = None
        self._ended_attempt: int | None = None

    def run(self) -> int:
        """Follow to the end; returns the exit code for the job's ending."""
        previous = None
        if self._cancel_on_interrupt:
            previous = signal.signal(signal.SIGINT, self._interrupt)
        try:
            return self._follow()
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            if self._cancel is not None:
                self._cancel.join(CANCEL_JOIN_S)

    def _follow(self) -> int:
        while True:
            try:
                return self._follow_once()
            except (OSError, HandshakeError, Closed) as exc:  # TimeoutError is an OSError
                refusal = _refusal(exc, self._job_id)
                if refusal is not None:
                    raise ClientError(refusal) from None
            except FrameError as exc:
                raise ClientError(f"the coordinator broke the WebSocket protocol ({exc})") from None
            # From the last record shown, on the next coordinator of the list if there are
            # several (they share one database: the follow goes on where it was).
            lost = self._client.base_url
            delay = self._client.fail_over()
            elsewhere = "" if self._client.base_url == lost else f" at {self._client.base_url}"
            self._note(
                f"connection to the coordinator lost; reconnecting{elsewhere} in {delay:.1f} s"
            )
            time.sleep(delay)

    def _follow_once(self) -> int:
        """One connection, from the last record shown; returns at the job's end, raises when
        the connection ends before it."""
        host, port, target = self._client.follow_address(self._job_id, self._last_seq)
        connection = FollowSocket.connect(
            host,
            port,
            target,
            self._client.auth_headers(),
            self._client.ssl_context_in_use,
            MAX_MESSAGE_BYTES,
        )
        self._client.reached()
        try:
            for payload in connection.messages():
                try:
                    message = decode_follow_message(payload)
                except ProtocolError as exc:
                    connection.fail(exc.close_code, exc.reason)
                    raise ClientError(
                        f"the coordinator sent a follow message this CLI cannot read ({exc.reason})"
                    ) from None
                if isinstance(message, WireEnd):
                    return self._end(message.job)
                self._handle(message)
            raise Closed(None)  # messages() ends only by raising; for the type checker
        finally:
            connection.close()

    def _interrupt(self, _signum: int, _frame: Any) -> None:
        if self._cancel is not None:
            raise KeyboardInterrupt
        import threading

        self._note(f"cancelling job {self._job_id} (Ctrl-C again to stop following)")
        # The request runs beside the follow socket, which shows the cancelled ending.
        self._cancel = threading.Thread(target=self._send_cancel, name="cancel", daemon=True)
        self._cancel.start()

    def _send_cancel(self) -> None:
        try:
            self._client.cancel(self._job_id)
        except ClientError as exc:
            self._note(str(exc))

    def _handle(self, message: WireRecords | WireStatus) -> None:
        if isinstance(message, WireStatus):
            if message.job.status is JobStatus.QUEUED and self._attempt is not None:
                self._attempt_ended(self._attempt)  # handed back, or its contributor lost
            self._show_status(message.job)
            return
        self._clear_status()
        fresh = [r for r in message.records if r.seq > self._last_seq]  # never print twice
        if not fresh:
            return
        self._last_seq = fresh[-1].seq
        # One write per run of the same stream and attempt, flushed per batch: output
        # appears live even when stdout is a pipe, and 100,000 lines are not 100,000 calls.
        for (to_stdout, attempt), run in groupby(
            fresh, key=lambda r: (r.stream is Stream.STDOUT, r.attempt)
        ):
            if attempt is not None:
                self._attempt_starts(attempt)
            self._output.write(to_stdout, "".join(r.data for r in run), flush=True)

    def _attempt_ended(self, attempt: int) -> None:
        """Say once that ``attempt`` ended without a result (the coordinator's note above
        says why) and that another follows."""
        if self._ended_attempt is not None and self._ended_attempt >= attempt:
            return
        self._ended_attempt = attempt
        self._note(
            f"attempt {attempt} of job {self._job_id} was handed back or lost;"
            f" waiting for attempt {attempt + 1}"
        )

    def _attempt_starts(self, attempt: int) -> None:
        """Records of ``attempt`` arrive: a later attempt than the one shown replaces its
        output (in a file, stdout keeps the output of one clean run)."""
        if self._attempt is not None and attempt > self._attempt:
            self._attempt_ended(self._attempt)
            if not self._output.restart_stdout():
                self._note(
                    f"attempt {attempt} starts; the output above was attempt {self._attempt}'s"
                )
        self._attempt = attempt if self._attempt is None else max(self._attempt, attempt)

    def _show_status(self, job: WireJob) -> None:
        if not self._stderr.isatty():
            return
        if job.status is JobStatus.QUEUED:
            where = f"position {job.queue_position}" if job.queue_position else "waiting"
            why = waiting_sentence(job.waiting_reason, job.estimated_start_s)
            self._stderr.write(f"\r\x1b[2Kcompound: job {job.id} queued ({where}); {why}…")
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
        self._output.end_styles()
        self._clear_status()
        self._stderr.write(f"compound: {text}\n")
        self._stderr.flush()

    def _end(self, job: WireJob) -> int:
        self._output.end_styles()
        self._clear_status()
        sentence = ending_sentence(job)
        if sentence:
            self._stderr.write(sentence + "\n")
            self._stderr.flush()
        return exit_code_for(job)


def _refusal(exc: Exception, job_id: str) -> str | None:
    """The sentence for a follow socket refused, by the coordinator or for its certificate;
    None for a lost one (worth reconnecting)."""
    if isinstance(exc, Closed):
        if exc.code == CLOSE_UNKNOWN_JOB:
            return f"no job with id {job_id!r}"
        if exc.code == CLOSE_UNAUTHORIZED:
            return NEEDS_TOKEN
        if exc.code == CLOSE_FORBIDDEN:
            return f"the coordinator refused: {exc.reason or 'this token may not follow jobs'}"
        return None
    if isinstance(exc, HandshakeError):
        # A 4xx will not change by asking again (a 5xx may: a proxy before a restart).
        status = exc.status or 0
        if 400 <= status < 500 and status not in (408, 429):
            return f"the coordinator refused to follow the job ({exc})"
        return None
    from compound.tls import certificate_problem  # ssl's errors are OSErrors

    return certificate_problem(exc)


def follow_job(client: CoordinatorClient, job_id: str, cancel_on_interrupt: bool) -> int:
    return TerminalFollower(client, job_id, cancel_on_interrupt).run()
