"""Contributor slots: an agent that says ``slots: N`` in its hello runs up to N jobs at once,
each in a container of its own; one that says nothing gets one job at a time.

The coordinator's slot accounting runs on SQLite and on PostgreSQL (``both_backends``)."""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect
from websockets.sync.server import ServerConnection, serve

from compound.protocol import MAX_SLOTS, Hello, ProtocolError, parse_agent_message
from fake_agent import FakeAgent
from support import Agent, Coordinator, product_env, wait_until

# Long enough for the coordinator to have sent a job it was going to send (it sends within
# milliseconds of a slot freeing); the absence of a message cannot be waited on otherwise.
NOTHING_MORE_S = 1.0

HELLO = {
    "type": "hello",
    "protocol_version": 1,
    "node_id": "n",
    "name": "n",
    "cores": 1,
    "memory_bytes": 1,
}


def _no_job_within(agent: FakeAgent, timeout_s: float) -> bool:
    try:
        message = agent.recv_type("job", timeout_s)
    except TimeoutError:
        return True
    raise AssertionError(f"a job was sent beyond the contributor's slots: {message}")


@pytest.mark.timeout(60)
@pytest.mark.both_backends
def test_a_contributor_with_three_slots_holds_three_jobs_and_no_more(
    coordinator: Coordinator,
) -> None:
    """Five queued jobs, a contributor with three slots: it gets three at once, and the
    fourth only when one of them is done."""
    job_ids = [coordinator.submit(f"print({i})") for i in range(5)]
    agent = FakeAgent(coordinator, hello={"slots": 3})
    given = [agent.recv_type("job") for _ in range(3)]
    assert [job["job_id"] for job in given] == job_ids[:3]  # oldest first
    assert _no_job_within(agent, NOTHING_MORE_S)
    agent.done(given[1], last_seq=given[1]["first_seq"] - 1)
    fourth = agent.recv_type("job")
    assert fourth["job_id"] == job_ids[3]
    assert _no_job_within(agent, NOTHING_MORE_S)
    for job in (given[0], given[2], fourth):
        agent.done(job, last_seq=job["first_seq"] - 1)
    assert agent.recv_type("job")["job_id"] == job_ids[4]


@pytest.mark.timeout(60)
@pytest.mark.both_backends
def test_a_hello_without_slots_gets_one_job_at_a_time(coordinator: Coordinator) -> None:
    """An agent that predates slots (no field in its hello) is never given a second job
    while it holds one."""
    first, second = coordinator.submit("print(1)"), coordinator.submit("print(2)")
    agent = FakeAgent(coordinator)
    job = agent.recv_type("job")
    assert job["job_id"] == first
    assert _no_job_within(agent, NOTHING_MORE_S)
    agent.done(job, last_seq=job["first_seq"] - 1)
    assert agent.recv_type("job")["job_id"] == second


@pytest.mark.timeout(60)
@pytest.mark.both_backends
def test_slots_are_shared_with_other_contributors_in_turn(coordinator: Coordinator) -> None:
    """A contributor with many slots does not starve one with a single slot: after its
    first job it goes behind the others that are idle."""
    wide = FakeAgent(coordinator, hello={"slots": 4})
    narrow = FakeAgent(coordinator)
    coordinator.wait_for_contributor(narrow.node_id)
    job_ids = [coordinator.submit(f"print({i})") for i in range(3)]
    to_wide = [wide.recv_type("job")["job_id"], wide.recv_type("job")["job_id"]]
    to_narrow = narrow.recv_type("job")["job_id"]
    assert sorted([*to_wide, to_narrow]) == sorted(job_ids)


