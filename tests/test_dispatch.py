"""The dispatch path: group commit, the in-memory queue, and what survives a SIGKILL.

The coordinator's tests run on SQLite and on PostgreSQL (``both_backends``); the group
writer's own tests drive its SQLite connection directly and run on SQLite alone.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest

from compound.coordinator.scheduling.job_queue import JobQueue, QueuedJob
from compound.coordinator.storage.db import WriteTurns, create_engine
from compound.coordinator.storage.schema import upgrade
from compound.coordinator.storage.writer import GroupWriter
from fake_agent import FakeAgent
from pg_cluster import Backend
from support import Coordinator

CONCURRENT_SUBMISSIONS = 120


async def _submit_many(url: str, count: int) -> list[str]:
    """``count`` submissions at once; the ids answered 201, in the order they were sent."""
    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def one(index: int) -> str:
            response = await client.post("/api/v1/jobs", json={"script": f"print({index})"})
            assert response.status_code == 201, response.text
            job_id: str = response.json()["id"]
            return job_id

        return list(await asyncio.gather(*(one(index) for index in range(count))))


@pytest.mark.timeout(90)
@pytest.mark.both_backends
def test_every_accepted_job_survives_a_sigkill_and_keeps_its_place(
    tmp_path: Path, backend: Backend
) -> None:
    """Jobs answered 201 by concurrent submissions (group-committed together) are all there
    after a SIGKILL that follows the last answer at once, and after the restart a
    contributor is given them oldest first."""
    coordinator = Coordinator(
        data_dir=tmp_path / "coordinator", extra_args=backend.coordinator_args
    ).start()
    try:
        accepted = asyncio.run(_submit_many(coordinator.url, CONCURRENT_SUBMISSIONS))
        coordinator.kill()
        coordinator.start()
        listed = coordinator.api("GET", "/api/v1/jobs", params={"limit": 1000}).json()["jobs"]
        assert {job["id"] for job in listed} == set(accepted)
        assert all(job["status"] == "queued" for job in listed)
        # Newest first in the list; its reverse is the queue's order, positions 1..N.
        queue_order = [job["id"] for job in reversed(listed)]
        assert [job["queue_position"] for job in reversed(listed)] == list(
            range(1, CONCURRENT_SUBMISSIONS + 1)
        )
        agent = FakeAgent(coordinator)
        given = []
        for _ in range(CONCURRENT_SUBMISSIONS):
            job = agent.recv_type("job")
            given.append(job["job_id"])
            agent.done(job, last_seq=job["first_seq"] - 1)
        assert given == queue_order
        agent.ws.close()
    finally:
        coordinator.stop()


@pytest.mark.timeout(60)
@pytest.mark.both_backends
def test_many_contributors_share_the_jobs_each_given_once(tmp_path: Path, backend: Backend) -> None:
    """Twenty contributors and sixty jobs submitted at once: every job is given exactly
    once, and every ending is acknowledged with the job's last sequence number."""
    coordinator = Coordinator(
        data_dir=tmp_path / "coordinator", extra_args=backend.coordinator_args
    ).start()
    try:
        agents = [FakeAgent(coordinator) for _ in range(20)]
        accepted = asyncio.run(_submit_many(coordinator.url, 60))
        given: list[str] = []
        deadline = time.monotonic() + 45
        while len(given) < len(accepted) and time.monotonic() < deadline:
            for agent in agents:
                try:
                    message = agent.recv(timeout_s=0.05)
                except TimeoutError:
                    continue
                if message["type"] == "job":
                    given.append(message["job_id"])
                    agent.done(message, last_seq=message["first_seq"] - 1)
                else:
                    assert message["type"] == "ack" and message["done"] and message["seq"] == -1
        assert sorted(given) == sorted(accepted)  # all of them, none twice
        for job_id in accepted:
            assert coordinator.wait_for_status(job_id, {"succeeded"})
        for agent in agents:
            agent.ws.close()
    finally:
        coordinator.stop()


@pytest.mark.timeout(60)
@pytest.mark.both_backends
def test_a_job_cancelled_while_queued_is_never_given(tmp_path: Path, backend: Backend) -> None:
    """A queued job cancelled before any contributor is free is skipped; the next is given."""
    coordinator = Coordinator(
        data_dir=tmp_path / "coordinator", extra_args=backend.coordinator_args
    ).start()
    try:
        first = coordinator.submit("print(1)")
        second = coordinator.submit("print(2)")
        assert coordinator.api("POST", f"/api/v1/jobs/{first}/cancel").status_code == 202
        assert coordinator.job(second)["queue_position"] == 1
        agent = FakeAgent(coordinator)
        job = agent.recv_type("job")
        assert job["job_id"] == second
        agent.done(job, last_seq=job["first_seq"] - 1)
        coordinator.wait_for_status(second, {"succeeded"})
        assert coordinator.job(first)["status"] == "cancelled"
        agent.ws.close()
    finally:
        coordinator.stop()


