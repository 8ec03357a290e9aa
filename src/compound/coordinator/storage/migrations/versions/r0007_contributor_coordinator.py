"""Contributors: the coordinator each is connected to, or last was (several coordinators on
one PostgreSQL database list every contributor of the cluster)."""

from __future__ import annotations

import sqlalchemy as sa

from compound.coordinator.storage.migrations import changes

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    changes.add_column("contributors", sa.Column("coordinator", sa.String(128), nullable=True))


def downgrade() -> None:
    changes.drop_column("contributors", "coordinator")
