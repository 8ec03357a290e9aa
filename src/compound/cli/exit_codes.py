"""Exit codes of `compound submit` and `compound logs --follow` (documented in --help)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: `submit --detach` never needs the models
    from compound.protocol import JobView

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


def exit_code_for(job: JobView) -> int:
    from compound.protocol import JobStatus

    if job.status is JobStatus.TIMED_OUT:
        return TIMED_OUT
    if job.status is JobStatus.CANCELLED:
        return CANCELLED
    if job.exit_code is not None:
        return job.exit_code
    return 0 if job.status is JobStatus.SUCCEEDED else NO_EXIT_CODE


def ending_sentence(job: JobView) -> str | None:
    """One line for stderr when the job ended without its own exit code; else None."""
    from compound.protocol import JobStatus

    if job.status is JobStatus.TIMED_OUT:
        return f"compound: job {job.id} timed out" + (f" ({job.error})" if job.error else "")
    if job.status is JobStatus.CANCELLED:
        return f"compound: job {job.id} was cancelled"
    if job.status is JobStatus.FAILED and job.exit_code is None:
        return f"compound: job {job.id} failed: {job.error or 'no exit code'}"
    return None
