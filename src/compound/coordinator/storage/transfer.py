"""`compound admin migrate`: a data directory's SQLite database copied into PostgreSQL.

The source is brought to the newest schema first (as the coordinator's next start would),
the target too (an empty database gets db.py's tables), and the target must hold no rows.
Then every table of db.py is copied in foreign-key order, in batches, in one transaction of
the target: it holds all of the data or none of it. Keys are kept as they are (jobs'
numbers give the queue's order), and the sequences behind integer keys are set past the
largest copied, so new rows number on. The files themselves (blobs) stay in the data
directory, which a coordinator on PostgreSQL still uses. The coordinator must be stopped:
rows written during the copy would be missed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from compound.coordinator.storage import db, schema

BATCH_ROWS = 1000
DATABASE_NAME = "compound.sqlite3"
# PostgreSQL stores no NUL character in text; a program's output may hold some.
NUL, NUL_STAND_IN = "\x00", "\ufffd"


class TransferError(Exception):
    """A sentence for the operator: why the copy was not made (nothing was written)."""


@dataclass
class TransferReport:
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows copied
    nul_values: int = 0  # text values whose NUL characters became U+FFFD


def postgres_url(url: str) -> sa.URL:
    """``url`` as SQLAlchemy's psycopg 3 URL (postgresql://, postgres:// accepted)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise TransferError(f"not a database URL: {url!r}") from None
    if parsed.get_backend_name() not in ("postgresql", "postgres"):
        raise TransferError("the target must be a PostgreSQL database (postgresql://...)")
    return parsed.set(drivername="postgresql+psycopg")


def transfer(
    data_dir: Path,
    url: str,
    batch_rows: int = BATCH_ROWS,
    progress: Callable[[str, int], None] | None = None,
) -> TransferReport:
    """Copy ``data_dir``'s database into the empty PostgreSQL database at ``url``;
    ``progress(table, rows)`` after each table."""
    path = data_dir / DATABASE_NAME
    if not path.is_file():
        raise TransferError(f"no coordinator database in {data_dir}")
    target_url = postgres_url(url)
    shown = target_url.render_as_string(hide_password=True)
    source = sa.create_engine(f"sqlite:///{path}")
    target = sa.create_engine(target_url)
    report = TransferReport()
    try:
        with source.begin() as src:
            schema.upgrade_sync(src)
        with source.connect() as src, target.begin() as dst:
            schema.upgrade_sync(dst)
            _check_empty(dst, shown)
            for table in db.metadata.sorted_tables:
                report.rows[table.name] = _copy_table(src, dst, table, batch_rows, report)
                if progress is not None:
                    progress(table.name, report.rows[table.name])
            _reset_sequences(dst)
    except DBAPIError as exc:
        raise TransferError(f"copying into {shown} failed: {exc.orig}") from None
    finally:
        source.dispose()
        target.dispose()
    return report


def _check_empty(dst: sa.Connection, shown: str) -> None:
    for table in db.metadata.sorted_tables:
        if dst.execute(sa.select(sa.literal(1)).select_from(table).limit(1)).first():
            raise TransferError(
                f"{shown} is not empty (its {table.name} table has rows): "
                "migrate into a new, empty database"
            )


def _copy_table(
    src: sa.Connection, dst: sa.Connection, table: sa.Table, batch_rows: int, report: TransferReport
) -> int:
    query = sa.select(table).order_by(*table.primary_key.columns)
    result = src.execution_options(yield_per=batch_rows).execute(query)
    copied = 0
    for batch in result.mappings().partitions():
        rows = [_storable(dict(row), report) for row in batch]
        dst.execute(sa.insert(table), rows)
        copied += len(rows)
    return copied


def _storable(row: dict[str, Any], report: TransferReport) -> dict[str, Any]:
    for name, value in row.items():
        if isinstance(value, str) and NUL in value:
            row[name] = value.replace(NUL, NUL_STAND_IN)
            report.nul_values += 1
    return row


def _reset_sequences(dst: sa.Connection) -> None:
    """Set each integer key's sequence past the largest key copied."""
    for table in db.metadata.sorted_tables:
        column = table.autoincrement_column
        if column is None:
            continue
        dst.execute(
            sa.text(
                f"SELECT setval(pg_get_serial_sequence(:table, :column),"
                f" coalesce(max({column.name}), 0) + 1, false) FROM {table.name}"
            ),
            {"table": table.name, "column": column.name},
        )
