"""The coordinator's tables as the previous release made them (src/compound/coordinator/db.py
at commit aae73a7), copied verbatim: the tests build databases of that release with it and
check that today's coordinator upgrades them in place. Never edit it to follow db.py."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

jobs = Table(
    "jobs",
    metadata,
    # The integer key gives the FIFO order of the queue.
    Column("number", Integer, primary_key=True, autoincrement=True),
    Column("id", String(32), nullable=False, unique=True),
    Column("status", String(16), nullable=False, index=True),
    Column("script", Text, nullable=False),
    Column("args", Text, nullable=False, default="[]"),
    Column("env", Text, nullable=False, default="{}"),
    Column("timeout_s", Float),
    Column("name", String(256)),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("exit_code", Integer),
    Column("error", Text),
    # The contributor that ran (or runs) it; who holds it *now* is the lease's business.
    Column("contributor_id", String(128)),
    Column("attempts", Integer, nullable=False, default=0),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    # Highest sequence number accounted for, -1 before any output. Past the per-job log
    # quota records are acknowledged (so counted here) but no longer stored.
    Column("last_seq", Integer, nullable=False, default=-1),
    Column("log_bytes", Integer, nullable=False, default=0),
    # Who submitted it (the client's address until tokens exist): quotas count per owner.
    Column("owner", String(128)),
    # JSON list of PEP 508 requirements (compound.protocol.requirements), [] for none.
    Column("requirements", Text, nullable=False, default="[]"),
    # Its input files: one tar in the blob store (see blobs.py), or none.
    Column("inputs_sha256", String(64), index=True),
    Column("inputs_size", Integer),
    # When retention removed its logs, inputs and artifacts (the row stays).
    Column("files_removed_at", Float),
)

# Who uploaded which input tar: a submitter may name only inputs it uploaded itself.
uploads = Table(
    "uploads",
    metadata,
    Column("sha256", String(64), primary_key=True),
    Column("owner", String(128), primary_key=True),
    Column("size", Integer, nullable=False),
    Column("uploaded_at", Float, nullable=False),
)

# A job's output files; their bytes are blobs, shared by content hash.
artifacts = Table(
    "artifacts",
    metadata,
    Column("job_id", String(32), ForeignKey("jobs.id"), primary_key=True),
    Column("path", Text, primary_key=True),
    Column("size", Integer, nullable=False),
    Column("sha256", String(64), nullable=False, index=True),
)

# The one record of who may report on a running job. A job is RUNNING exactly while it
# has a row here; every status change out of RUNNING deletes it in the same transaction.
leases = Table(
    "leases",
    metadata,
    Column("job_id", String(32), ForeignKey("jobs.id"), primary_key=True),
    Column("lease_id", String(64), nullable=False, unique=True),
    Column("holder", String(128), nullable=False, index=True),
    # The holder numbers this job's records from here.
    Column("first_seq", Integer, nullable=False),
    Column("granted_at", Float, nullable=False),
    # Wall-clock time; renewals are written back in batches by the sweeper.
    Column("expires_at", Float, nullable=False),
)

job_events = Table(
    "job_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(32), ForeignKey("jobs.id"), nullable=False, index=True),
    Column("status", String(16), nullable=False),
    Column("at", Float, nullable=False),
    Column("reason", Text),
)

log_records = Table(
    "log_records",
    metadata,
    Column("job_id", String(32), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("stream", String(8), nullable=False),
    # UTF-8 bytes of data. Before data on purpose: SQLite then reads it without touching
    # the overflow pages of large records, so pages can be cut by size cheaply.
    Column("size", Integer, nullable=False, default=0),
    Column("data", Text, nullable=False),
)

contributors = Table(
    "contributors",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("state", String(16), nullable=False),
    Column("cores", Integer, nullable=False, default=0),
    Column("memory_bytes", Integer, nullable=False, default=0),
    Column("runtime", String(32), nullable=False, default=""),
    Column("version", String(64), nullable=False, default=""),
    Column("cpu_percent", Float),
    Column("ram_free_bytes", Integer),
    Column("ram_total_bytes", Integer),
    Column("last_seen", Float),
    # The token that first registered this node id; no other token can take it over.
    Column("token_name", String(128)),
)

# Access tokens. Only a hash of each is stored; the token itself is shown once, at creation.
# Auth is on as soon as this table has a row (a revoked token still counts: revoking the
# last token must not open the coordinator).
tokens = Table(
    "tokens",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
    Column("last_used_at", Float),
    Column("revoked_at", Float),
)

Index("ix_jobs_queue", jobs.c.status, jobs.c.number)
