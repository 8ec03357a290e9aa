"""Writes of jobs' files and of retention, as plain functions of a SQLite connection.

Run by the group writer (``writer.py``) like ``job_writes``: each stores or frees bytes and
charges or refunds their owner (``usage``) in the same transaction, so the counts a quota
reads are always those of the stored data.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from compound.coordinator.storage import usage
from compound.protocol import TERMINAL_STATUSES, Artifact

_TERMINAL = tuple(status.value for status in TERMINAL_STATUSES)


def record_upload(
    conn: sqlite3.Connection, sha256: str, owner: str, size: int, limits: usage.StoreLimits
) -> str | None:
    """Record that ``owner`` uploaded input tar ``sha256``, charged to it once; the reason
    instead if its file quota refuses it (the same bytes again cost nothing more)."""
    known = conn.execute(
        "SELECT 1 FROM uploads WHERE sha256 = ? AND owner = ?", (sha256, owner)
    ).fetchone()
    if known is None:
        room = usage.file_room(conn, owner, limits)
        if size > room.bytes:
            return room.reason
        usage.charge(conn, owner, file_bytes=size)
    conn.execute(
        "INSERT INTO uploads (sha256, owner, size, uploaded_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (sha256, owner) DO UPDATE SET size = excluded.size,"
        " uploaded_at = excluded.uploaded_at",
        (sha256, owner, size, time.time()),
    )
    return None


def replace_artifacts(
    conn: sqlite3.Connection,
    job_id: str,
    artifacts: Sequence[Artifact],
    limits: usage.StoreLimits,
) -> str | None:
    """The job's artifacts are now exactly these (a retried job's upload replaces the
    earlier attempt's), charged to the job's owner; the reason instead if its file quota
    refuses them (then nothing changes)."""
    owner_row = conn.execute("SELECT owner FROM jobs WHERE id = ?", (job_id,)).fetchone()
    owner = None if owner_row is None else owner_row[0]
    before = conn.execute(
        "SELECT coalesce(sum(size), 0) FROM artifacts WHERE job_id = ?", (job_id,)
    ).fetchone()[0]
    added = sum(artifact.size for artifact in artifacts) - int(before)
    if added > 0:
        room = usage.file_room(conn, owner, limits)
        if added > room.bytes:
            return room.reason
    conn.execute("DELETE FROM artifacts WHERE job_id = ?", (job_id,))
    conn.executemany(
        "INSERT INTO artifacts (job_id, path, size, sha256) VALUES (?, ?, ?, ?)",
        [(job_id, a.path, a.size, a.sha256) for a in artifacts],
    )
    usage.charge(conn, owner, file_bytes=added)
    return None


@dataclass
class Expired:
    job_ids: list[str] = field(default_factory=list)
    blobs: set[str] = field(default_factory=set)  # the blobs they referred to
    more: bool = False  # a full batch: call again


def expire(conn: sqlite3.Connection, cutoff: float, max_jobs: int) -> Expired:
    """Clear up to ``max_jobs`` jobs that ended before ``cutoff`` (their logs, output files,
    script, arguments and environment; the row stays with its status) and remove uploads
    older than it, refunding their owners."""
    marks = ", ".join("?" * len(_TERMINAL))
    rows = conn.execute(
        "SELECT id, owner, inputs_sha256, db_bytes FROM jobs WHERE status IN"
        f" ({marks}) AND finished_at < ? AND files_removed_at IS NULL LIMIT ?",
        (*_TERMINAL, cutoff, max_jobs),
    ).fetchall()
    expired = Expired(more=len(rows) == max_jobs)
    now = time.time()
    for job_id, owner, inputs_sha256, db_bytes in rows:
        expired.job_ids.append(job_id)
        if inputs_sha256:
            expired.blobs.add(inputs_sha256)
        files = conn.execute(
            "SELECT sha256, size FROM artifacts WHERE job_id = ?", (job_id,)
        ).fetchall()
        expired.blobs.update(sha for sha, _size in files)
        conn.execute("DELETE FROM artifacts WHERE job_id = ?", (job_id,))
        conn.execute("DELETE FROM log_records WHERE job_id = ?", (job_id,))
        conn.execute(
            "UPDATE jobs SET files_removed_at = ?, script = '', args = '[]', env = '{}',"
            " db_bytes = 0 WHERE id = ?",
            (now, job_id),
        )
        usage.charge(conn, owner, jobs=-1, db_bytes=-db_bytes, file_bytes=-sum(s for _, s in files))
    for sha256, owner, size in conn.execute(
        "DELETE FROM uploads WHERE uploaded_at < ? RETURNING sha256, owner, size", (cutoff,)
    ).fetchall():
        expired.blobs.add(sha256)
        usage.charge(conn, owner, file_bytes=-size)
    return expired
