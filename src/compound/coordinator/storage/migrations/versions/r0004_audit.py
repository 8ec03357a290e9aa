"""The audit trail: tokens created and revoked, admins' cancels of others' jobs."""

from __future__ import annotations

import sqlalchemy as sa

from compound.coordinator.storage.migrations import changes

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    changes.create_table(
        "audit",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("actor", sa.String(160), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target", sa.String(160), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        indexes={},
    )


def downgrade() -> None:
    changes.drop_table("audit")
