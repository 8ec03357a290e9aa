"""Attempts told apart: a job's latest attempt's number, and the attempt of each record."""

from __future__ import annotations

import sqlalchemy as sa

from compound.coordinator.storage.migrations import changes

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A job that started is on attempt 1, as its records are.
    changes.add_column(
        "jobs",
        sa.Column("last_attempt", sa.Integer(), nullable=False, server_default="0"),
        fill="UPDATE jobs SET last_attempt = 1 WHERE started_at IS NOT NULL",
    )
    # Records stored before attempts were told apart count as the first attempt's.
    changes.add_column(
        "log_records", sa.Column("attempt", sa.Integer(), nullable=False, server_default="1")
    )


def downgrade() -> None:
    changes.drop_column("log_records", "attempt")
    changes.drop_column("jobs", "last_attempt")
