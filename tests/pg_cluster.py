"""The database a test runs on, SQLite or PostgreSQL (the cluster is tests/postgres.py's)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

# The databases a ``both_backends`` test runs on, in this order (the tests' ids).
BACKENDS = ("sqlite", "postgresql")


@dataclass(frozen=True)
class Backend:
    """The database a test runs on: SQLite in the data directory, or a PostgreSQL URL
    (``postgresql://``, as users give it; a database of tests/postgres.py's cluster)."""

    name: str
    url: str | None = None

    @property
    def coordinator_args(self) -> list[str]:
        return [] if self.url is None else ["--database", self.url]

    def execute(self, sqlite_path: Path, statement: str, rows: list[tuple[object, ...]]) -> None:
        """Run one ``?``-placeholder statement for each of ``rows`` behind the stores' back
        (to damage a row, or to write rows without their job)."""
        if self.url is None:
            import sqlite3

            with contextlib.closing(sqlite3.connect(sqlite_path, timeout=10)) as conn:
                conn.execute("PRAGMA foreign_keys=OFF")
                conn.executemany(statement, rows)
                conn.commit()
            return
        import psycopg

        with psycopg.connect(self.url) as conn, conn.cursor() as cursor:
            cursor.executemany(statement.replace("?", "%s"), rows)

    def fetchall(self, sqlite_path: Path, statement: str) -> list[tuple[object, ...]]:
        """The rows of one query without parameters, read behind the stores' back."""
        if self.url is None:
            import sqlite3

            with contextlib.closing(sqlite3.connect(sqlite_path, timeout=10)) as conn:
                return conn.execute(statement).fetchall()
        import psycopg

        with psycopg.connect(self.url) as conn:
            return [tuple(row) for row in conn.execute(statement).fetchall()]
