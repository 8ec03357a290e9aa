"""The steps revisions are written with: each leaves alone what a database has already.

Databases made before migrations existed are stamped at the revision they match
(``storage.schema``), but a build between two releases may have some of a revision's
changes and not others (the audit table without the attempts' columns, say). So a table is
created only if missing and a column added only if missing, and an added column's fill for
the rows already there runs only when the column is new.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


def _inspector() -> sa.Inspector:
    return sa.inspect(op.get_bind())


def dialect() -> str:
    return str(op.get_bind().dialect.name)


def create_table(
    name: str, *parts: sa.Column[object] | sa.Constraint, indexes: dict[str, list[str]]
) -> None:
    """Create table ``name`` with ``indexes`` (index name -> columns) unless it exists."""
    if _inspector().has_table(name):
        return
    op.create_table(name, *parts)
    for index, columns in indexes.items():
        create_index(index, name, columns)


def create_index(name: str, table: str, columns: list[str]) -> None:
    """Create index ``name`` unless ``table`` has it (tables that got the column by an
    ALTER before migrations existed never got its index)."""
    if name not in {info["name"] for info in _inspector().get_indexes(table)}:
        op.create_index(name, table, columns, unique=False)


def add_column(table: str, column: sa.Column[object], fill: str | None = None) -> None:
    """Add ``column`` to ``table`` unless it has it; then run ``fill`` (SQL) if given."""
    present = {info["name"] for info in _inspector().get_columns(table)}
    if column.name in present:
        return
    op.add_column(table, column)
    if fill is not None:
        op.execute(fill)


def drop_column(table: str, column: str) -> None:
    with op.batch_alter_table(table) as batch:
        batch.drop_column(column)


def drop_table(name: str) -> None:
    if _inspector().has_table(name):
        op.drop_table(name)
