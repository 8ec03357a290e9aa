"""The rules a contributor's log batch must follow, as pure functions (no I/O, no clock).

A batch is accepted only if its sequence numbers are strictly increasing, contiguous with
each other and with what is stored for the job, start no lower than the lease's first
number, and fit in a signed 64-bit integer. A batch that was already stored (a resend after
a reconnect) is acknowledged and ignored; a batch that overlaps what is stored keeps only
its new part. Anything else is a violation: nothing of it is stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from compound.protocol import MAX_INT64, LogRecord


@dataclass(frozen=True)
class Accept:
    """Store ``records`` (possibly none: everything was stored already)."""

    records: Sequence[LogRecord]


@dataclass(frozen=True)
class Violation:
    reason: str


def check_batch(
    records: Sequence[LogRecord], stored_last_seq: int, first_seq: int
) -> Accept | Violation:
    """Judge one batch against what is stored (``stored_last_seq``) and the lease."""
    if not records:
        return Accept(())
    start = records[0].seq
    for offset, record in enumerate(records):
        if record.seq > MAX_INT64:
            return Violation("sequence number out of range")
        if record.seq != start + offset:
            return Violation("sequence numbers in a batch must be consecutive")
    if start < first_seq:
        return Violation(f"sequence numbers of this lease start at {first_seq}")
    if start > stored_last_seq + 1:
        return Violation(f"sequence gap: expected {stored_last_seq + 1}, got {start}")
    fresh_from = stored_last_seq + 1 - start
    return Accept(records[fresh_from:])


def check_ending(last_seq: int | None, stored_last_seq: int) -> Violation | None:
    """A job may end only once every record it announced has arrived."""
    if last_seq is not None and last_seq > stored_last_seq:
        return Violation(
            f"job ended at record {last_seq} but only {stored_last_seq + 1} records arrived"
        )
    return None
