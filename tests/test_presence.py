"""The coordinator's scale path: presence kept in memory, dispatch from an idle set.

Real coordinator on loopback, contributors speaking the real protocol (``FakeAgent``); the
database is read directly only to count its commits, never written.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager

from fake_agent import FakeAgent
from support import Coordinator, wait_until

HEARTBEAT = {"type": "heartbeat", "cpu_percent": 12.5, "ram_free_bytes": 7, "ram_total_bytes": 9}


@contextmanager
def database(coordinator: Coordinator) -> Iterator[sqlite3.Connection]:
    """A read-only connection of our own to the coordinator's database file."""
    path = coordinator.data_dir / "compound.sqlite3"
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        yield conn


def data_version(conn: sqlite3.Connection) -> int:
    """Changes whenever another connection commits to the database."""
    version: int = conn.execute("PRAGMA data_version").fetchone()[0]
    return version


def heartbeat_of(coordinator: Coordinator, node_id: str) -> dict[str, object] | None:
    for row in coordinator.contributors():
        if row["id"] == node_id and row["cpu_percent"] == 12.5:
            return row
    return None


def test_heartbeats_are_written_back_in_batches(coordinator: Coordinator) -> None:
    """200 heartbeats in a burst cost a few commits, not 200; their figures still arrive."""
    agent = FakeAgent(coordinator)
    with database(coordinator) as conn:
        before = data_version(conn)
        began = time.monotonic()
        for _ in range(200):
            agent.send(HEARTBEAT)
        row = wait_until(lambda: heartbeat_of(coordinator, agent.node_id), 10, "the heartbeat")
        commits = data_version(conn) - before
        sweeps = (time.monotonic() - began) / 0.75 + 2  # sweep interval: lease timeout / 4
    assert row["ram_free_bytes"] == 7 and row["ram_total_bytes"] == 9
    assert commits <= sweeps, f"{commits} commits for 200 heartbeats"
    agent.close()


def test_last_heartbeat_survives_a_clean_restart(coordinator: Coordinator) -> None:
    """A heartbeat still in memory at SIGTERM is written on the way out."""
    agent = FakeAgent(coordinator)
    agent.send(HEARTBEAT)
    agent.send({"type": "heartbeat", "cpu_percent": 1.0})  # a round trip: the first is handled
    coordinator.stop()
    agent.close()
    with database(coordinator) as conn:
        row = conn.execute(
            "SELECT cpu_percent, state FROM contributors WHERE id = ?", (agent.node_id,)
        ).fetchone()
    assert row is not None and row[0] in (12.5, 1.0) and row[1] == "offline"


def test_silent_contributor_goes_offline_and_its_job_moves(coordinator: Coordinator) -> None:
    """Heartbeats live in memory, yet a contributor that falls silent is still closed, its
    job requeued and handed to the next idle contributor."""
    silent = FakeAgent(coordinator)
    job_id = coordinator.submit("print('x')\n")
    job = silent.recv_type("job")
    assert job["job_id"] == job_id
    assert silent.close_code(timeout_s=20) == 1001  # lease timeout 3 s
    wait_until(
        lambda: any(
            c["id"] == silent.node_id and c["state"] == "offline"
            for c in coordinator.contributors()
        ),
        20,
        "the silent contributor to be offline",
    )
    other = FakeAgent(coordinator)
    again = other.recv_type("job", timeout_s=20)
    assert again["job_id"] == job_id and again["lease_id"] != job["lease_id"]
    assert coordinator.job(job_id)["attempts"] == 2
    other.close()


def test_only_the_silent_contributor_is_closed_whatever_its_place(
    coordinator: Coordinator,
) -> None:
    """Contributors heard from are kept in order of last word: one that connected first but
    keeps heartbeating neither hides nor shares the fate of a silent one behind it."""
    first, silent, last = (FakeAgent(coordinator) for _ in range(3))
    stop = threading.Event()

    def keep_beating() -> None:
        while not stop.wait(0.5):
            for agent in (first, last):
                agent.send(HEARTBEAT)

    beater = threading.Thread(target=keep_beating)
    beater.start()
    try:
        assert silent.close_code(timeout_s=20) == 1001  # lease timeout 3 s
        time.sleep(1.0)  # a few more sweeps: the others must survive them
    finally:
        stop.set()
        beater.join(5)
    online = {c["id"] for c in coordinator.contributors() if c["state"] != "offline"}
    assert online == {first.node_id, last.node_id}
    first.close()
    last.close()


def test_dispatch_gives_one_job_per_idle_contributor_and_reuses_freed_ones(
    coordinator: Coordinator,
) -> None:
    """Three idle contributors and four jobs: one job each; the one that finishes first
    gets the fourth; nobody ever holds two."""
    agents = [FakeAgent(coordinator) for _ in range(3)]
    ids = [coordinator.submit(f"print({n})\n") for n in range(4)]
    jobs = [agent.recv_type("job") for agent in agents]
    assert sorted(job["job_id"] for job in jobs) == sorted(ids[:3])
    agents[1].done(jobs[1], last_seq=-1)
    fourth = agents[1].recv_type("job")
    assert fourth["job_id"] == ids[3]
    coordinator.wait_for_status(jobs[1]["job_id"], {"succeeded"}, 10)
    for agent in agents:
        agent.close()


def test_reconnected_contributor_is_idle_again(coordinator: Coordinator) -> None:
    """A contributor that leaves and comes back with nothing running takes the next job."""
    agent = FakeAgent(coordinator)
    node_id = agent.node_id
    agent.close()
    wait_until(
        lambda: any(
            c["id"] == node_id and c["state"] == "offline" for c in coordinator.contributors()
        ),
        10,
        "the contributor to be offline",
    )
    job_id = coordinator.submit("print('x')\n")
    back = FakeAgent(coordinator, node_id=node_id)
    assert back.recv_type("job")["job_id"] == job_id
    back.close()
