"""A throwaway PostgreSQL cluster for the tests (one per session), and a fresh database in
it per test. A stop-gap: the PostgreSQL test fixture of the migrations work replaces it.

Needs Debian's PostgreSQL binaries (``PG_BIN``, default /usr/lib/postgresql/15/bin); as root
the cluster runs as the ``postgres`` user, which initdb requires.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))


def available() -> bool:
    return (PG_BIN / "initdb").is_file()


def _as_postgres(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Cluster:
    port: int
    user: str

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A new empty database's URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@contextlib.contextmanager
def cluster() -> Iterator[Cluster]:
    """Start a cluster in a new directory; stopped and removed on exit."""
    root = Path(tempfile.mkdtemp(prefix="compound-pg-"))
    root.chmod(0o755)
    data = root / "data"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(data, "postgres")
    user = "postgres" if os.geteuid() == 0 else os.environ.get("USER", "postgres")
    port = _free_port()
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}
    subprocess.run(
        _as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", user]),
        check=True,
        **quiet,  # type: ignore[arg-type]
    )
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg_ctl = str(PG_BIN / "pg_ctl")
    subprocess.run(
        _as_postgres(
            [pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"), "start", "-w"]
        ),
        check=True,
        **quiet,  # type: ignore[arg-type]
    )
    try:
        yield Cluster(port, user)
    finally:
        subprocess.run(
            _as_postgres([pg_ctl, "-D", str(data), "stop", "-m", "immediate", "-w"]),
            check=False,
            **quiet,  # type: ignore[arg-type]
        )
        shutil.rmtree(root, ignore_errors=True)


@dataclass(frozen=True)
class Backend:
    """The database a test runs on: SQLite in the data directory, or a PostgreSQL URL."""

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