@pytest.mark.timeout(60)
@pytest.mark.both_backends
def test_jobs_kept_over_a_reconnect_count_against_the_slots(coordinator: Coordinator) -> None:
    """An agent that comes back running two jobs, now with three slots, is given exactly one
    more: the leases it kept fill two of them."""
    job_ids = [coordinator.submit(f"print({i})") for i in range(4)]
    before = FakeAgent(coordinator, hello={"slots": 2})
    held = [before.recv_type("job"), before.recv_type("job")]
    before.ws.close()
    running = [{"job_id": job["job_id"], "lease_id": job["lease_id"]} for job in held]
    after = FakeAgent(coordinator, node_id=before.node_id, hello={"slots": 3, "running": running})
    assert after.recv_type("job")["job_id"] == job_ids[2]
    assert _no_job_within(after, NOTHING_MORE_S)
    for job in held:
        assert coordinator.job(job["job_id"])["status"] == "running"


@pytest.mark.parametrize(
    "slots", [0, -1, MAX_SLOTS + 1, 2**63, "4", 4.0, True, None, [4], {"n": 4}]
)
def test_a_hello_with_bad_slots_is_refused(slots: Any) -> None:
    """Slots must be an integer from 1 to MAX_SLOTS: anything else is a protocol error
    (close 1002), never taken as a number."""
    with pytest.raises(ProtocolError) as refused:
        parse_agent_message(json.dumps({**HELLO, "slots": slots}))
    assert refused.value.close_code == 1002
    assert "slots" in refused.value.reason


def test_hello_slots_defaults_to_one_and_keeps_valid_values() -> None:
    """No field: one slot; 1 and MAX_SLOTS are taken as they are."""
    assert isinstance(hello := parse_agent_message(json.dumps(HELLO)), Hello)
    assert hello.slots == 1
    for slots in (1, MAX_SLOTS):
        parsed = parse_agent_message(json.dumps({**HELLO, "slots": slots}))
        assert isinstance(parsed, Hello) and parsed.slots == slots


@pytest.mark.timeout(30)
@pytest.mark.parametrize("slots", [0, MAX_SLOTS + 1, "2"])
def test_the_coordinator_closes_a_socket_whose_hello_has_bad_slots(
    coordinator: Coordinator, slots: Any
) -> None:
    """Over a real socket: the worst sender's slots get close 1002 with one sentence, no
    session, and the coordinator stays healthy."""
    hello = {**HELLO, "node_id": "bad-slots", "slots": slots}
    with connect(f"{coordinator.ws_url}/ws/contributor") as websocket:
        websocket.send(json.dumps(hello))
        with pytest.raises(ConnectionClosed) as closed:
            websocket.recv(timeout=10)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1002
    assert "Traceback" not in closed.value.rcvd.reason
    assert all(c["id"] != "bad-slots" for c in coordinator.contributors())
    assert coordinator.api("GET", "/healthz").json()["status"] == "ok"


MARKER_JOB = (
    "import pathlib, socket, time\n"
    "pathlib.Path('/tmp/first-was-here').write_text('secret')\n"
    "print(socket.gethostname(), flush=True)\n"
    "time.sleep(120)\n"
)
LOOKING_JOB = (
    "import os, socket\n"
    "print(socket.gethostname(), os.path.exists('/tmp/first-was-here'), flush=True)\n"
)


def _first_line(coordinator: Coordinator, job_id: str) -> str:
    records = coordinator.logs(job_id)
    return str(records[0]["data"]).strip() if records else ""


@pytest.mark.timeout(120)
def test_an_agent_with_two_slots_runs_two_jobs_at_once_in_separate_containers(
    coordinator: Coordinator, start_agent: Callable[..., Agent]
) -> None:
    """With --slots 2 a second job runs to its end while the first still runs, in another
    container: it sees neither the first's files nor its hostname."""
    agent = start_agent(extra_args=["--slots", "2", "--warm", "2"])
    first = coordinator.submit(MARKER_JOB)
    first_host = wait_until(lambda: _first_line(coordinator, first), 60, "the first job's line")
    second = coordinator.submit(LOOKING_JOB)
    done = coordinator.wait_for_status(second, {"succeeded", "failed"}, timeout_s=60)
    assert done["status"] == "succeeded", done
    second_host, seen = _first_line(coordinator, second).split()
    assert seen == "False"
    assert second_host != first_host
    running = coordinator.job(first)
    assert running["status"] == "running"
    assert running["contributor_id"] == done["contributor_id"] == agent.node_id
    coordinator.api("POST", f"/api/v1/jobs/{first}/cancel")
    assert coordinator.wait_for_status(first, {"cancelled"}, timeout_s=30)["status"] == (
        "cancelled"
    )


