"""Several coordinators on one PostgreSQL database, any of them serving any client: a job
submitted to one runs on a contributor of another, its follower anywhere sees it live, no
job is claimed twice, and a coordinator's death loses nothing (real processes, fake agents).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

from fake_agent import FakeAgent
from pg_cluster import Backend
from postgres import Cluster
from support import Coordinator, follow, stream_text, wait_until

# Fake agents send no heartbeats: a long lease keeps an idle one connected.
LEASE_TIMEOUT_S = 30.0


@pytest.fixture
def database(postgresql: Cluster) -> Backend:
    return Backend("postgresql", postgresql.new_database())


@pytest.fixture
def pair(tmp_path: Path, database: Backend) -> Iterator[tuple[Coordinator, Coordinator]]:
    """Two coordinators on one new PostgreSQL database, each with a data directory."""
    started: list[Coordinator] = []
    try:
        for name in ("a", "b"):
            server = Coordinator(
                data_dir=tmp_path / name,
                lease_timeout_s=LEASE_TIMEOUT_S,
                extra_args=database.coordinator_args,
            )
            started.append(server.start())
        yield started[0], started[1]
    finally:
        for server in started:
            server.stop()


def test_agent_on_one_coordinator_submit_and_follow_on_the_other(
    pair: tuple[Coordinator, Coordinator],
) -> None:
    """A job submitted to B runs on A's contributor; B's follower gets the exact output live."""
    a, b = pair
    agent = FakeAgent(a)
    try:
        job_id = b.submit("print('hello')")
        firsts: list[float] = []
        records: list[dict[str, Any]] = []
        ended = threading.Event()

        def watch() -> None:
            with connect(f"{b.ws_url}/api/v1/jobs/{job_id}/follow?after=-1") as websocket:
                while True:
                    message = json.loads(websocket.recv(timeout=30))
                    if message["type"] == "records":
                        firsts.append(time.monotonic())
                        records.extend(message["records"])
                    elif message["type"] == "end":
                        ended.set()
                        return

        follower = threading.Thread(target=watch, daemon=True)
        follower.start()
        job = agent.recv_type("job", timeout_s=10)
        assert job["job_id"] == job_id
        sent_at = time.monotonic()
        seq = agent.report(job, [("stdout", "line 1\n")], job["first_seq"])
        wait_until(lambda: firsts, 10, "the first line on B's follower")
        assert firsts[0] - sent_at < 2.0, "woken by the hint, not the idle recheck"
        seq = agent.report(job, [("stdout", "line 2\n"), ("stderr", "oops\n")], seq)
        agent.done(job, last_seq=seq - 1)
        assert ended.wait(30)
        follower.join(5)
    finally:
        agent.close()
    assert stream_text(records) == "line 1\nline 2\n"
    assert stream_text(records, "stderr") == "oops\n"
    # A later follower on A reads the same log from the database.
    again, final = follow(a, job_id)
    assert final["status"] == "succeeded"
    assert [r["seq"] for r in again] == [r["seq"] for r in records]


def test_500_jobs_raced_by_2_coordinators_and_20_agents_each_run_once(
    pair: tuple[Coordinator, Coordinator], database: Backend, tmp_path: Path
) -> None:
    """500 jobs submitted to both, 20 agents split between them: each job is claimed once."""
    coordinators = pair
    total = 500
    claims: Counter[str] = Counter()
    by_coordinator: Counter[int] = Counter()
    lock = threading.Lock()
    stop = threading.Event()
    failures: list[BaseException] = []
    agents = [FakeAgent(coordinators[i % 2]) for i in range(20)]

    def work(index: int, agent: FakeAgent) -> None:
        try:
            while not stop.is_set():
                try:
                    job = agent.recv_type("job", timeout_s=0.5)
                except TimeoutError:
                    continue
                with lock:
                    claims[job["job_id"]] += 1
                    by_coordinator[index % 2] += 1
                agent.run(job, [("stdout", f"{job['job_id']}\n")])
        except BaseException as exc:  # reported by the test's thread
            if not stop.is_set():
                failures.append(exc)

    threads = [
        threading.Thread(target=work, args=(i, agent), daemon=True)
        for i, agent in enumerate(agents)
    ]
    for thread in threads:
        thread.start()
    try:
        job_ids = [coordinators[i % 2].submit(f"print({i})") for i in range(total)]

        def all_ended() -> bool:
            rows = database.fetchall(
                tmp_path, "SELECT count(*) FROM jobs WHERE status = 'succeeded'"
            )
            return rows[0][0] == total

        wait_until(all_ended, 90, "every job to succeed", interval_s=0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(5)
        for agent in agents:
            agent.close()
    assert not failures, failures
    assert sorted(claims) == sorted(job_ids)
    assert set(claims.values()) == {1}, [job for job, n in claims.items() if n > 1]
    runs = database.fetchall(
        tmp_path, "SELECT job_id, count(*) FROM job_events WHERE status = 'running' GROUP BY 1"
    )
    assert len(runs) == total and {n for _, n in runs} == {1}
    assert by_coordinator[0] and by_coordinator[1], "both coordinators' agents ran jobs"


def test_a_coordinator_killed_mid_job_its_agent_finishes_on_the_other(
    pair: tuple[Coordinator, Coordinator],
) -> None:
    """SIGKILL A mid-job: its agent reconnects to B with the job it runs and finishes it."""
    a, b = pair
    agent = FakeAgent(a)
    job_id = b.submit("print('x')")
    job = agent.recv_type("job", timeout_s=10)
    assert job["job_id"] == job_id
    seq = agent.report(job, [("stdout", "before\n")], job["first_seq"])
    a.kill()
    agent.close()
    running = [{"job_id": job_id, "lease_id": job["lease_id"]}]
    again = FakeAgent(b, node_id=agent.node_id, hello={"running": running})
    try:
        seq = again.report(job, [("stdout", "after\n")], seq)
        again.done(job, last_seq=seq - 1)
        b.wait_for_status(job_id, {"succeeded"}, timeout_s=30)
    finally:
        again.close()
    records, final = follow(b, job_id)
    assert final["attempts"] == 1
    assert stream_text(records) == "before\nafter\n"


def test_a_lease_whose_coordinator_died_is_recovered_by_another(
    tmp_path: Path, database: Backend
) -> None:
    """A's contributor never comes back after A dies: B requeues the job once its lease
    row expires, and B's contributor runs it."""
    a, b = (
        Coordinator(data_dir=tmp_path / name, extra_args=database.coordinator_args).start()
        for name in ("a", "b")
    )
    try:
        lost = FakeAgent(a)
        job_id = b.submit("print('x')")
        assert lost.recv_type("job", timeout_s=10)["job_id"] == job_id
        a.kill()
        lost.close()
        # Connected once the job is queued again: a fake agent sends no heartbeats.
        b.wait_for_status(job_id, {"queued"}, timeout_s=20)
        rescuer = FakeAgent(b)
        try:
            job = rescuer.recv_type("job", timeout_s=20)
            assert job["job_id"] == job_id
            rescuer.run(job, [("stdout", "rescued\n")])
            b.wait_for_status(job_id, {"succeeded"}, timeout_s=20)
        finally:
            rescuer.close()
        records, final = follow(b, job_id)
        assert stream_text(records) == "rescued\n" and final["attempts"] == 2
    finally:
        a.stop()
        b.stop()


def test_hints_are_cut_under_the_payload_limit_and_read_back() -> None:
    """Posts go out in payloads under PostgreSQL's limit, each read back whole, in order."""
    from compound.coordinator.scheduling.cluster import parse, payloads
    from compound.coordinator.storage.notify_channel import MAX_PAYLOAD_BYTES

    posts = [f"{'qcr'[i % 3]}{i:016x}" for i in range(2000)]
    sent = payloads("origin", posts)
    assert len(sent) > 1 and all(len(p.encode()) <= MAX_PAYLOAD_BYTES for p in sent)
    read = [parse(p) for p in sent]
    assert {origin for origin, _ in read} == {"origin"}
    assert [kind + job for _, got in read for kind, job in got] == posts
    assert parse("origin x q") == ("origin", [])  # malformed posts are skipped
