"""Log records the coordinator has not acknowledged yet, per job.

Records stay here until acknowledged; after a reconnect everything unacknowledged is sent
again (the coordinator ignores what it already has), so nothing is lost or duplicated.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from compound.protocol import Done, LogRecord

MAX_BATCH_RECORDS = 2000
MAX_BATCH_CHARS = 1024 * 1024


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

    def pending_batch(self) -> list[LogRecord]:
        """The next records not yet sent on this connection, bounded in count and size."""
        if self.gather is not None and self.sent_seq <= self.acked_seq:
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

    def may_send(self, batch: list[LogRecord]) -> bool:
        """Whether ``batch`` (from ``pending_batch``) goes now or waits for an ack.

        The coordinator stores each Log message in its own transaction, acks it and wakes
        the job's followers: most of a message's cost is fixed, whatever its size. A job's
        output arrives a line at a time (it runs unbuffered), so shipping whatever was
        pending at once sent hundreds of 1-record messages when the agent kept pace with
        the job, and the coordinator worked through them for seconds after the job ended
        (and keepalive pings waited behind them). So a partial batch waits until everything
        sent before it is acknowledged, gathering the records that arrive meanwhile: at most
        one such message per round trip. A full batch never waits.
        """
        if self.sent_seq <= self.acked_seq:
            return True  # nothing in flight
        return batch[-1].seq < self.records[-1].seq  # full: cut by a cap, more follow

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

    def open(self, job_id: str, lease_id: str, first_seq: int) -> JobLog:
        job = JobLog(job_id, lease_id, acked_seq=first_seq - 1, sent_seq=first_seq - 1)
        self.jobs[job_id] = job
        self.empty.clear()
        return job

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
