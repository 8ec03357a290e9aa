"""Contributor states: the reason a contributor is paused or draining, and the state an
offline one was in when it left."""

from __future__ import annotations

import sqlalchemy as sa

from compound.coordinator.storage.migrations import changes

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    changes.add_column("contributors", sa.Column("state_reason", sa.String(256), nullable=True))
    changes.add_column("contributors", sa.Column("last_state", sa.String(16), nullable=True))


def downgrade() -> None:
    changes.drop_column("contributors", "last_state")
    changes.drop_column("contributors", "state_reason")
