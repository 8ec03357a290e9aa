"""Exit codes of `compound submit` and `compound logs --follow` (documented in --help)."""

from __future__ import annotations

from typing import Protocol

from compound.protocol.status import JobStatus


class EndedJob(Protocol):
    """What the exit code is made of: a JobView, or the follow stream's WireJob."""

    @property
    def id(self) -> str: ...
    @property
    def status(self) -> JobStatus: ...
    @property
    def exit_code(self) -> int | None: ...
    @property
    def error(self) -> str | None: ...


TIMED_OUT = 124
NO_EXIT_CODE = 125  # failed before or without an exit code (e.g. contributor lost)
CANCELLED = 130
UNREACHABLE = 3  # the coordinator could not be reached or refused the request
USAGE = 2  # the command line cannot be carried out as given (as Click's usage errors)

HELP = (
    "Exit codes: the script's own exit code when it ran to its end; "
    f"{TIMED_OUT} timed out; {CANCELLED} cancelled (Ctrl-C included); "
    f"{NO_EXIT_CODE} failed without an exit code (contributor lost, could not start); "
    f"{UNREACHABLE} coordinator unreachable or request refused."
)


def exit_code_for(job: EndedJob) -> int:
    if job.status is JobStatus.TIMED_OUT:
        return TIMED_OUT
    if job.status is JobStatus.CANCELLED:
        return CANCELLED
    if job.exit_code is not None:
        # A process exits with 0-255; a code no process can have is not the script's own.
        return job.exit_code if 0 <= job.exit_code <= 255 else NO_EXIT_CODE
    return 0 if job.status is JobStatus.SUCCEEDED else NO_EXIT_CODE


def ending_sentence(job: EndedJob) -> str | None:
    """One line for stderr when the job ended without its own exit code; else None."""
    if job.status is JobStatus.TIMED_OUT:
        return f"compound: job {job.id} timed out" + (f" ({job.error})" if job.error else "")
    if job.status is JobStatus.CANCELLED:
        return f"compound: job {job.id} was cancelled"
    if job.status is JobStatus.FAILED and job.exit_code is None:
        return f"compound: job {job.id} failed: {job.error or 'no exit code'}"
    return None
