"""PostgreSQL: byte counts, sequence numbers and memory sizes as BIGINT (INTEGER overflows at
2**31 there; SQLite's INTEGER is 64-bit already), and the contributors' registration order,
which SQLite keeps as its rowid."""

from __future__ import annotations

from alembic import op

from compound.coordinator.storage.migrations import changes

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

WIDE = [
    ("jobs", "last_seq"),
    ("jobs", "log_bytes"),
    ("jobs", "inputs_size"),
    ("jobs", "db_bytes"),
    ("uploads", "size"),
    ("usage", "jobs"),
    ("usage", "db_bytes"),
    ("usage", "file_bytes"),
    ("artifacts", "size"),
    ("leases", "first_seq"),
    ("log_records", "seq"),
    ("log_records", "size"),
    ("contributors", "memory_bytes"),
    ("contributors", "ram_free_bytes"),
    ("contributors", "ram_total_bytes"),
]


def upgrade() -> None:
    if changes.dialect() != "postgresql":
        return
    for table, column in WIDE:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE BIGINT")
    op.execute("ALTER TABLE contributors ADD COLUMN IF NOT EXISTS rowid bigserial")


def downgrade() -> None:
    if changes.dialect() != "postgresql":
        return
    op.execute("ALTER TABLE contributors DROP COLUMN IF EXISTS rowid")
    for table, column in WIDE:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE INTEGER")
