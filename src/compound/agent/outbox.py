"""Log records the coordinator has not acknowledged yet, per job.

Records stay here until acknowledged; after a reconnect everything unacknowledged is sent
again (the coordinator ignores what it already has), so nothing is lost or duplicated.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from compound.protocol import Done, Lending, LogRecord

MAX_BATCH_RECORDS = 2000
MAX_BATCH_CHARS = 1024 * 1024
# A partial batch goes out at most this often per job while its output keeps coming. The
# coordinator's cost is mostly per message (a transaction, an ack, a wake-up of each
# follower): with the ack round trip at ~2 ms, 100,000 lines went out as ~250 messages of
# one line or so each, and that work took the CPU the job and the engine needed to produce
# the output in the first place. Held output is at most this late; the last of a job's
# output is not held (``output_over``).
PARTIAL_BATCH_INTERVAL_S = 0.025
_WAKE_LATE_S = 0.001


@dataclass
class JobLog:
    job_id: str
    lease_id: str
    records: list[LogRecord] = field(default_factory=list)
    acked_seq: int = -1
    sent_seq: int = -1
    # The job's ending, set once all its records are in ``records``; sent after them.
    ending: Done | None = None
    ending_sent: bool = False
    # Turns the job's gathered output into records (OutputCollector.drain). Called only
    # when nothing is in flight, so output written while a batch awaits its ack joins the
    # same records instead of making a record per write: it could not go out sooner.
    gather: Callable[[], None] | None = None
    # Event-loop time at which the last partial batch was sent (see PARTIAL_BATCH_INTERVAL_S).
    partial_sent_at: float = -math.inf
    # The job's output has ended: nothing more can join a held batch, so none is held.
    output_over: bool = False

    @property
    def partial_due_at(self) -> float:
        """When a partial batch may go (if nothing is in flight then)."""
        return -math.inf if self.output_over else self.partial_sent_at + PARTIAL_BATCH_INTERVAL_S

    def pending_batch(self, now: float) -> list[LogRecord]:
        """The next records not yet sent on this connection, bounded in count and size."""
        # Gathered output becomes records only once they can go: what comes meanwhile joins
        # the same records rather than making a record per write.
        idle = self.sent_seq <= self.acked_seq
        if self.gather is not None and idle and now >= self.partial_due_at:
            self.gather()
        # Records are contiguous by seq, so the first unsent one is found by arithmetic.
        start = max(0, self.sent_seq + 1 - self.records[0].seq) if self.records else 0
        batch: list[LogRecord] = []
        size = 0
        for record in self.records[start : start + MAX_BATCH_RECORDS]:
            if batch and size + len(record.data) > MAX_BATCH_CHARS:
                break
            batch.append(record)
            size += len(record.data)
        return batch

    def may_send(self, batch: list[LogRecord], now: float) -> bool:
        """Whether ``batch`` (from ``pending_batch``) goes now or waits for an ack or for
        ``partial_due_at``.

        The coordinator stores each Log message in its own transaction, acks it and wakes
        the job's followers: most of a message's cost is fixed, whatever its size. A job's
        output arrives a line at a time (it runs unbuffered), so shipping whatever was
        pending at once sent hundreds of 1-record messages when the agent kept pace with
        the job, and the coordinator worked through them for seconds after the job ended
        (and keepalive pings waited behind them). So a partial batch waits until everything
        sent before it is acknowledged, gathering the records that arrive meanwhile: at most
        one such message per round trip, and at most one per PARTIAL_BATCH_INTERVAL_S. A
        full batch never waits.
        """
        if batch[-1].seq < self.records[-1].seq:
            return True  # full: cut by a cap, more follow
        if self.sent_seq > self.acked_seq:
            return False  # in flight
        return now >= self.partial_due_at

    def mark_sent(self, batch: list[LogRecord], now: float) -> None:
        """``batch`` goes out now (a lost connection rewinds it anyway: Outbox.rewind)."""
        if batch[-1].seq == self.records[-1].seq:
            self.partial_sent_at = now
        self.sent_seq = batch[-1].seq

    def acknowledge(self, seq: int) -> None:
        self.acked_seq = max(self.acked_seq, seq)
        self.sent_seq = max(self.sent_seq, self.acked_seq)
        if self.records and self.records[0].seq <= self.acked_seq:
            del self.records[: self.acked_seq + 1 - self.records[0].seq]


class Outbox:
    def __init__(self) -> None:
        self.jobs: dict[str, JobLog] = {}
        self.changed = asyncio.Event()
        # Set while no job is held: every record and ending has been acknowledged.
        self.empty = asyncio.Event()
        self.empty.set()
        self._wake: asyncio.TimerHandle | None = None
        # What the agent lends now, and why; every connection says it (hello, then changes).
        self.lending: Lending = Lending.ACTIVE
        self.lending_reason: str | None = None
        self.lending_changes = 0  # how many times it changed: a connection sends each change
        # Jobs it runs at once, once its donor changed it live (None: the agent's setting).
        self.slots: int | None = None

    def lend(self, lending: Lending, reason: str | None = None) -> None:
        """What the agent lends changed: the connection tells the coordinator."""
        if (lending, reason) == (self.lending, self.lending_reason):
            return
        self.lending, self.lending_reason = lending, reason
        self.lending_changes += 1
        self.changed.set()

    def lend_slots(self, slots: int) -> None:
        """The donor changed how many jobs run at once: the connection tells the coordinator."""
        if slots != self.slots:
            self.slots = slots
            self.lending_changes += 1
            self.changed.set()

    @property
    def handing_back(self) -> str | None:
        """Why a job given now goes straight back (the agent is stopping), if it does."""
        return self.lending_reason if self.lending is Lending.DRAINING else None

    def wake_at(self, when: float) -> None:
        """Set ``changed`` at event-loop time ``when`` (a held partial batch is due)."""
        if self._wake is not None and not self._wake.cancelled() and self._wake.when() <= when:
            return
        if self._wake is not None:
            self._wake.cancel()
        # Just past ``when``: the loop runs a timer up to its clock's resolution early.
        self._wake = asyncio.get_running_loop().call_at(when + _WAKE_LATE_S, self._woken)

    def _woken(self) -> None:
        self._wake = None
        self.changed.set()

    def open(self, job_id: str, lease_id: str, first_seq: int) -> JobLog:
        job = JobLog(job_id, lease_id, acked_seq=first_seq - 1, sent_seq=first_seq - 1)
        self.jobs[job_id] = job
        self.empty.clear()
        return job

    def add_to(self, job_log: JobLog | None, record: LogRecord) -> None:
        """Add ``record`` to ``job_log`` while it is still the job's current log: output of
        an execution the coordinator took away (the job may come back to this agent under a
        new lease, with a new log) must never land in its successor's."""
        if job_log is not None and self.jobs.get(job_log.job_id) is job_log:
            job_log.records.append(record)
            self.changed.set()

    def add(self, job_id: str, record: LogRecord) -> None:
        job = self.jobs.get(job_id)
        if job is not None:
            job.records.append(record)
            self.changed.set()

    def rewind(self) -> None:
        """A new connection: everything unacknowledged must be sent again."""
        for job in self.jobs.values():
            job.sent_seq = job.acked_seq
            job.ending_sent = False
        self.changed.set()

    def forget(self, job_id: str) -> None:
        self.jobs.pop(job_id, None)
        if not self.jobs:
            self.empty.set()