def _writer_database(tmp_path: Path) -> Path:
    path = tmp_path / "db.sqlite3"

    async def schema() -> None:
        engine = create_engine(path)
        await upgrade(engine)
        await engine.dispose()

    asyncio.run(schema())
    return path


@pytest.mark.timeout(30)
def test_a_failing_operation_fails_only_its_caller(tmp_path: Path) -> None:
    """Operations waiting together share one transaction; one that raises is rolled back
    alone and only its caller sees the error, the others are committed."""
    path = _writer_database(tmp_path)
    insert = "INSERT INTO uploads (sha256, owner, size, uploaded_at) VALUES (?, 'o', 1, 0)"
    inside, gate = threading.Event(), threading.Event()

    def held(conn: sqlite3.Connection) -> str:
        inside.set()
        gate.wait(10)  # the others queue up behind this one meanwhile
        conn.execute(insert, ("held",))
        return "held"

    def good(name: str) -> object:
        return lambda conn: (conn.execute(insert, (name,)), name)[1]

    def bad(conn: sqlite3.Connection) -> None:
        conn.execute(insert, ("bad",))
        conn.execute(insert, ("bad",))  # the same key again: IntegrityError

    async def scenario() -> None:
        writer = GroupWriter(path)
        first = asyncio.ensure_future(writer.run(held))
        assert await asyncio.to_thread(inside.wait, 10), "the writer never ran ``held``"
        rest = [writer.run(good("a")), writer.run(bad), writer.run(good("b"))]  # type: ignore[arg-type]
        gathered = asyncio.gather(*rest, return_exceptions=True)
        await asyncio.sleep(0)
        gate.set()
        assert await first == "held"
        a, failure, b = await gathered
        assert (a, b) == ("a", "b")
        assert isinstance(failure, sqlite3.IntegrityError)
        await writer.close()
        assert writer.operations == 4 and writer.transactions <= 2

    asyncio.run(scenario())
    with sqlite3.connect(path) as conn:
        stored = {row[0] for row in conn.execute("SELECT sha256 FROM uploads")}
    assert stored == {"held", "a", "b"}


@pytest.mark.timeout(30)
def test_operations_beside_a_failing_one_take_effect_exactly_once(tmp_path: Path) -> None:
    """A batch with an operation that raises is run again with savepoints: the operations
    beside it still take effect once each, never twice, and in the order they were asked."""
    path = _writer_database(tmp_path)
    insert = "INSERT INTO uploads (sha256, owner, size, uploaded_at) VALUES (?, 'o', ?, 0)"
    inside, gate = threading.Event(), threading.Event()

    def held(conn: sqlite3.Connection) -> None:
        inside.set()
        gate.wait(10)  # the others queue up behind this one meanwhile

    def grow(conn: sqlite3.Connection) -> int:
        total = conn.execute("SELECT COALESCE(SUM(size), 0) FROM uploads").fetchone()[0]
        conn.execute(insert, (f"grow-{total}", total + 1))
        return int(total) + 1

    def bad(conn: sqlite3.Connection) -> None:
        conn.execute(insert, ("bad", 1000))
        raise RuntimeError("refused after writing")

    async def scenario() -> list[object]:
        writer = GroupWriter(path)
        first = asyncio.ensure_future(writer.run(held))
        assert await asyncio.to_thread(inside.wait, 10), "the writer never ran ``held``"
        rest = [writer.run(grow), writer.run(bad), writer.run(grow), writer.run(grow)]
        gathered = asyncio.gather(*rest, return_exceptions=True)
        await asyncio.sleep(0)
        gate.set()
        await first
        results = await gathered
        await writer.close()
        return results

    one, failure, two, three = asyncio.run(scenario())
    assert (one, two, three) == (1, 2, 4)
    assert isinstance(failure, RuntimeError)
    with sqlite3.connect(path) as conn:
        stored = sorted(row[0] for row in conn.execute("SELECT size FROM uploads"))
    assert stored == [1, 2, 4]


@pytest.mark.timeout(30)
def test_a_failed_transaction_fails_all_its_callers_and_the_writer_goes_on(
    tmp_path: Path,
) -> None:
    """If the transaction itself breaks (here an operation ends it), every caller in it
    gets the error and the next transaction works."""
    path = _writer_database(tmp_path)

    def breaks_the_transaction(conn: sqlite3.Connection) -> None:
        conn.execute("COMMIT")  # ends the transaction under the writer's feet

    async def scenario() -> None:
        writer = GroupWriter(path)
        with pytest.raises(sqlite3.OperationalError):
            await writer.run(breaks_the_transaction)
        assert await writer.run(lambda conn: conn.execute("SELECT 1").fetchone()[0]) == 1
        await writer.close()

    asyncio.run(scenario())


