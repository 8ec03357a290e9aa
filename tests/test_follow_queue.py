"""Followers of queued jobs: positions from memory, throttled; their job's own changes at once.

A coordinator app under uvicorn in a thread of the test (so its settings and its store can be
reached), real sockets, a contributor speaking the real protocol. Database reads are counted
by wrapping the real store's read methods; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from websockets.sync.client import ClientConnection, connect

from compound.coordinator.app import create_app
from compound.coordinator.follow.follower import IDLE_RECHECK_S
from compound.coordinator.scheduling.hub import ChangeHub, Wakeup
from compound.coordinator.settings import CoordinatorSettings
from compound.coordinator.state import CoordinatorState
from fake_agent import FakeAgent
from pg_cluster import Backend
from support import Coordinator, wait_until
from uvicorn_thread import serving_in_thread

# Every test with a coordinator runs on SQLite and on PostgreSQL.
pytestmark = [pytest.mark.timeout(90), pytest.mark.both_backends]

# Long enough that a message held back by the throttle could never arrive within a wait.
LONG_INTERVAL_S = 60.0
PROMPT_S = 10.0  # a bound for "at once" on a busy machine, far below LONG_INTERVAL_S


@contextmanager
def in_process(
    tmp_path: Path, backend: Backend, interval_s: float
) -> Iterator[tuple[Coordinator, FastAPI]]:
    """A coordinator app on a loopback port, its state on ``backend``; a ``Coordinator``
    handle that only addresses it."""
    settings = CoordinatorSettings(
        data_dir=tmp_path / "coordinator",
        position_update_interval_s=interval_s,
        database_url=backend.url,
    )
    app = create_app(settings)
    with serving_in_thread(app) as port:
        yield Coordinator(data_dir=settings.data_dir, port=port), app


def state_of(app: FastAPI) -> CoordinatorState:
    state: CoordinatorState = app.state.compound
    return state


class Follower:
    """One follow socket; the messages it received, with the time each arrived."""

    def __init__(self, coordinator: Coordinator, job_id: str) -> None:
        url = f"{coordinator.ws_url}/api/v1/jobs/{job_id}/follow"
        self.ws: ClientConnection = connect(url).__enter__()
        self.received: list[tuple[float, dict[str, Any]]] = []

    def next(self, timeout_s: float = PROMPT_S) -> dict[str, Any]:
        message: dict[str, Any] = json.loads(self.ws.recv(timeout=timeout_s))
        self.received.append((time.monotonic(), message))
        return message

    def until(self, done: Callable[[dict[str, Any]], bool], timeout_s: float) -> dict[str, Any]:
        """Messages up to the first ``done`` one (which is returned), within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            message = self.next(max(0.01, deadline - time.monotonic()))
            if done(message):
                return message

    def positions(self) -> list[int]:
        return [
            m["job"]["queue_position"]
            for _, m in self.received
            if m["type"] == "status" and m["job"]["status"] == "queued"
        ]

    def close(self) -> None:
        self.ws.close()


def test_the_hub_wakes_job_watchers_at_once_and_queue_watchers_once() -> None:
    """A job's change rings its watchers, marked as a change of their job; a queue movement
    rings only the alarms armed for it, once, and is counted even when no one listens."""

    async def scenario() -> None:
        hub = ChangeHub()
        mine, other, unarmed = Wakeup(), Wakeup(), Wakeup()
        hub.watch("a", mine)
        hub.watch("b", other)
        hub.watch("c", unarmed)
        hub.watch_queue(mine)
        hub.watch_queue(other)
        hub.notify("a", queue_moved=True)
        await asyncio.wait_for(mine.wait(LONG_INTERVAL_S), PROMPT_S)
        await asyncio.wait_for(other.wait(LONG_INTERVAL_S), PROMPT_S)
        assert mine.job_changed and not other.job_changed
        assert hub.queue_generation == 1
        hub.queue_moved()  # no one armed: only counted
        assert hub.queue_generation == 2
        began = time.monotonic()
        await unarmed.wait(0.05)  # not rung: it waits its whole timeout
        assert time.monotonic() - began >= 0.04 and not unarmed.job_changed
        for job_id, wakeup in (("a", mine), ("b", other), ("c", unarmed)):
            hub.unwatch(job_id, wakeup)
        assert hub.watching() == 0

    asyncio.run(asyncio.wait_for(scenario(), PROMPT_S))


def status_is(status: str, position: int | None = None) -> Callable[[dict[str, Any]], bool]:
    def matches(message: dict[str, Any]) -> bool:
        job = message.get("job", {})
        return (
            message["type"] == "status"
            and job["status"] == status
            and (position is None or job["queue_position"] == position)
        )

    return matches