@pytest.mark.timeout(30)
def test_agent_refuses_slots_out_of_range(tmp_path: Path) -> None:
    """--slots 0 or past MAX_SLOTS is refused with one sentence before anything starts."""
    for slots in ("0", str(MAX_SLOTS + 1)):
        finished = subprocess.run(
            [
                sys.executable,
                "-m",
                "compound",
                "agent",
                "--slots",
                slots,
                "--state-dir",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            timeout=20,
            env=product_env(),
        )
        assert finished.returncode == 2
        assert "--slots" in finished.stderr and "Traceback" not in finished.stderr


WAITING_JOB = "import time\nprint('up', flush=True)\ntime.sleep(120)\n"


class JobFlood:
    """A hostile coordinator on 127.0.0.1: welcomes the agent, then sends it ``count`` jobs
    at once whatever its slots; records the jobs that printed."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.printed: queue.Queue[str] = queue.Queue()
        self.ended: queue.Queue[dict[str, Any]] = queue.Queue()
        self.sockets: list[ServerConnection] = []
        self.server = serve(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.socket.getsockname()[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _handle(self, websocket: ServerConnection) -> None:
        self.sockets.append(websocket)
        hello = json.loads(websocket.recv())
        welcome = {"contributor_id": hello["node_id"], "heartbeat_interval_s": 5.0}
        websocket.send(json.dumps({"type": "welcome", **welcome}))
        for index in range(self.count):
            job = {"job_id": f"j{index}", "lease_id": f"l{index}", "script": WAITING_JOB}
            websocket.send(json.dumps({"type": "job", **job}))
        with contextlib.suppress(ConnectionClosed):
            for raw in websocket:
                message = json.loads(raw)
                if message["type"] == "log" and message.get("records"):
                    self.printed.put(message["job_id"])
                elif message["type"] == "done":
                    self.ended.put(message)

    def cancel(self, job_id: str) -> None:
        self.sockets[-1].send(json.dumps({"type": "cancel", "job_id": job_id}))

    def next_printed(self, seen: set[str], timeout_s: float) -> str | None:
        """The next job, not in ``seen``, that printed within ``timeout_s``; None if none."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                job_id = self.printed.get(timeout=left)
            except queue.Empty:
                return None
            if job_id not in seen:
                return job_id
        return None

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(10)


@pytest.mark.timeout(120)
def test_an_agent_runs_no_more_jobs_at_once_than_its_slots_whatever_it_is_sent(
    start_agent: Callable[..., Agent],
) -> None:
    """A coordinator that sends four jobs to an agent with two slots gets two running; the
    third starts only when one of them is cancelled; the fourth, cancelled while it waits
    for a slot, ends cancelled without ever running."""
    flood = JobFlood(4)
    try:
        start_agent(coordinator_url=flood.url, extra_args=["--slots", "2", "--warm", "2"])
        running: set[str] = set()
        for _ in range(2):
            job_id = flood.next_printed(running, 60)
            assert job_id is not None, "two jobs should run"
            running.add(job_id)
        # Containers start in well under this even on a busy machine (the two above did).
        assert flood.next_printed(running, 5.0) is None, "a third job ran beyond the slots"
        flood.cancel(sorted(running)[0])
        third = flood.next_printed(running, 60)
        assert third is not None and third not in running
        (fourth,) = {f"j{index}" for index in range(4)} - running - {third}
        flood.cancel(fourth)
        ends = [flood.ended.get(timeout=60) for _ in range(2)]
        ended = {end["job_id"]: end for end in ends}
        assert ended.keys() == {sorted(running)[0], fourth}
        assert ended[fourth]["status"] == "cancelled"
        assert ended[fourth]["exit_code"] is None  # it never ran
        assert flood.next_printed({*running, third}, 0.5) is None
    finally:
        flood.close()
