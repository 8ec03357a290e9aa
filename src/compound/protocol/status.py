"""Job lifecycle: the statuses a job can have and the legal moves between them."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.TIMED_OUT}
)

# The only place that says which moves are legal. RUNNING -> QUEUED is a requeue after
# the contributor running the job was lost.
_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED, JobStatus.FAILED}),
    JobStatus.RUNNING: frozenset(
        {
            JobStatus.QUEUED,
            JobStatus.SUCCEEDED,
            JobStatus.FAILED,
            JobStatus.CANCELLED,
            JobStatus.TIMED_OUT,
        }
    ),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
    JobStatus.TIMED_OUT: frozenset(),
}


class IllegalTransition(ValueError):
    """Raised when a job is asked to move to a status it cannot reach from its current one."""

    def __init__(self, current: JobStatus, target: JobStatus) -> None:
        super().__init__(f"a {current.value} job cannot become {target.value}")
        self.current = current
        self.target = target


def can_transition(current: JobStatus, target: JobStatus) -> bool:
    return target in _TRANSITIONS[current]


def check_transition(current: JobStatus, target: JobStatus) -> None:
    if not can_transition(current, target):
        raise IllegalTransition(current, target)


class Lending(StrEnum):
    """What a connected contributor lends now, as its agent says."""

    ACTIVE = "active"  # takes jobs
    PAUSED = "paused"  # takes none; the jobs it runs are frozen (its donor's choice)
    DRAINING = "draining"  # takes none; it is stopping and hands back what it does not finish


class ContributorState(StrEnum):
    """What a contributor does now, as the coordinator sees it (GET /api/v1/contributors)."""

    IDLE = "idle"  # connected, lending, running no job
    BUSY = "busy"  # connected, lending, running at least one job
    PAUSED = "paused"  # connected, takes no job (its donor paused it; a reason says why)
    DRAINING = "draining"  # connected, takes no job: it is stopping
    OFFLINE = "offline"  # not connected; its last known state is kept beside

    @classmethod
    def of(cls, lending: Lending, jobs_held: int) -> ContributorState:
        """The state of a connected contributor lending ``lending`` with ``jobs_held`` jobs."""
        if lending is Lending.PAUSED:
            return cls.PAUSED
        if lending is Lending.DRAINING:
            return cls.DRAINING
        return cls.BUSY if jobs_held else cls.IDLE


class WaitingReason(StrEnum):
    """Why a queued job is not running yet (JobView.waiting_reason), as a sentence."""

    NO_CONTRIBUTOR = "no contributor online"
    ALL_BUSY = "all contributors busy"
    ALL_PAUSED = "all contributors paused or outside their hours"
    NO_PACKAGES = "none of the online contributors installs packages"


class Stream(StrEnum):
    STDOUT = "stdout"
    STDERR = "stderr"
    # Notes from Compound itself (output cap reached, job requeued), never from the script.
    SYSTEM = "system"
