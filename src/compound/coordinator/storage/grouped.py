"""A group transaction's creates, claims and endings written a kind at a time (PostgreSQL).

On PostgreSQL each statement of the group writer is a round trip its one connection waits
for; a job costs about ten. Here the operations of one transaction that are new jobs
(``job_writes.insert_job``), claims (``claim_job``) or endings (``finish_job``) run as a few
statements per kind, whatever their number: the claims' rows locked in one SELECT, moved,
recorded and leased in one UPDATE; the endings' leases checked in one SELECT, moved,
unleased and recorded in one UPDATE; the new jobs' quotas read in one SELECT, inserted with
their events in one INSERT, charged in one upsert. Each keeps its single form's rules: the
status in the WHERE clause, an event per move, the lease created or dropped with the move,
the quota checked against the counts as the earlier jobs of the group left them.

The order of a job's own moves holds: the transaction's operations are cut into segments in
which no job appears twice and which no other operation crosses; a segment's operations act
on distinct jobs, so running them by kind changes nothing but the round trips. Anything
unusual (a damaged row, a quota near the global cap, an illegal move) raises or is handed
to the single form; the writer then runs the whole transaction again, each operation alone
in its own savepoint (``writer._run_batch``): the same outcome as before, only slower.
SQLite, with no round trips, runs every operation alone as it always did.
"""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any

from compound.coordinator.storage import job_writes, usage
from compound.coordinator.storage.reports import check_ending
from compound.protocol import IllegalTransition, JobStatus, check_transition

Operation = Callable[[sqlite3.Connection], Any]
# A kind's grouped form: its operations' keyword arguments in, their results out, in order.
Grouped = Callable[[sqlite3.Connection, list[dict[str, Any]]], list[Any]]


class _Pending:
    """A place in a group's results, filled with the row its statement returns."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id


class _Single(Exception):
    """This group needs the single form (a case the grouped one does not cover)."""


def run(conn: sqlite3.Connection, operations: Sequence[Operation]) -> list[Any]:
    """Each operation's result, run on ``conn`` in one transaction (already begun)."""
    if not getattr(conn, "postgresql", False):
        return [operation(conn) for operation in operations]
    results: list[Any] = [None] * len(operations)
    segment: dict[Grouped, list[int]] = {}
    jobs: set[str] = set()

    def flush() -> None:
        for grouped, indexes in segment.items():
            if len(indexes) == 1:
                results[indexes[0]] = operations[indexes[0]](conn)
                continue
            kwargs = [_keywords(operations[index]) for index in indexes]
            try:
                values = grouped(conn, kwargs)
            except _Single:
                values = [operations[index](conn) for index in indexes]
            for index, value in zip(indexes, values, strict=True):
                results[index] = value
        segment.clear()
        jobs.clear()

    for index, operation in enumerate(operations):
        kind = _kind(operation)
        if kind is None:
            flush()
            results[index] = operation(conn)
            continue
        grouped, job_id = kind
        if job_id in jobs:
            flush()
        jobs.add(job_id)
        segment.setdefault(grouped, []).append(index)
    flush()
    return results


def _keywords(operation: Operation) -> dict[str, Any]:
    assert isinstance(operation, functools.partial)
    return operation.keywords


def _kind(operation: Operation) -> tuple[Grouped, str] | None:
    """The grouped form of ``operation`` and the job it acts on, if it has one."""
    if not isinstance(operation, functools.partial) or operation.args:
        return None
    keywords = operation.keywords
    if operation.func is job_writes.claim_job and keywords.get("skip_locked"):
        return claim_jobs, keywords["job_id"]
    if operation.func is job_writes.finish_job:
        return finish_jobs, keywords["job_id"]
    if operation.func is job_writes.insert_job:
        return insert_jobs, keywords["job"].id
    return None


def _values(row_count: int, template: str) -> str:
    return ", ".join([template] * row_count)


# ------------------------------------------------------------------ claims

_LOCK_QUEUED = "SELECT * FROM jobs WHERE id = ANY(?) AND status = 'queued' FOR UPDATE SKIP LOCKED"
_CLAIM = (
    "WITH v (id, holder, attempts, last_attempt, started_at, reason, lease_id, first_seq,"
    " expires_at) AS (VALUES {values}),"
    " changed AS (UPDATE jobs SET status = 'running', contributor_id = v.holder,"
    " attempts = v.attempts, last_attempt = v.last_attempt, started_at = v.started_at"
    " FROM v WHERE jobs.id = v.id AND jobs.status = 'queued' RETURNING jobs.*),"
    " event AS (INSERT INTO job_events (job_id, status, at, reason)"
    " SELECT changed.id, changed.status, ?, v.reason FROM changed JOIN v ON v.id = changed.id),"
    " lease AS (INSERT INTO leases (job_id, lease_id, holder, first_seq, granted_at, expires_at)"
    " SELECT v.id, v.lease_id, v.holder, v.first_seq, ?, v.expires_at"
    " FROM v JOIN changed ON changed.id = v.id)"
    " SELECT * FROM changed"
)
_CLAIM_ROW = (
    "(?::text, ?::text, ?::integer, ?::integer, ?::double precision, ?::text, ?::text,"
    " ?::bigint, ?::double precision)"
)


