"""Every write of a job's lifecycle, as plain functions of a SQLite connection: the one path.

Create, claim, requeue, finish, fail, cancel, a cancel request, the end of an overdue job, a
note and a log batch: each
runs inside the group writer's transaction (``writer.py``) with statements SQLite prepares
once and caches. They keep the lifecycle's rules in one place: legal moves only
(``protocol.status``), the status in the WHERE clause so a concurrent move loses cleanly, an
event per move, a job RUNNING exactly while it has a lease, and a report accepted only under
the lease it names (one check, in the transaction that stores it).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from compound.coordinator.storage import usage
from compound.coordinator.storage.job_rows import DAMAGED
from compound.coordinator.storage.log_tail import record_size
from compound.coordinator.storage.reports import Violation, check_batch, check_ending
from compound.protocol import IllegalTransition, JobStatus, LogRecord, Stream, check_transition

# A new job's columns, and one row of them: ``JobValues.insert_values`` fills the
# placeholders, the counters start at zero. Shared with the grouped INSERT (``grouped.py``).
NEW_JOB_COLUMNS = (
    "id, status, script, args, env, timeout_s, name, created_at, attempts, cancel_requested,"
    " last_seq, log_bytes, owner, requirements, inputs_sha256, inputs_size, db_bytes,"
    " last_attempt"
)
NEW_JOB_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, 0, false, -1, 0, ?, ?, ?, ?, ?, 0)"
_INSERT_JOB = f"INSERT INTO jobs ({NEW_JOB_COLUMNS}) VALUES {NEW_JOB_ROW} RETURNING *"
_INSERT_EVENT = "INSERT INTO job_events (job_id, status, at, reason) VALUES (?, ?, ?, ?)"
_SELECT_JOB = "SELECT * FROM jobs WHERE id = ?"
# Several coordinators on one PostgreSQL: a queued row another one is claiming right now is
# left to it (SKIP LOCKED), never waited for (its group transaction may hold other rows).
_SELECT_QUEUED_UNLOCKED = (
    "SELECT * FROM jobs WHERE id = ? AND status = 'queued' FOR UPDATE SKIP LOCKED"
)
_INSERT_LEASE = (
    "INSERT INTO leases (job_id, lease_id, holder, first_seq, granted_at, expires_at)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
_LEASE_HELD = "SELECT 1 FROM leases WHERE job_id = ? AND lease_id = ?"
# The job's row if ``holder`` holds it under that lease: one statement for the two reads.
_SELECT_LEASED_JOB = (
    "SELECT jobs.* FROM jobs JOIN leases ON leases.job_id = jobs.id"
    " WHERE jobs.id = ? AND leases.lease_id = ? AND leases.holder = ?"
)
# PostgreSQL runs the writes that follow a move (or a new job's row) in the statement that
# makes it (data-modifying CTEs): one round trip and one statement's overhead in place of
# two or three. SQLite has no round trips, nor such CTEs: it runs them one by one.
_PG_EVENT = (
    ", event AS (INSERT INTO job_events (job_id, status, at, reason)"
    " SELECT id, status, ?, ? FROM changed)"
)
_PG_DROP_LEASE = ", lease AS (DELETE FROM leases WHERE job_id IN (SELECT id FROM changed))"
_LEASE_FIRST_SEQ = "SELECT first_seq FROM leases WHERE job_id = ? AND lease_id = ? AND holder = ?"
INSERT_RECORD = (
    "INSERT OR IGNORE INTO log_records (job_id, seq, stream, size, data, attempt)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)


@dataclass(frozen=True)
class JobValues:
    """A new job's columns, already encoded for the row."""

    id: str
    script: str
    args: str
    env: str
    timeout_s: float | None
    name: str | None
    owner: str | None
    requirements: str
    inputs_sha256: str | None
    inputs_size: int | None

    @property
    def db_bytes(self) -> int:
        """What the row charges its owner: its free-form columns, which retention clears."""
        return sum(len(text.encode()) for text in (self.script, self.args, self.env))

    def insert_values(self, created_at: float) -> tuple[Any, ...]:
        """The values of ``NEW_JOB_ROW``'s placeholders, in order: the job queued now."""
        return (
            self.id,
            JobStatus.QUEUED.value,
            self.script,
            self.args,
            self.env,
            self.timeout_s,
            self.name,
            created_at,
            self.owner,
            self.requirements,
            self.inputs_sha256,
            self.inputs_size,
            self.db_bytes,
        )


