"""Quotas: what each submitter stores (usage), and the database bytes charged per job."""

from __future__ import annotations

import sqlalchemy as sa

from compound.coordinator.storage.migrations import changes

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _fill_db_bytes() -> str:
    """A job's script, args and env in UTF-8 bytes, and its stored logs, unless retention
    cleared them (as usage.py charges them)."""
    size = "length(CAST({} AS BLOB))" if changes.dialect() == "sqlite" else "octet_length({})"
    parts = " + ".join(size.format(column) for column in ("script", "args", "env"))
    return f"UPDATE jobs SET db_bytes = {parts} + log_bytes WHERE files_removed_at IS NULL"


def upgrade() -> None:
    changes.add_column(
        "jobs",
        sa.Column("db_bytes", sa.Integer(), nullable=False, server_default="0"),
        fill=_fill_db_bytes(),
    )
    # Its rows are rebuilt from the data at every start (usage.rebuild).
    changes.create_table(
        "usage",
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("jobs", sa.Integer(), nullable=False),
        sa.Column("db_bytes", sa.Integer(), nullable=False),
        sa.Column("file_bytes", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("owner"),
        indexes={},
    )


def downgrade() -> None:
    changes.drop_table("usage")
    changes.drop_column("jobs", "db_bytes")