def claim_jobs(conn: sqlite3.Connection, claims: list[dict[str, Any]]) -> list[Any]:
    """``job_writes.claim_job`` (``skip_locked``) for each of ``claims``, on distinct jobs."""
    locked = conn.execute(_LOCK_QUEUED, ([claim["job_id"] for claim in claims],)).fetchall()
    rows = {row["id"]: row for row in locked}
    if any(job_writes.damaged(row) is not None for row in rows.values()):
        raise _Single
    now = time.time()
    params: list[Any] = []
    taken = [claim for claim in claims if claim["job_id"] in rows]
    for claim in taken:
        row = rows[claim["job_id"]]
        holder = claim["holder"]
        params += [
            row["id"],
            holder,
            row["attempts"] + 1,
            row["last_attempt"] + 1,
            row["started_at"] or now,
            f"assigned to {holder}",
            claim["lease_id"],
            row["last_seq"] + 1,
            claim["expires_at"],
        ]
    moved: dict[str, Any] = {}
    if taken:
        statement = _CLAIM.format(values=_values(len(taken), _CLAIM_ROW))
        moved = {row["id"]: row for row in conn.execute(statement, (*params, now, now)).fetchall()}
        if len(moved) != len(taken):
            raise IllegalTransition(JobStatus.QUEUED, JobStatus.RUNNING)
    return [
        job_writes.Claimed(moved[claim["job_id"]], rows[claim["job_id"]]["last_seq"] + 1)
        if claim["job_id"] in moved
        else None
        for claim in claims
    ]


# ------------------------------------------------------------------ endings

_LEASED = (
    "SELECT jobs.* FROM jobs JOIN leases ON leases.job_id = jobs.id"
    " JOIN (VALUES {values}) AS v (id, lease_id, holder)"
    " ON v.id = jobs.id AND v.lease_id = leases.lease_id AND v.holder = leases.holder"
)
_END = (
    "WITH v (id, current, status, exit_code, error) AS (VALUES {values}),"
    " changed AS (UPDATE jobs SET status = v.status, exit_code = v.exit_code, error = v.error,"
    " finished_at = ? FROM v WHERE jobs.id = v.id AND jobs.status = v.current"
    " RETURNING jobs.*),"
    " lease AS (DELETE FROM leases WHERE job_id IN (SELECT id FROM changed)),"
    " event AS (INSERT INTO job_events (job_id, status, at, reason)"
    " SELECT changed.id, changed.status, ?, v.error FROM changed JOIN v ON v.id = changed.id)"
    " SELECT * FROM changed"
)


def finish_jobs(conn: sqlite3.Connection, endings: list[dict[str, Any]]) -> list[Any]:
    """``job_writes.finish_job`` for each of ``endings``, on distinct jobs."""
    params: list[Any] = []
    for ending in endings:
        params += [ending["job_id"], ending["lease_id"], ending["holder"]]
    statement = _LEASED.format(values=_values(len(endings), "(?::text, ?::text, ?::text)"))
    rows = {row["id"]: row for row in conn.execute(statement, params).fetchall()}
    results: list[Any] = []
    params = []
    ending_now: list[str] = []
    for ending in endings:
        row = rows.get(ending["job_id"])
        if row is None:
            results.append(None)
            continue
        violation = check_ending(ending["last_seq"], row["last_seq"])
        if violation is not None:
            results.append(violation)
            continue
        current = JobStatus(row["status"])
        target: JobStatus = ending["status"]
        check_transition(current, target)
        if not target.is_terminal or current is not JobStatus.RUNNING:
            raise _Single  # the grouped UPDATE sets the columns of a running job's end
        params += [row["id"], current.value, target.value, ending["exit_code"], ending["error"]]
        ending_now.append(row["id"])
        results.append(_Pending(row["id"]))
    if ending_now:
        now = time.time()
        template = "(?::text, ?::text, ?::text, ?::integer, ?::text)"
        statement = _END.format(values=_values(len(ending_now), template))
        moved = {row["id"]: row for row in conn.execute(statement, (*params, now, now)).fetchall()}
        if len(moved) != len(ending_now):
            raise IllegalTransition(JobStatus.RUNNING, JobStatus.SUCCEEDED)
        results = [
            moved[value.job_id] if isinstance(value, _Pending) else value for value in results
        ]
    return results