def insert_job(
    conn: sqlite3.Connection,
    job: JobValues,
    limits: usage.StoreLimits | None = None,
    database_bytes: int = 0,
) -> sqlite3.Row | str:
    """Queue a new job, charged to its owner; the reason instead if a quota refuses it
    (``usage.job_refusal``, checked in the transaction that would store it)."""
    db_bytes = job.db_bytes
    if limits is not None:
        refusal = usage.job_refusal(conn, job.owner, limits, db_bytes, database_bytes)
        if refusal is not None:
            return refusal
    now = time.time()
    pg = _on_postgresql(conn)
    # RETURNING: the stored row without a SELECT after it (fetchall ends the statement).
    rows: list[sqlite3.Row] = conn.execute(
        f"WITH changed AS ({_INSERT_JOB}){_PG_EVENT} SELECT * FROM changed" if pg else _INSERT_JOB,
        (*job.insert_values(now), *((now, "submitted") if pg else ())),
    ).fetchall()
    if not pg:
        conn.execute(_INSERT_EVENT, (job.id, JobStatus.QUEUED.value, now, "submitted"))
    usage.charge(conn, job.owner, jobs=1, db_bytes=db_bytes)
    return rows[0]


def select_job(conn: sqlite3.Connection, job_id: str) -> sqlite3.Row:
    row: sqlite3.Row | None = conn.execute(_SELECT_JOB, (job_id,)).fetchone()
    if row is None:
        raise KeyError(job_id)
    return row


def damaged(row: sqlite3.Row) -> str | None:
    """Why a stored row cannot be run, if it cannot (its JSON columns do not parse)."""
    try:
        json.loads(row["args"]), json.loads(row["env"]), json.loads(row["requirements"])
    except ValueError:
        return DAMAGED
    return None


@dataclass(frozen=True)
class Claimed:
    row: sqlite3.Row
    first_seq: int  # the first sequence number this attempt reports


def claim_job(
    conn: sqlite3.Connection,
    job_id: str,
    holder: str,
    lease_id: str,
    expires_at: float,
    skip_locked: bool = False,
) -> Claimed | str | None:
    """Run queued job ``job_id`` under a new lease. None if it is no longer queued (or,
    ``skip_locked``, on PostgreSQL, if another transaction holds its row: another
    coordinator's claim); the reason, after failing it, if its row cannot be run."""
    if skip_locked:
        row = conn.execute(_SELECT_QUEUED_UNLOCKED, (job_id,)).fetchone()
        if row is None:
            return None
    else:
        row = select_job(conn, job_id)
    if row["status"] != JobStatus.QUEUED.value:
        return None
    problem = damaged(row)
    if problem is not None:
        move(conn, row, JobStatus.FAILED, problem, error=problem)
        return problem
    first_seq = row["last_seq"] + 1
    claimed = move(
        conn,
        row,
        JobStatus.RUNNING,
        f"assigned to {holder}",
        contributor_id=holder,
        attempts=row["attempts"] + 1,
        last_attempt=row["last_attempt"] + 1,
        started_at=row["started_at"] or time.time(),
    )
    conn.execute(_INSERT_LEASE, (job_id, lease_id, holder, first_seq, time.time(), expires_at))
    return Claimed(claimed, first_seq)


def finish_job(
    conn: sqlite3.Connection,
    job_id: str,
    lease_id: str,
    holder: str,
    status: JobStatus,
    exit_code: int | None,
    error: str | None,
    last_seq: int | None,
) -> sqlite3.Row | Violation | None:
    """End a running job as ``holder`` of ``lease_id`` reported; None if that lease is not
    current, a Violation if records it announced never arrived."""
    row = conn.execute(_SELECT_LEASED_JOB, (job_id, lease_id, holder)).fetchone()
    if row is None:
        return None
    violation = check_ending(last_seq, row["last_seq"])
    if violation is not None:
        return violation
    return move(conn, row, status, error, exit_code=exit_code, error=error)


