"""The contributor protocol of one connection, as a pure state machine: no I/O, no clock.

The socket handler (``contributor_socket``) feeds it every parsed message and does what it
answers; tests drive it without a socket. It owns the protocol's decisions:

- the first message is a hello of our protocol version, or a seed agent's first report (the
  seed dialect: then a hello is made up for it and the connection is ``legacy``);
- a hello after the first message is a protocol error;
- a seed agent's reports name no job, lease or sequence number: they are about the one lease
  it holds, and a seed ``line`` becomes the record after the last one stored;
- what the agent is told: a welcome, acks, abandons — none of which a seed agent understands;
- the ending status of a job from its ``done`` report.

The lease and batch rules themselves are checked where reports are stored
(``storage.job_writes``); a report that breaks them is answered with :class:`ReportRefused`.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from compound.protocol import (
    CLOSE_POLICY,
    CLOSE_PROTOCOL_ERROR,
    PROTOCOL_VERSION,
    Abandon,
    Ack,
    Availability,
    Done,
    Heartbeat,
    Hello,
    JobStatus,
    Log,
    LogRecord,
    ProtocolError,
    Welcome,
)

AgentMessage = Hello | Heartbeat | Log | Done | Availability
Report = Heartbeat | Log | Done | Availability
LEASE_GONE = "lease expired or job ended"
SEED_NAME = "seed agent"


class ReportRefused(ProtocolError):
    """A log or done report broke the lease's rules (close 1008)."""

    def __init__(self, reason: str, job_id: str) -> None:
        super().__init__(reason, CLOSE_POLICY)
        self.job_id = job_id


class Phase(enum.Enum):
    AWAITING_FIRST = "awaiting first message"
    OPEN = "open"


class ContributorConversation:
    """One connection's protocol state: ``open`` with the first message, then ``report``
    for each later one."""

    def __init__(self) -> None:
        self.phase = Phase.AWAITING_FIRST
        # A seed agent: no hello, no sequence numbers, no leases on its side.
        self.legacy = False

    def open(self, first: AgentMessage, seed_node_id: str) -> tuple[Hello, Report | None]:
        """The hello this connection introduces itself with, and the first message's report
        if a seed agent started with one. ``seed_node_id`` names a seed agent (it has no id
        of its own). Raises ProtocolError."""
        if self.phase is not Phase.AWAITING_FIRST:
            raise ProtocolError("hello is only allowed as the first message")
        if isinstance(first, Hello):
            if first.protocol_version != PROTOCOL_VERSION:
                raise ProtocolError(
                    f"unsupported protocol version {first.protocol_version}", CLOSE_PROTOCOL_ERROR
                )
            self.phase = Phase.OPEN
            return first, None
        self.phase = Phase.OPEN
        self.legacy = True
        hello = Hello(
            protocol_version=0, node_id=seed_node_id, name=SEED_NAME, cores=0, memory_bytes=0
        )
        return hello, first

    def report(self, message: AgentMessage) -> Report:
        """A message after the first: anything but a hello. Raises ProtocolError."""
        if self.phase is not Phase.OPEN or isinstance(message, Hello):
            raise ProtocolError("hello is only allowed as the first message")
        return message

    # ------------------------------------------------------------------ the seed dialect

    def needs_next_seq(self, report: Report) -> bool:
        """Whether ``from_seed`` needs the sequence number after the job's last stored one."""
        return self.legacy and isinstance(report, Log) and report.line is not None

    def from_seed(
        self, report: Report, held: Sequence[tuple[str, str]], next_seq: int | None = None
    ) -> Report:
        """A seed agent's report as a v1 one. ``held``: the (job id, lease id) it holds.
        A report on no lease, or one of several, names none (and is refused as such)."""
        if not self.legacy or not isinstance(report, Log | Done):
            return report
        if len(held) != 1:
            return report.model_copy(update={"job_id": None, "lease_id": None})
        job_id, lease_id = held[0]
        if isinstance(report, Done):
            return report.model_copy(update={"job_id": job_id, "lease_id": lease_id})
        records = list(report.records)
        if report.line is not None:
            if next_seq is None:
                raise ValueError("a seed line needs the next sequence number")
            records = [LogRecord(seq=next_seq, stream=report.stream, data=report.line + "\n")]
        return Log(job_id=job_id, lease_id=lease_id, records=records)

    # ------------------------------------------------------------------ answers

    def welcome(
        self, contributor_id: str, heartbeat_interval_s: float, acked: dict[str, int]
    ) -> Welcome | None:
        if self.legacy:
            return None
        return Welcome(
            contributor_id=contributor_id,
            heartbeat_interval_s=heartbeat_interval_s,
            acked=acked,
        )

    def ack(self, job_id: str, seq: int, *, done: bool = False) -> Ack | None:
        return None if self.legacy else Ack(job_id=job_id, seq=seq, done=done)

    def abandon(
        self, job_id: str | None, lease_id: str | None, reason: str = LEASE_GONE
    ) -> Abandon | None:
        """Tell the agent to drop its run of a job under ``lease_id``, which it reports on
        without holding."""
        if self.legacy or job_id is None:
            return None
        return Abandon(job_id=job_id, lease_id=lease_id, reason=reason)


def ending_status(done: Done) -> JobStatus:
    """The status a ``done`` report ends its job with: the one it names if final, else by
    its exit code (0 or none: succeeded)."""
    if done.status is not None and done.status.is_terminal:
        return done.status
    return JobStatus.SUCCEEDED if done.exit_code in (None, 0) else JobStatus.FAILED
