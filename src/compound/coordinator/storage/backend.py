"""Where the state lives: SQLite in the data directory (the default), or PostgreSQL.

The stores are written for SQLite first: the group writer's operations (``job_writes``,
``file_writes``, ``usage``) are plain SQL with ``?`` placeholders run on a ``sqlite3``
connection, and that path is left as it is (it is the benchmarked one). PostgreSQL gets
an adapter instead: ``PgConnection`` runs the same statements on a synchronous psycopg 3
connection, translated once per statement text (``translate``), with rows readable by
position and by name as ``sqlite3.Row`` are. The other engines are SQLAlchemy's
``postgresql+psycopg`` async engines (``create_engine``). What only SQLite has (PRAGMAs,
``BEGIN IMMEDIATE``, VACUUM and WAL checkpoints, ``rowid``) is left out or stood in for
here: on PostgreSQL a ``bigserial`` column named ``rowid`` gives contributors their
registration order (``create_extras``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

POSTGRESQL = "postgresql"
# Connections of the PostgreSQL engines: writes outside the group writer, and reads.
WRITER_POOL = 4
READER_POOL = 8
# A text column of PostgreSQL cannot hold U+0000, which SQLite stores: it is replaced.
_NUL = "\x00"
_NUL_STAND_IN = "\ufffd"


class DatabaseUrlError(ValueError):
    """A sentence for the operator: the database URL cannot be used."""


def is_postgresql(url: str | None) -> bool:
    return url is not None and make_url(url).get_backend_name() == POSTGRESQL


def check_url(url: str) -> URL:
    """``url`` as SQLAlchemy's, its driver psycopg 3; DatabaseUrlError if it is not a
    PostgreSQL URL (SQLite is the default: no URL)."""
    try:
        parsed = make_url(url)
    except Exception as exc:  # sqlalchemy.exc.ArgumentError, ValueError
        raise DatabaseUrlError(f"not a database URL: {exc}") from None
    if parsed.get_backend_name() != POSTGRESQL:
        raise DatabaseUrlError(
            "--database takes a postgresql:// URL (without it, SQLite in the data directory)"
        )
    if parsed.get_driver_name() not in ("", "psycopg"):
        raise DatabaseUrlError("the PostgreSQL driver is psycopg: use postgresql://")
    return parsed.set(drivername="postgresql+psycopg")


def libpq_url(url: str) -> str:
    """``url`` as libpq (psycopg.connect) reads it."""
    return check_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_engine(url: str, connections: int = WRITER_POOL) -> AsyncEngine:
    """An async engine on PostgreSQL (psycopg 3). Its transactions are READ COMMITTED:
    every write that must not race states its condition in its WHERE clause."""
    return create_async_engine(
        check_url(url), pool_size=connections, max_overflow=0, pool_pre_ping=True
    )


async def create_extras(conn: AsyncConnection) -> None:
    """What PostgreSQL needs beside ``db.metadata``: the registration order of
    contributors, which SQLite keeps as its rowid."""
    await conn.exec_driver_sql("ALTER TABLE contributors ADD COLUMN IF NOT EXISTS rowid bigserial")


# ---------------------------------------------------------------- the group writer's side


@functools.lru_cache(maxsize=512)
def translate(statement: str) -> str:
    """A statement of the stores (SQLite's dialect, ``?`` placeholders) in PostgreSQL's:
    ``%s`` placeholders, ``INSERT OR IGNORE`` as ``ON CONFLICT DO NOTHING``, a plain
    ``BEGIN`` (transactions take row locks as they go). The statements hold no literal
    ``?``; a literal ``%`` is escaped."""
    if statement == "BEGIN IMMEDIATE":
        return "BEGIN"
    text = statement.replace("%", "%%").replace("?", "%s")
    if text.startswith("INSERT OR IGNORE INTO "):
        text = (
            "INSERT INTO " + text.removeprefix("INSERT OR IGNORE INTO ") + " ON CONFLICT DO NOTHING"
        )
    return text


def clean(params: Sequence[Any]) -> Sequence[Any]:
    """``params`` with U+0000 replaced in its strings (PostgreSQL refuses it in text)."""
    if not any(type(value) is str and _NUL in value for value in params):
        return params
    return [value.replace(_NUL, _NUL_STAND_IN) if type(value) is str else value for value in params]


class PgRow(tuple):  # type: ignore[type-arg]
    """A row read by position or by column name, as ``sqlite3.Row``."""

    _index: dict[str, int]

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._index)


# Column positions by the column names of a result, built once per shape of result:
# ``cursor.description`` makes a Column object per column on every statement.
_INDEXES: dict[tuple[bytes | None, ...], dict[str, int]] = {}


def _row_factory(cursor: Any) -> Any:
    result = cursor.pgresult
    if result is None or not result.nfields:
        return tuple
    names = tuple(result.fname(position) for position in range(result.nfields))
    index = _INDEXES.get(names)
    if index is None:
        index = {column.name: position for position, column in enumerate(cursor.description)}
        if len(_INDEXES) < 1024:  # the statements are the stores' own: a few dozen shapes
            _INDEXES[names] = index

    def make(values: Sequence[Any]) -> PgRow:
        row = PgRow(values)
        row._index = index
        return row

    return make


class PgConnection:
    """The part of ``sqlite3.Connection`` the group writer's operations use, on psycopg.

    In autocommit mode: the writer opens and ends its transactions itself, as on SQLite.
    Connected at the first BEGIN, and again at the next BEGIN after the connection broke
    (a server restart fails the transactions in flight, not the writer).
    """

    # The group writer's operations may use PostgreSQL's own statements (``job_writes``).
    postgresql = True

    def __init__(self, url: str) -> None:
        self._url = libpq_url(url)
        self._conn: Any = None

    def _connected(self) -> Any:
        if self._conn is None or self._conn.closed or self._conn.broken:
            import psycopg

            self._conn = psycopg.connect(self._url, autocommit=True, row_factory=_row_factory)
        return self._conn

    def execute(self, statement: str, params: Sequence[Any] = ()) -> Any:
        if statement == "BEGIN IMMEDIATE":
            return self._connected().execute("BEGIN")
        return self._conn.execute(translate(statement), clean(params))

    def executemany(self, statement: str, rows: Iterable[Sequence[Any]]) -> Any:
        cursor = self._conn.cursor()
        cursor.executemany(translate(statement), [clean(row) for row in rows])
        return cursor

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        if self._conn is None or self._conn.broken:
            return False
        status = self._conn.info.transaction_status
        return status in (TransactionStatus.INTRANS, TransactionStatus.INERROR)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


async def execute_many(conn: AsyncConnection, statement: str, rows: list[tuple[Any, ...]]) -> None:
    """``db.execute_many`` on PostgreSQL: the psycopg connection's own executemany."""
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection
    async with driver.cursor() as cursor:
        await cursor.executemany(translate(statement), [clean(row) for row in rows])