def move(
    conn: sqlite3.Connection, row: sqlite3.Row, target: JobStatus, reason: str | None, **fields: Any
) -> sqlite3.Row:
    """The one status move of this module: legal, atomic, recorded, lease kept in step."""
    current = JobStatus(row["status"])
    check_transition(current, target)
    now = time.time()
    if target.is_terminal:
        fields.setdefault("finished_at", now)
    # Column names come from this module's callers only, never from a request.
    assignments = ", ".join(f"{name} = ?" for name in ["status", *fields])
    update = f"UPDATE jobs SET {assignments} WHERE id = ? AND status = ? RETURNING *"
    params = (target.value, *fields.values(), row["id"], current.value)
    if _on_postgresql(conn):
        drop = _PG_DROP_LEASE if current is JobStatus.RUNNING else ""
        update = f"WITH changed AS ({update}){drop}{_PG_EVENT} SELECT * FROM changed"
        params = (*params, now, reason)
    # RETURNING: the moved row without a SELECT (the statements after it leave it as is).
    moved: list[sqlite3.Row] = conn.execute(update, params).fetchall()
    if len(moved) != 1:
        raise IllegalTransition(current, target)
    if _on_postgresql(conn):
        return moved[0]
    if current is JobStatus.RUNNING:
        conn.execute("DELETE FROM leases WHERE job_id = ?", (row["id"],))
    conn.execute(_INSERT_EVENT, (row["id"], target.value, now, reason))
    return moved[0]


def _on_postgresql(conn: sqlite3.Connection) -> bool:
    """Whether ``conn`` is PostgreSQL's (``backend.PgConnection``), not SQLite's."""
    return bool(getattr(conn, "postgresql", False))


@dataclass(frozen=True)
class Noted:
    record: LogRecord
    size: int


@dataclass(frozen=True)
class Moved:
    row: sqlite3.Row
    note: Noted | None  # the SYSTEM record written with the move, if any


def requeue_job(
    conn: sqlite3.Connection, job_id: str, reason: str, note: str | None, count_attempt: bool
) -> Moved | None:
    """Put a running job back in the queue, its lease gone; None if it is not running. When
    the job was not at fault (``count_attempt`` false) its attempt is given back. ``note``
    (why, in a sentence) is written as "[compound] attempt N: note"."""
    row = select_job(conn, job_id)
    if row["status"] != JobStatus.RUNNING.value:
        return None
    # The note names the attempt that ended: ``note`` says why, after "[compound] ".
    text = f"[compound] attempt {row['last_attempt']}: {note}" if note is not None else None
    noted = insert_note(conn, job_id, text) if text is not None else None
    attempts = row["attempts"] if count_attempt else max(0, row["attempts"] - 1)
    moved = move(conn, row, JobStatus.QUEUED, reason, contributor_id=None, attempts=attempts)
    return Moved(moved, noted)


# The reason recorded with a hand-back's move back to the queue: hand-backs are counted by it.
HANDED_BACK = "handed back"
_COUNT_HANDBACKS = (
    "SELECT COUNT(*) FROM job_events WHERE job_id = ? AND status = 'queued' AND reason LIKE ?"
)