def test_queue_is_fifo_by_number_with_requeues_in_their_place() -> None:
    """Oldest first; a requeued job goes back to its place; plain-only takers skip jobs
    with requirements; counts per owner and positions follow."""
    queue = JobQueue()
    for number, plain, owner in [(1, True, "a"), (2, False, "b"), (3, True, "a"), (4, True, "b")]:
        queue.add(QueuedJob(number, f"j{number}", owner, plain))
    queue.add(QueuedJob(1, "j1", "a", True))  # idempotent
    assert len(queue) == 4 and queue.count("a", of_owner=True) == 2
    first = queue.take(plain_only=False)
    assert first is not None and first.id == "j1"
    assert queue.position(2) == 1 and queue.position(4) == 3
    taken = queue.take(plain_only=True)
    assert taken is not None and taken.id == "j3"
    queue.add(first)  # requeued: back in front
    assert [queue.take(plain_only=False).id for _ in range(3)] == ["j1", "j2", "j4"]  # type: ignore[union-attr]
    assert queue.take(plain_only=False) is None and queue.count() == 0
    assert queue.count("a", of_owner=True) == 0


def test_a_reload_keeps_what_was_queued_taken_or_cancelled_here_during_its_read() -> None:
    """A reload whose rows were read before this coordinator queued a job, and after it took
    and cancelled others (reads race the coordinator's own moves on PostgreSQL), ends with
    the job queued here and without the ones taken or cancelled here."""
    jobs = [QueuedJob(number, f"j{number}", None, True) for number in range(1, 6)]
    queue = JobQueue()
    queue.replace_all(jobs[:4])
    mark = queue.reload_journal()
    queue.add(jobs[4])  # committed after the reload's snapshot
    taken = queue.take(plain_only=False)  # j1: its claim under way when the rows were read
    assert queue.discard("j2") is not None  # cancelled here
    queue.discard("j9")  # not here: a no-op, replayed as one
    queue.replace_all(jobs[:4], mark)  # the snapshot: j1..j4
    assert taken is not None and taken.id == "j1"
    assert [queue.position_of(f"j{n}") for n in range(1, 6)] == [None, None, 1, 2, 3]
    failed = queue.reload_journal()
    queue.add(QueuedJob(6, "j6", None, True))
    queue.end_reload(failed)  # the read failed: the queue stays as it is
    assert len(queue) == 4 and queue.position_of("j6") == 4
    again = queue.reload_journal()
    queue.replace_all(jobs[2:5], again)  # nothing changed here meanwhile: the rows win
    assert len(queue) == 3 and queue.position_of("j6") is None


@pytest.mark.timeout(60)
def test_a_database_over_its_size_limit_refuses_new_jobs_with_429(tmp_path: Path) -> None:
    """Once the database is at --max-db-mib and the submitter holds its share of it (alone:
    all of it), a submission gets 429 and one sentence."""
    coordinator = Coordinator(
        data_dir=tmp_path / "coordinator", extra_args=["--max-db-mib", "1"]
    ).start()
    try:
        big = "# " + "x" * (400 * 1024) + "\nprint(1)\n"
        deadline = time.monotonic() + 30
        while True:
            response = coordinator.api("POST", "/api/v1/jobs", json={"script": big})
            if response.status_code == 429:
                break
            assert response.status_code == 201, response.text
            assert time.monotonic() < deadline, "the size limit was never enforced"
        detail = response.json()["detail"]
        assert "database is at its 1 MiB limit" in detail and "\n" not in detail
    finally:
        coordinator.stop()


@pytest.mark.timeout(60)
def test_the_other_writer_gets_its_turn_while_the_group_writer_is_busy(tmp_path: Path) -> None:
    """With the group writer committing back to back, each transaction of the engine's
    writer (logs, contributors) still gets SQLite's write lock within a few of them,
    instead of polling for it until its busy timeout."""
    path = tmp_path / "db.sqlite3"
    turns = WriteTurns()
    flooding_started = threading.Event()

    def busy(conn: sqlite3.Connection) -> None:
        flooding_started.set()
        time.sleep(0.005)  # holds the write lock, as a big batch would

    async def scenario() -> list[float]:
        engine = create_engine(path, turns)
        await upgrade(engine)
        writer = GroupWriter(path, turns, max_batch=1)
        stop = asyncio.Event()

        async def keep_busy() -> None:
            while not stop.is_set():
                await asyncio.gather(*(writer.run(busy) for _ in range(8)))

        flooding = asyncio.create_task(keep_busy())
        # The group writer is committing before the other writer asks for its turn.
        assert await asyncio.to_thread(flooding_started.wait, 10)
        waits = []
        for index in range(20):
            began = time.monotonic()
            async with engine.begin() as conn:
                await conn.exec_driver_sql(
                    "INSERT INTO uploads (sha256, owner, size, uploaded_at) "
                    f"VALUES ('{index}', 'o', 1, 0)"
                )
            waits.append(time.monotonic() - began)
        stop.set()
        await flooding
        await writer.close()
        await engine.dispose()
        return waits

    waits = asyncio.run(scenario())
    assert max(waits) < 0.5, f"the engine's writer waited up to {max(waits):.2f} s"
