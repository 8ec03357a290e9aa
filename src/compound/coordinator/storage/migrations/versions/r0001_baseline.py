"""The previous release's schema (commit aae73a7), the first the migrations know.

A database of that release, or of an earlier one, is stamped here or brought here: tables
it has are kept, columns added since the first release that it lacks are added (as the
coordinator did at every start before migrations existed), with their indexes.
"""

from __future__ import annotations

import sqlalchemy as sa

from compound.coordinator.storage.migrations import changes

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TABLES = (
    "jobs",
    "uploads",
    "artifacts",
    "leases",
    "job_events",
    "log_records",
    "contributors",
    "tokens",
)


def upgrade() -> None:
    _jobs()
    changes.create_table(
        "uploads",
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("uploaded_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("sha256", "owner"),
        indexes={},
    )
    changes.create_table(
        "artifacts",
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"]),
        sa.PrimaryKeyConstraint("job_id", "path"),
        indexes={"ix_artifacts_sha256": ["sha256"]},
    )
    changes.create_table(
        "leases",
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("lease_id", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("first_seq", sa.Integer(), nullable=False),
        sa.Column("granted_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"]),
        sa.PrimaryKeyConstraint("job_id"),
        sa.UniqueConstraint("lease_id"),
        indexes={"ix_leases_holder": ["holder"]},
    )
    changes.create_table(
        "job_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"]),
        sa.PrimaryKeyConstraint("id"),
        indexes={"ix_job_events_job_id": ["job_id"]},
    )
    _log_records()
    _contributors()
    changes.create_table(
        "tokens",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("last_used_at", sa.Float(), nullable=True),
        sa.Column("revoked_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("name"),
        sa.UniqueConstraint("token_hash"),
        indexes={},
    )


def _jobs() -> None:
    changes.create_table(
        "jobs",
        sa.Column("number", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("script", sa.Text(), nullable=False),
        sa.Column("args", sa.Text(), nullable=False),
        sa.Column("env", sa.Text(), nullable=False),
        sa.Column("timeout_s", sa.Float(), nullable=True),
        sa.Column("name", sa.String(256), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=True),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("contributor_id", sa.String(128), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("log_bytes", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(128), nullable=True),
        sa.Column("requirements", sa.Text(), nullable=False),
        sa.Column("inputs_sha256", sa.String(64), nullable=True),
        sa.Column("inputs_size", sa.Integer(), nullable=True),
        sa.Column("files_removed_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("number"),
        sa.UniqueConstraint("id"),
        indexes={},
    )
    # Added between the first release and this one (a table made by create_all has them).
    changes.add_column(
        "jobs", sa.Column("log_bytes", sa.Integer(), nullable=False, server_default="0")
    )
    changes.add_column("jobs", sa.Column("owner", sa.String(128), nullable=True))
    changes.add_column(
        "jobs", sa.Column("requirements", sa.Text(), nullable=False, server_default="[]")
    )
    changes.add_column("jobs", sa.Column("inputs_sha256", sa.String(64), nullable=True))
    changes.add_column("jobs", sa.Column("inputs_size", sa.Integer(), nullable=True))
    changes.add_column("jobs", sa.Column("files_removed_at", sa.Float(), nullable=True))
    changes.create_index("ix_jobs_inputs_sha256", "jobs", ["inputs_sha256"])
    changes.create_index("ix_jobs_queue", "jobs", ["status", "number"])
    changes.create_index("ix_jobs_status", "jobs", ["status"])


def _log_records() -> None:
    changes.create_table(
        "log_records",
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("stream", sa.String(8), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "seq"),
        indexes={},
    )
    changes.add_column(
        "log_records", sa.Column("size", sa.Integer(), nullable=False, server_default="0")
    )


def _contributors() -> None:
    changes.create_table(
        "contributors",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("cores", sa.Integer(), nullable=False),
        sa.Column("memory_bytes", sa.Integer(), nullable=False),
        sa.Column("runtime", sa.String(32), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("cpu_percent", sa.Float(), nullable=True),
        sa.Column("ram_free_bytes", sa.Integer(), nullable=True),
        sa.Column("ram_total_bytes", sa.Integer(), nullable=True),
        sa.Column("last_seen", sa.Float(), nullable=True),
        sa.Column("token_name", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        indexes={},
    )
    changes.add_column("contributors", sa.Column("token_name", sa.String(128), nullable=True))


def downgrade() -> None:
    # Those that name a job (artifacts, leases, job_events) go before jobs.
    for table in reversed(TABLES):
        changes.drop_table(table)