def hand_back_job(
    conn: sqlite3.Connection,
    job_id: str,
    reason: str,
    max_handbacks: int,
    lease: tuple[str, str] | None = None,
    last_seq: int | None = None,
) -> Moved | Violation | None:
    """Requeue a running job whose contributor gave it up (leaving, or restarted without
    it): not the job's fault, so its attempt is given back. ``lease``: (lease id, holder)
    it must still be under, else None; ``last_seq``: records it announced, which must have
    arrived. Past ``max_handbacks`` hand-backs the job fails instead, so none loops for ever."""
    if lease is not None and conn.execute(_LEASE_FIRST_SEQ, (job_id, *lease)).fetchone() is None:
        return None
    row = select_job(conn, job_id)
    if row["status"] != JobStatus.RUNNING.value:
        return None
    if last_seq is not None and (violation := check_ending(last_seq, row["last_seq"])):
        return violation
    handbacks = conn.execute(_COUNT_HANDBACKS, (job_id, f"{HANDED_BACK}%")).fetchone()[0]
    attempt = row["last_attempt"]
    if handbacks >= max_handbacks:
        error = f"handed back {handbacks + 1} times by contributors that left; not run again"
        noted = insert_note(conn, job_id, f"[compound] attempt {attempt}: {reason}; {error}")
        return Moved(move(conn, row, JobStatus.FAILED, error, error=error), noted)
    noted = insert_note(
        conn,
        job_id,
        f"[compound] attempt {attempt} handed back ({reason}); the job is queued again",
    )
    moved = move(
        conn,
        row,
        JobStatus.QUEUED,
        f"{HANDED_BACK}: {reason}",
        contributor_id=None,
        attempts=max(0, row["attempts"] - 1),
    )
    return Moved(moved, noted)


def fail_job(
    conn: sqlite3.Connection, job_id: str, reason: str, error: str, note: str | None
) -> Moved | None:
    """Fail a queued or running job with ``error``; None if it already ended."""
    row = select_job(conn, job_id)
    if JobStatus(row["status"]).is_terminal:
        return None
    noted = insert_note(conn, job_id, note) if note is not None else None
    return Moved(move(conn, row, JobStatus.FAILED, reason, error=error), noted)


def cancel_job(
    conn: sqlite3.Connection, job_id: str, reason: str, error: str | None
) -> sqlite3.Row | None:
    """Cancel a queued job, or a running one at once; None if it already ended."""
    row = select_job(conn, job_id)
    if JobStatus(row["status"]).is_terminal:
        return None
    return move(conn, row, JobStatus.CANCELLED, reason, error=error)


def end_overdue(
    conn: sqlite3.Connection,
    job_id: str,
    lease_id: str,
    status: JobStatus,
    reason: str,
    error: str,
    note: str,
) -> Moved | None:
    """End a running job whose deadline passed without its agent reporting (``status``
    timed out or cancelled), with a note saying so; None if ``lease_id`` no longer holds it
    (its agent's report came first, or it was requeued)."""
    if conn.execute(_LEASE_HELD, (job_id, lease_id)).fetchone() is None:
        return None
    row = select_job(conn, job_id)
    noted = insert_note(conn, job_id, note)
    return Moved(move(conn, row, status, reason, error=error), noted)


def request_cancel(conn: sqlite3.Connection, job_id: str) -> sqlite3.Row:
    """Mark a job as to be cancelled (its contributor is asked to stop it)."""
    rows: list[sqlite3.Row] = conn.execute(
        "UPDATE jobs SET cancel_requested = true WHERE id = ? RETURNING *", (job_id,)
    ).fetchall()
    if not rows:
        raise KeyError(job_id)
    return rows[0]