def test_positions_decrease_to_the_truth_then_running(tmp_path: Path, backend: Backend) -> None:
    """A follower of the 6th queued job sees each true position in turn (never a wrong or
    rising one) as the jobs ahead are claimed one by one, then ``running``, then its end."""
    with in_process(tmp_path, backend, interval_s=0.2) as (coordinator, _):
        jobs = [coordinator.submit(f"print({index})") for index in range(6)]
        follower = Follower(coordinator, jobs[-1])
        assert status_is("queued", 6)(follower.next())
        agent = FakeAgent(coordinator)
        for index in range(5):
            given = agent.recv_type("job")
            assert given["job_id"] == jobs[index]
            # Each claim moves it up one place; the latest position always arrives.
            follower.until(status_is("queued", 5 - index), PROMPT_S)
            agent.done(given, last_seq=given["first_seq"] - 1)
        given = agent.recv_type("job")
        assert given["job_id"] == jobs[-1]
        running = follower.until(status_is("running"), PROMPT_S)
        assert running["job"]["queue_position"] is None
        agent.done(given, last_seq=given["first_seq"] - 1)
        end = follower.until(lambda m: m["type"] == "end", PROMPT_S)
        assert end["job"]["status"] == "succeeded"
        assert follower.positions() == [6, 5, 4, 3, 2, 1]
        follower.close()
        agent.ws.close()


def test_a_claim_reaches_its_follower_inside_the_quiet_window(
    tmp_path: Path, backend: Backend
) -> None:
    """Right after a position update (so a 60 s quiet window is open) the job is claimed:
    its follower sees ``running`` at once; the throttle holds back positions only."""
    with in_process(tmp_path, backend, interval_s=LONG_INTERVAL_S) as (coordinator, _):
        first, second = coordinator.submit("print(1)"), coordinator.submit("print(2)")
        follower = Follower(coordinator, second)
        assert status_is("queued", 2)(follower.next())
        agent = FakeAgent(coordinator)
        given = agent.recv_type("job")
        assert given["job_id"] == first
        follower.until(status_is("queued", 1), PROMPT_S)  # the window opens here
        agent.done(given, last_seq=given["first_seq"] - 1)
        assert agent.recv_type("job")["job_id"] == second
        follower.until(status_is("running"), PROMPT_S)
        follower.close()
        agent.ws.close()


def test_movements_inside_the_window_end_in_the_latest_position(
    tmp_path: Path, backend: Backend
) -> None:
    """Jobs ahead cancelled during the quiet window: the follower gets no update before the
    window ends, and then the latest position (a movement while it was not listening is
    not lost)."""
    interval_s = 1.0
    with in_process(tmp_path, backend, interval_s=interval_s) as (coordinator, _):
        jobs = [coordinator.submit(f"print({index})") for index in range(5)]
        follower = Follower(coordinator, jobs[-1])
        first = follower.next()
        assert status_is("queued", 5)(first), first["job"]["queue_position"]
        assert coordinator.api("POST", f"/api/v1/jobs/{jobs[0]}/cancel").status_code == 202
        follower.until(status_is("queued", 4), PROMPT_S)
        for job_id in jobs[1:3]:
            assert coordinator.api("POST", f"/api/v1/jobs/{job_id}/cancel").status_code == 202
        follower.until(status_is("queued", 2), PROMPT_S + interval_s)
        positions = follower.positions()
        assert positions[:2] == [5, 4] and positions[-1] == 2
        assert positions == sorted(positions, reverse=True)
        updates = [at for at, m in follower.received if status_is("queued")(m)][1:]
        # Timed at the receiver, which can only stretch the gaps the sender kept, never
        # shrink them much: half the interval is a bound no unthrottled sender meets.
        assert all(b - a > interval_s / 2 for a, b in itertools.pairwise(updates))
        follower.close()


class ReadCounter:
    """Counts calls to the real stores' job and log reads (each one query or more)."""

    def __init__(self, state: CoordinatorState) -> None:
        self.calls = 0
        for store, name in ((state.jobs, "get"), (state.logs, "read")):
            setattr(store, name, self._counted(getattr(store, name)))

    def _counted(self, read: Callable[..., Any]) -> Callable[..., Any]:
        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return await read(*args, **kwargs)

        return counted


def _reads_for(tmp_path: Path, backend: Backend, followers_count: int) -> int:
    """Reads of job rows and log pages while ``followers_count`` queued jobs, each with a
    follower, are claimed and finished one after another."""
    with in_process(tmp_path, backend, interval_s=0.5) as (coordinator, app):
        jobs = [coordinator.submit("print(1)") for _ in range(followers_count)]
        followers = [Follower(coordinator, job_id) for job_id in jobs]
        for follower in followers:
            assert status_is("queued")(follower.next())
        counter = ReadCounter(state_of(app))
        agent = FakeAgent(coordinator)
        for _ in jobs:
            given = agent.recv_type("job")
            agent.done(given, last_seq=given["first_seq"] - 1)
        for follower in followers:
            assert follower.until(lambda m: m["type"] == "end", PROMPT_S)["job"]["status"] == (
                "succeeded"
            )
            follower.close()
        agent.ws.close()
        # No follower's alarm outlives it (its socket may take a moment to finish closing).
        wait_until(lambda: state_of(app).hub.watching() == 0, PROMPT_S, "alarms removed")
        return counter.calls


