"""The hot lifecycle writes (create, claim, finish) as plain functions of a SQLite connection.

They run inside the group writer's transaction (``writer.py``), one SAVEPOINT each, with
statements SQLite prepares once and caches: no statement building per job. They keep the
store's rules: legal moves only (``protocol.status``), the status in the WHERE clause so a
concurrent move loses cleanly, an event per move, a job RUNNING exactly while it has a lease.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from compound.coordinator.leases import Lease
from compound.coordinator.reports import Violation, check_ending
from compound.protocol import IllegalTransition, JobStatus, check_transition

_INSERT_JOB = (
    "INSERT INTO jobs (id, status, script, args, env, timeout_s, name, created_at, attempts,"
    " cancel_requested, last_seq, log_bytes, owner, requirements, inputs_sha256, inputs_size)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, 0, -1, 0, ?, ?, ?, ?)"
)
_INSERT_EVENT = "INSERT INTO job_events (job_id, status, at, reason) VALUES (?, ?, ?, ?)"
_SELECT_JOB = "SELECT * FROM jobs WHERE id = ?"
_INSERT_LEASE = (
    "INSERT INTO leases (job_id, lease_id, holder, first_seq, granted_at, expires_at)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
_LEASE_FIRST_SEQ = "SELECT first_seq FROM leases WHERE job_id = ? AND lease_id = ?"


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


def insert_job(conn: sqlite3.Connection, job: JobValues) -> sqlite3.Row:
    now = time.time()
    conn.execute(
        _INSERT_JOB,
        (
            job.id,
            JobStatus.QUEUED.value,
            job.script,
            job.args,
            job.env,
            job.timeout_s,
            job.name,
            now,
            job.owner,
            job.requirements,
            job.inputs_sha256,
            job.inputs_size,
        ),
    )
    conn.execute(_INSERT_EVENT, (job.id, JobStatus.QUEUED.value, now, "submitted"))
    return select_job(conn, job.id)


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
        return "the stored job cannot be read (its arguments or environment)"
    return None


def claim_job(
    conn: sqlite3.Connection, job_id: str, holder: str, lease_id: str, expires_at: float
) -> tuple[sqlite3.Row, Lease] | str | None:
    """Run queued job ``job_id`` under a new lease. None if it is no longer queued; the
    reason, after failing it, if its row cannot be run."""
    row = select_job(conn, job_id)
    if row["status"] != JobStatus.QUEUED.value:
        return None
    problem = damaged(row)
    if problem is not None:
        move(conn, row, JobStatus.FAILED, problem, error=problem)
        return problem
    lease = Lease(job_id, lease_id, holder, row["last_seq"] + 1, expires_at)
    claimed = move(
        conn,
        row,
        JobStatus.RUNNING,
        f"assigned to {holder}",
        contributor_id=holder,
        attempts=row["attempts"] + 1,
        started_at=row["started_at"] or time.time(),
    )
    conn.execute(
        _INSERT_LEASE, (job_id, lease_id, holder, lease.first_seq, time.time(), expires_at)
    )
    return claimed, lease


def finish_job(
    conn: sqlite3.Connection,
    job_id: str,
    lease_id: str,
    status: JobStatus,
    exit_code: int | None,
    error: str | None,
    last_seq: int | None,
) -> sqlite3.Row | Violation | None:
    """End a running job as the holder of ``lease_id`` reported; None if that lease is not
    current, a Violation if records it announced never arrived."""
    if conn.execute(_LEASE_FIRST_SEQ, (job_id, lease_id)).fetchone() is None:
        return None
    row = select_job(conn, job_id)
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
    cursor = conn.execute(
        f"UPDATE jobs SET {assignments} WHERE id = ? AND status = ?",
        (target.value, *fields.values(), row["id"], current.value),
    )
    if cursor.rowcount != 1:
        raise IllegalTransition(current, target)
    if current is JobStatus.RUNNING:
        conn.execute("DELETE FROM leases WHERE job_id = ?", (row["id"],))
    conn.execute(_INSERT_EVENT, (row["id"], target.value, now, reason))
    return select_job(conn, row["id"])