def insert_note(conn: sqlite3.Connection, job_id: str, text: str) -> Noted:
    """A SYSTEM record after the job's last one, numbered inside the transaction that stores
    it, so no other record can take its sequence number."""
    row = conn.execute("SELECT last_seq, last_attempt FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        raise KeyError(job_id)
    # Written before a move: it belongs to the attempt that is ending (the first, if none ran).
    attempt = max(1, int(row[1]))
    note = LogRecord(seq=row[0] + 1, stream=Stream.SYSTEM, data=text + "\n", attempt=attempt)
    size = record_size(note)
    conn.execute(INSERT_RECORD, (job_id, note.seq, note.stream.value, size, note.data, attempt))
    conn.execute("UPDATE jobs SET last_seq = ? WHERE id = ?", (note.seq, job_id))
    return Noted(note, size)


@dataclass(frozen=True)
class Appended:
    last_seq: int  # to acknowledge
    kept: list[LogRecord]  # stored (the rest was over the job's quota or seen before)
    kept_sizes: list[int]


def append_records(
    conn: sqlite3.Connection,
    job_id: str,
    lease_id: str,
    holder: str,
    records: Sequence[LogRecord],
    max_log_bytes: int,
    limits: usage.StoreLimits | None = None,
) -> Appended | Violation | None:
    """Store a batch of records ``holder`` reported under ``lease_id`` (see
    ``LogStore.append``); None if that lease is not current. The bytes stored are charged
    to the job's owner; past the owner's room (``usage.db_room``) the job stores no more."""
    first_seq = conn.execute(_LEASE_FIRST_SEQ, (job_id, lease_id, holder)).fetchone()
    if first_seq is None:
        return None
    row = conn.execute(
        "SELECT last_seq, log_bytes, owner, last_attempt FROM jobs WHERE id = ?", (job_id,)
    ).fetchone()
    verdict = check_batch(records, row["last_seq"], first_seq[0])
    if isinstance(verdict, Violation):
        return verdict
    fresh = verdict.records
    if not fresh:
        return Appended(int(row["last_seq"]), [], [])
    sizes = [record_size(record) for record in fresh]
    stored = int(row["log_bytes"])
    limit, note = max_log_bytes, _job_log_note(max_log_bytes)
    if limits is not None and stored <= max_log_bytes:
        owner_room = usage.db_room(conn, row["owner"], limits)
        if stored + owner_room.bytes < max_log_bytes:
            limit = stored + max(0, owner_room.bytes)
            note = f"[compound] {owner_room.reason}; this job's further output is dropped\n"
    kept, kept_sizes, capped = within_quota(fresh, sizes, stored, limit, note)
    # The lease is current, so the job's latest attempt is the one reporting.
    attempt = int(row["last_attempt"])
    kept = [with_attempt(record, attempt) for record in kept]
    conn.executemany(
        INSERT_RECORD,
        [
            (job_id, r.seq, r.stream.value, size, r.data, attempt)
            for r, size in zip(kept, kept_sizes, strict=True)
        ],
    )
    last_seq = fresh[-1].seq
    added = sum(kept_sizes)
    # Past a limit, log_bytes is max_log_bytes + 1 for good: nothing more is stored.
    log_bytes = max_log_bytes + 1 if capped else stored + added
    conn.execute(
        "UPDATE jobs SET last_seq = ?, log_bytes = ?, db_bytes = db_bytes + ? WHERE id = ?",
        (last_seq, log_bytes, added, job_id),
    )
    usage.charge(conn, row["owner"], db_bytes=added)
    return Appended(last_seq, kept, kept_sizes)


def with_attempt(record: LogRecord, attempt: int) -> LogRecord:
    """``record`` as stored: marked with its attempt (whatever the agent may have said)."""
    if record.attempt == attempt:
        return record
    # model_construct: the fields were validated on the way in; this runs per record.
    return LogRecord.model_construct(
        seq=record.seq, stream=record.stream, data=record.data, attempt=attempt
    )


def _job_log_note(max_bytes: int) -> str:
    return (
        f"[compound] this job's log reached the coordinator's limit of "
        f"{max_bytes // (1024 * 1024)} MiB; further output is dropped\n"
    )


def within_quota(
    records: Sequence[LogRecord],
    sizes: Sequence[int],
    stored_bytes: int,
    max_bytes: int,
    note_text: str,
) -> tuple[list[LogRecord], list[int], bool]:
    """The records to store under a job's log limit, their sizes, and whether the limit was
    reached (nothing is stored for the job after this batch).

    The first record over the limit is replaced by one note (``note_text``); ``stored_bytes``
    past ``max_bytes`` means that note was written already and nothing more is stored.
    """
    if stored_bytes > max_bytes:
        return [], [], True
    kept: list[LogRecord] = []
    kept_sizes: list[int] = []
    total = stored_bytes
    for record, size in zip(records, sizes, strict=True):
        if total + size > max_bytes:
            note = LogRecord(seq=record.seq, stream=Stream.SYSTEM, data=note_text)
            kept.append(note)
            kept_sizes.append(record_size(note))
            return kept, kept_sizes, True
        kept.append(record)
        kept_sizes.append(size)
        total += size
    return kept, kept_sizes, False