# ------------------------------------------------------------------ new jobs

_HELD = "SELECT owner, jobs, db_bytes, file_bytes FROM usage WHERE owner = ANY(?)"
_INSERT = (
    f"WITH changed AS (INSERT INTO jobs ({job_writes.NEW_JOB_COLUMNS}) VALUES {{values}}"
    " RETURNING *), event AS (INSERT INTO job_events (job_id, status, at, reason)"
    " SELECT id, status, ?, 'submitted' FROM changed)"
    " SELECT * FROM changed"
)
_CHARGE = (
    "INSERT INTO usage (owner, jobs, db_bytes, file_bytes) VALUES {values}"
    " ON CONFLICT (owner) DO UPDATE SET jobs = usage.jobs + excluded.jobs,"
    " db_bytes = usage.db_bytes + excluded.db_bytes"
)


def insert_jobs(conn: sqlite3.Connection, creates: list[dict[str, Any]]) -> list[Any]:
    """``job_writes.insert_job`` for each of ``creates``, quotas checked in their order."""
    counts = _Counts(conn, creates)
    results: list[Any] = []
    accepted: list[job_writes.JobValues] = []
    for create in creates:
        job: job_writes.JobValues = create["job"]
        refusal = counts.refusal(job, create.get("limits"), create.get("database_bytes", 0))
        if refusal is not None:
            results.append(refusal)
            continue
        counts.charge(job)
        accepted.append(job)
        results.append(_Pending(job.id))
    if not accepted:
        return results
    now = time.time()
    params = [value for job in accepted for value in job.insert_values(now)]
    statement = _INSERT.format(values=_values(len(accepted), job_writes.NEW_JOB_ROW))
    rows = {row["id"]: row for row in conn.execute(statement, (*params, now)).fetchall()}
    charges = [
        value for owner, (jobs, size) in counts.charged.items() for value in (owner, jobs, size, 0)
    ]
    if charges:
        statement = _CHARGE.format(values=_values(len(counts.charged), "(?, ?, ?, ?)"))
        conn.execute(statement, charges)
    return [rows[value.job_id] if isinstance(value, _Pending) else value for value in results]


class _Counts:
    """The usage counts of a group's owners as its earlier jobs leave them (``usage``'s
    rows, read once), and what the group charges them, the sums' row included."""

    def __init__(self, conn: sqlite3.Connection, creates: list[dict[str, Any]]) -> None:
        owners = {create["job"].owner for create in creates} - {None}
        self._held: dict[str, usage.Held] = {}
        if owners and any(create.get("limits") is not None for create in creates):
            read = conn.execute(_HELD, ([*owners, usage.TOTAL],)).fetchall()
            self._held = {row[0]: usage.Held(int(row[1]), int(row[2]), int(row[3])) for row in read}
        self._before = dict(self._held)
        self._holders = _Holders(conn)
        self.charged: dict[str, list[int]] = {}  # owner: [jobs, db_bytes]

    def held(self, owner: str) -> usage.Held:
        return self._held.get(owner, usage.Held())

    def refusal(
        self, job: job_writes.JobValues, limits: usage.StoreLimits | None, database_bytes: int
    ) -> str | None:
        if job.owner is None or limits is None:
            return None
        return usage.job_refusal_of(
            self.held(job.owner),
            lambda: self.held(usage.TOTAL),
            self._holders.count,
            limits,
            job.db_bytes,
            database_bytes,
        )

    def charge(self, job: job_writes.JobValues) -> None:
        if job.owner is None:
            return
        was = self._before.get(job.owner, usage.Held())
        if not was.jobs and not was.db_bytes:
            self._holders.joined.add(job.owner)
        for owner in (job.owner, usage.TOTAL):
            held = self.held(owner)
            self._held[owner] = usage.Held(
                held.jobs + 1, held.db_bytes + job.db_bytes, held.file_bytes
            )
            added = self.charged.setdefault(owner, [0, 0])
            added[0] += 1
            added[1] += job.db_bytes


class _Holders:
    """The owners holding database bytes or jobs (``usage._holders``) as a group's earlier
    jobs leave them: those stored before it (read once, if asked) and those it adds
    (``joined``)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._stored: int | None = None
        self.joined: set[str] = set()  # owners holding nothing before the group's jobs

    def count(self) -> int:
        if self._stored is None:
            self._stored = usage.db_holders(self._conn)
        return self._stored + len(self.joined)
