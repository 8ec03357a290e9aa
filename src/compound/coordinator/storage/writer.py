"""Group commit: the job lifecycle's writes, many callers to one SQLite transaction.

A job used to cost three write transactions of its own (create, claim, finish), each a
dozen hand-offs to aiosqlite's thread with SQLAlchemy building every statement. Here one
thread owns one connection; an operation is a plain function of that connection. The
thread takes every operation waiting at that moment and runs them in one transaction
(should one raise, the batch runs again with each inside its own SAVEPOINT: an operation
that raises rolls back only its own statements, and only its caller sees the error),
commits once, and only then resolves the callers' futures: an answer never
precedes the commit that makes it durable. With WAL and ``synchronous=NORMAL`` a commit
survives the process being killed (not a power cut): the promise the coordinator makes.

On PostgreSQL the thread's connection is psycopg's (``backend.PgConnection``), running the
same operations and statements; its commits are durable as the server's settings say.

The other writer (SQLAlchemy's, for logs, contributors, files) opens its transactions with
``BEGIN IMMEDIATE`` (``db.py``), so the two take SQLite's write lock in turn, waiting up to
the busy timeout, instead of failing a transaction whose snapshot went stale.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from compound.coordinator.storage import grouped
from compound.coordinator.storage.db import JOURNAL_SIZE_LIMIT_BYTES, WriteTurns

log = logging.getLogger("compound.coordinator")

T = TypeVar("T")
Operation = Callable[[sqlite3.Connection], Any]
Pending = tuple[Operation, "asyncio.Future[Any]", asyncio.AbstractEventLoop]

# Operations committed together (at most about twice this, when handed over in pieces):
# bounds one transaction's time (and its callers' wait) when a burst arrives.
MAX_BATCH = 256
BUSY_TIMEOUT_S = 10.0
# How long a transaction waits for the other writer to have its turn, polling.
YIELD_MAX_S = 1.0
YIELD_POLL_S = 0.0005


class WriterClosed(RuntimeError):
    """The writer was closed: nothing more is written."""


class GroupWriter:
    def __init__(
        self,
        database_path: Path,
        turns: WriteTurns | None = None,
        max_batch: int = MAX_BATCH,
        connect: Callable[[], sqlite3.Connection] | None = None,
    ) -> None:
        self._path = database_path
        # Another database's connection (backend.PgConnection on PostgreSQL) in place of
        # SQLite's at ``database_path``; it runs the same operations.
        self._connect_other = connect
        self._turns = turns or WriteTurns()
        self._max_batch = max_batch
        self._pending: queue.SimpleQueue[list[Pending] | None] = queue.SimpleQueue()
        # Operations asked for during the current turn of the event loop, handed to the
        # thread together at its end: one wake-up of the thread (and one GIL hand-off) per
        # turn instead of one per operation, and fuller transactions.
        self._gathering: list[Pending] = []
        self._gathering_loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        # Committed transactions and the operations in them: for tests and benchmarks.
        self.transactions = 0
        self.operations = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="group-writer", daemon=True)
            self._thread.start()

    async def run(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``operation`` in the next transaction; its result once that is committed.

        Queued synchronously, before the first await: operations are committed in the
        order they were asked for. Callers share one event loop at a time.
        """
        if self._closed:
            raise WriterClosed("the coordinator is shutting down")
        self.start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if self._gathering_loop is not loop:
            self._hand_over()
            self._gathering_loop = loop
        self._gathering.append((operation, future, loop))
        if len(self._gathering) == 1:
            loop.call_soon(self._hand_over)
        return await future

    def _hand_over(self) -> None:
        gathered, self._gathering = self._gathering, []
        for start in range(0, len(gathered), self._max_batch):
            self._pending.put(gathered[start : start + self._max_batch])

    async def close(self) -> None:
        """Commit what is queued, then stop the thread."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._hand_over()  # before the end mark: nothing asked for is left behind
            self._pending.put(None)
            await asyncio.to_thread(self._thread.join)

    # ------------------------------------------------------------------ the thread

    def _connect(self) -> sqlite3.Connection:
        if self._connect_other is not None:
            return self._connect_other()
        conn = sqlite3.connect(
            self._path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT_BYTES}")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def _run(self) -> None:
        conn = self._connect()
        try:
            while True:
                first = self._pending.get()
                if first is None:
                    return
                batch = list(first)
                stop = False
                while len(batch) < self._max_batch:
                    try:
                        item = self._pending.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        stop = True
                        break
                    batch.extend(item)
                self._commit(conn, batch)
                if stop:
                    return
        finally:
            conn.close()

    def _commit(
        self,
        conn: sqlite3.Connection,
        batch: list[Pending],
    ) -> None:
        self._let_the_other_writer_go_first()
        try:
            outcomes = _run_batch(conn, [operation for operation, _future, _loop in batch])
        except Exception as exc:  # the transaction itself failed: every caller learns it
            log.exception("a group transaction of %d operations failed", len(batch))
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            outcomes = [(False, exc)] * len(batch)
        else:
            self.transactions += 1
            self.operations += len(batch)
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for (_operation, future, loop), (ok, value) in zip(batch, outcomes, strict=True):
            by_loop.setdefault(loop, []).append((future, ok, value))
        # One wake-up of the event loop per transaction, not per caller.
        for loop, results in by_loop.items():
            if not loop.is_closed():
                loop.call_soon_threadsafe(_resolve, results)

    def _let_the_other_writer_go_first(self) -> None:
        """While the engine's writer waits for the lock, start nothing (bounded: a stuck
        waiter must not stop the queue)."""
        deadline = time.monotonic() + YIELD_MAX_S
        while self._turns.waiting and time.monotonic() < deadline:
            time.sleep(YIELD_POLL_S)


def _run_batch(conn: sqlite3.Connection, operations: list[Operation]) -> list[tuple[bool, Any]]:
    """Run ``operations`` in one transaction and commit it; each one's (ok, result or error).

    Tried first without savepoints (and, on PostgreSQL, operations of one kind together:
    ``grouped``): fewer statements per operation, and operations rarely raise. If one does,
    that attempt is rolled back whole and the batch runs again, each operation alone in its
    own savepoint, so only the one that raises is undone. An operation may therefore run
    twice: it acts on the database through ``conn`` only.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        outcomes: list[tuple[bool, Any]] = [
            (True, value) for value in grouped.run(conn, operations)
        ]
    except Exception:
        conn.execute("ROLLBACK")
        conn.execute("BEGIN IMMEDIATE")
        outcomes = [_in_savepoint(conn, operation) for operation in operations]
    conn.execute("COMMIT")
    return outcomes


def _in_savepoint(conn: sqlite3.Connection, operation: Operation) -> tuple[bool, Any]:
    conn.execute("SAVEPOINT op")
    try:
        value = operation(conn)
    except Exception as exc:
        conn.execute("ROLLBACK TO op")
        conn.execute("RELEASE op")
        return False, exc
    conn.execute("RELEASE op")
    return True, value


def _resolve(results: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in results:
        if future.done():  # its caller went away; the write stands
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