def test_claims_cost_followers_of_queued_jobs_linear_reads(
    tmp_path: Path, backend: Backend
) -> None:
    """N followers of N queued jobs, the N jobs claimed and finished: the reads grow with N
    (a few per job: its claim, its end), not with N² (every claim re-reading every
    follower's job)."""
    count = 50
    reads = _reads_for(tmp_path, backend, count)
    # Per job: claim (page + row), end (page + row + last page), plus the odd re-read of a
    # job taken for a claim while others move. Waking all on each claim costs ~3·N²/2.
    assert reads <= 10 * count, f"{reads} reads for {count} followers and claims"


class QueryCounter:
    """Counts the real stores' database reads of job rows (``get``) and of log pages
    (``_read_page``: a page served from memory is not one)."""

    def __init__(self, state: CoordinatorState) -> None:
        self.calls: dict[str, int] = {}
        for store, name in ((state.jobs, "get"), (state.logs, "_read_page")):
            setattr(store, name, self._counted(name, getattr(store, name)))

    def _counted(self, name: str, read: Callable[..., Any]) -> Callable[..., Any]:
        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return await read(*args, **kwargs)

        return counted


def test_a_follower_reads_its_job_row_only_when_the_job_changed(
    tmp_path: Path, backend: Backend
) -> None:
    """A follower of a job that waits, runs, prints in five batches and ends reads the job
    row three times (opening and ownership check, claim, end) and never a stored log page:
    a job that never ran has no records, and new records come from memory (on SQLite; on
    PostgreSQL they come from the database, a read or two per batch)."""
    with in_process(tmp_path, backend, interval_s=0.5) as (coordinator, app):
        job_id = coordinator.submit("print(1)")
        counter = QueryCounter(state_of(app))
        began = time.monotonic()
        follower = Follower(coordinator, job_id)
        assert status_is("queued", 1)(follower.next())
        agent = FakeAgent(coordinator)
        given = agent.recv_type("job")
        follower.until(status_is("running"), PROMPT_S)
        first = given["first_seq"]
        for batch in range(5):
            agent.log(given, [first + batch], data=f"line {batch}\n")
            records = follower.until(lambda m: m["type"] == "records", PROMPT_S)["records"]
            assert [(r["seq"], r["data"]) for r in records] == [(first + batch, f"line {batch}\n")]
        agent.done(given, last_seq=first + 4)
        end = follower.until(lambda m: m["type"] == "end", PROMPT_S)
        assert end["job"]["status"] == "succeeded" and end["job"]["exit_code"] == 0
        follower.close()
        agent.ws.close()
        # A follower with no news re-reads its job every IDLE_RECHECK_S: a slow run may add some.
        rechecks = int((time.monotonic() - began) / IDLE_RECHECK_S)
        pages = counter.calls.get("_read_page", 0)
        if backend.name == "sqlite":
            assert pages == 0
        else:  # no tails in memory (another coordinator may store the job's records)
            assert pages <= 2 * 5 + 2 + rechecks, f"{pages} page reads"
        rows = counter.calls.get("get", 0)
        assert rows <= 3 + rechecks, f"{rows} job reads"


def test_a_late_follower_of_an_ended_job_gets_every_record_then_the_end(
    tmp_path: Path, backend: Backend
) -> None:
    """Opened after the job ended, from the start and from the middle of its log: the records
    after ``after`` exactly once, then ``end``; opened from its last record, only the end."""
    with in_process(tmp_path, backend, interval_s=0.5) as (coordinator, _):
        job_id = coordinator.submit("print(1)")
        agent = FakeAgent(coordinator)
        given = agent.recv_type("job")
        first = given["first_seq"]
        agent.log(given, [first, first + 1, first + 2])
        agent.recv_type("ack")
        agent.done(given, last_seq=first + 2)
        coordinator.wait_for_status(job_id, {"succeeded"})
        agent.ws.close()
        for after, expected in (
            (-1, [first, first + 1, first + 2]),
            (first, [first + 1, first + 2]),
            (first + 2, []),
        ):
            ws = connect(f"{coordinator.ws_url}/api/v1/jobs/{job_id}/follow?after={after}")
            with ws:
                messages = [json.loads(raw) for raw in ws]
            assert messages[0]["type"] == "status" and messages[-1]["type"] == "end"
            seqs = [r["seq"] for m in messages if m["type"] == "records" for r in m["records"]]
            assert seqs == expected
