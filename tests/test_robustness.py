"""Off the happy path: bad reports, abandoned and stalled peers, big pages, quotas.

Each test runs a real coordinator process and talks to it over real sockets, as a careless
or hostile client would, once on SQLite and once on PostgreSQL (``both_backends``; the one
test about a socket alone runs on SQLite only).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from websockets.sync.client import connect

from compound.protocol import MAX_MESSAGE_BYTES
from fake_agent import FakeAgent
from pg_cluster import Backend
from support import Coordinator, product_env, stream_text, wait_until

MiB = 1024 * 1024
CHUNK = 64 * 1024  # characters per record, the protocol's maximum

pytestmark = pytest.mark.both_backends


def healthz_s(coordinator: Coordinator) -> float:
    """Seconds /healthz took on a fresh connection (it must answer 200)."""
    started = time.monotonic()
    response = httpx.get(coordinator.url + "/healthz", timeout=10)
    assert response.status_code == 200
    return time.monotonic() - started


def dispatched(coordinator: Coordinator, agent: FakeAgent, script: str = "print(1)") -> dict:
    coordinator.submit(script)
    return agent.recv_type("job")


def raw_websocket(coordinator: Coordinator, path: str, rcvbuf: int = 4096) -> socket.socket:
    """A WebSocket handshake by hand, on a socket with a tiny receive buffer, then no reads."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", coordinator.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(1)
        assert chunk, "the coordinator closed the handshake"
        response += chunk
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


def masked_text_frame(text: str) -> bytes:
    """One client-to-server text frame (clients must mask)."""
    payload = text.encode()
    mask = os.urandom(4)
    header = bytes([0x81])
    if len(payload) < 126:
        header += bytes([0x80 | len(payload)])
    elif len(payload) < 65536:
        header += bytes([0x80 | 126]) + struct.pack("!H", len(payload))
    else:
        header += bytes([0x80 | 127]) + struct.pack("!Q", len(payload))
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


def stored(coordinator: Coordinator, job_id: str) -> list[dict[str, Any]]:
    return coordinator.logs(job_id)


def assert_contiguous(records: list[dict[str, Any]]) -> None:
    assert [r["seq"] for r in records] == list(range(len(records)))


# ---------------------------------------------------------------- reports against the lease


def test_duplicate_seq_batch_is_refused_and_the_job_recovers(coordinator: Coordinator) -> None:
    """A batch repeating a seq closes its socket with 1008, stores nothing, and the job is
    requeued as a lost contributor's; the next contributor finishes it without a gap."""
    bad = FakeAgent(coordinator)
    job = dispatched(coordinator, bad)
    with connect(f"{coordinator.ws_url}/api/v1/jobs/{job['job_id']}/follow") as follower:
        bad.log(job, [0, 0, 1])
        assert bad.close_code() == 1008
        requeued = coordinator.wait_for_status(job["job_id"], {"queued"}, timeout_s=10)
        assert requeued["attempts"] == 1
        assert healthz_s(coordinator) < 1
        messages = [json.loads(follower.recv(timeout=10)) for _ in range(2)]
    records = [r for m in messages if m["type"] == "records" for r in m["records"]]
    assert len(records) <= 1  # at most the coordinator's note: never a flood
    notes = stored(coordinator, job["job_id"])
    assert [n["stream"] for n in notes] == ["system"] and "requeued" in notes[0]["data"]

    good = FakeAgent(coordinator)
    second = good.recv_type("job")
    assert second["job_id"] == job["job_id"] and second["first_seq"] == 1
    good.log(second, [1, 2])
    assert good.recv_type("ack")["seq"] == 2
    good.done(second, last_seq=2)
    assert coordinator.wait_for_status(job["job_id"], {"succeeded"})["attempts"] == 2
    assert_contiguous(stored(coordinator, job["job_id"]))


@pytest.mark.parametrize(
    "batches",
    [[[0], [5]], [[2**62]], [[2**63]], [[0, 2, 1]]],
    ids=["gap", "huge", "past-int64", "disorder"],
)
def test_seq_violations_close_1008_and_store_nothing(
    coordinator: Coordinator, batches: list[list[int]]
) -> None:
    """Gaps, numbers far ahead or past int64 and disorder: 1008, nothing of the bad batch."""
    agent = FakeAgent(coordinator)
    job = dispatched(coordinator, agent)
    for batch in batches[:-1]:
        agent.log(job, batch)
        agent.recv_type("ack")
    agent.log(job, batches[-1])
    assert agent.close_code() == 1008
    coordinator.wait_for_status(job["job_id"], {"queued"}, timeout_s=10)
    kept = [r for r in stored(coordinator, job["job_id"]) if r["stream"] == "stdout"]
    assert [r["seq"] for r in kept] == [s for batch in batches[:-1] for s in batch]
    assert healthz_s(coordinator) < 1


def test_resent_batch_is_acknowledged_and_ignored(coordinator: Coordinator) -> None:
    """A batch already stored (a resend after a lost ack) is acked again, stored once."""
    agent = FakeAgent(coordinator)
    job = dispatched(coordinator, agent)
    agent.log(job, [0, 1, 2], data="a\n")
    assert agent.recv_type("ack")["seq"] == 2
    agent.log(job, [1, 2, 3], data="b\n")  # overlaps: only 3 is new
    assert agent.recv_type("ack")["seq"] == 3
    agent.done(job, last_seq=3)
    coordinator.wait_for_status(job["job_id"], {"succeeded"})
    records = stored(coordinator, job["job_id"])
    assert_contiguous(records)
    assert [r["data"] for r in records] == ["a\n", "a\n", "a\n", "b\n"]


def test_ending_before_its_records_is_refused(coordinator: Coordinator) -> None:
    """A done announcing records that never arrived is a violation, not a success."""
    agent = FakeAgent(coordinator)
    job = dispatched(coordinator, agent)
    agent.done(job, last_seq=5)
    assert agent.close_code() == 1008
    assert coordinator.wait_for_status(job["job_id"], {"queued"}, timeout_s=10)["attempts"] == 1


def test_reports_without_the_lease_id_are_refused(coordinator: Coordinator) -> None:
    """A log or done without the current lease id stores nothing and ends nothing."""
    agent = FakeAgent(coordinator)
    job = dispatched(coordinator, agent)
    agent.send({"type": "log", "job_id": job["job_id"], "records": [{"seq": 0, "data": "x"}]})
    assert agent.recv_type("abandon")["job_id"] == job["job_id"]
    agent.send({"type": "done", "job_id": job["job_id"], "exit_code": 0})
    assert agent.recv_type("abandon")["job_id"] == job["job_id"]
    assert coordinator.job(job["job_id"])["status"] == "running"
    assert stored(coordinator, job["job_id"]) == []


def test_a_job_stored_unreadable_is_failed_not_blocking_the_queue(
    coordinator: Coordinator, backend: Backend
) -> None:
    """A queued row that cannot be read is failed with a reason; the next job runs."""
    broken = coordinator.submit("print('broken')")
    path = coordinator.data_dir / "compound.sqlite3"
    backend.execute(path, "UPDATE jobs SET args = 'not json' WHERE id = ?", [(broken,)])
    good = coordinator.submit("print('good')")
    agent = FakeAgent(coordinator)
    assert agent.recv_type("job")["job_id"] == good
    failed = coordinator.wait_for_status(broken, {"failed"}, timeout_s=10)
    assert "cannot be read" in failed["error"]
    assert httpx.get(coordinator.url + "/api/v1/jobs", timeout=10).status_code == 200


def test_the_lease_is_one_persisted_record(coordinator: Coordinator, backend: Backend) -> None:
    """A running job has exactly one lease row, which its ending deletes."""
    agent = FakeAgent(coordinator)
    job = dispatched(coordinator, agent)
    path = coordinator.data_dir / "compound.sqlite3"
    rows = backend.fetchall(path, "SELECT job_id, lease_id, holder FROM leases")
    assert rows == [(job["job_id"], job["lease_id"], agent.node_id)]
    agent.done(job, last_seq=-1)
    coordinator.wait_for_status(job["job_id"], {"succeeded"})
    assert backend.fetchall(path, "SELECT count(*) FROM leases") == [(0,)]


# ---------------------------------------------------------------- peers that leave or stall


def test_abandoned_submitter_sockets_end_their_tasks(coordinator: Coordinator) -> None:
    """Sockets closed by the client while their job is queued leave nothing behind."""
    job_id = coordinator.submit("print(1)")  # no contributor: it stays queued
    for index in range(300):
        path = "/ws/submitter/" if index % 2 else "/api/v1/jobs/"
        suffix = "" if index % 2 else "/follow"
        with connect(f"{coordinator.ws_url}{path}{job_id}{suffix}"):
            pass
    wait_until(
        lambda: httpx.get(coordinator.url + "/healthz", timeout=10).json()["followers"] == 0,
        15,
        "every abandoned follower to end",
    )
    assert healthz_s(coordinator) < 1
    process = psutil.Process(coordinator.proc.pid)  # type: ignore[union-attr]
    assert process.cpu_percent(interval=1.0) < 50


def write_big_log(coordinator: Coordinator, agent: FakeAgent, total_bytes: int) -> str:
    """A finished job whose log is ``total_bytes`` of 64 KiB records; returns its id."""
    job = dispatched(coordinator, agent)
    records = total_bytes // CHUNK
    seq = 0
    while seq < records:
        batch = list(range(seq, min(records, seq + 15)))
        agent.log(job, batch, data="y" * (CHUNK - 1) + "\n")
        agent.recv_type("ack")
        seq = batch[-1] + 1
    agent.done(job, last_seq=records - 1)
    coordinator.wait_for_status(job["job_id"], {"succeeded"})
    return str(job["job_id"])


def test_non_reading_followers_use_bounded_memory(coordinator: Coordinator) -> None:
    """100 followers of a 32 MiB log that never read hold a page each, not the log."""
    job_id = write_big_log(coordinator, FakeAgent(coordinator), 32 * MiB)
    process = psutil.Process(coordinator.proc.pid)  # type: ignore[union-attr]
    before = process.memory_info().rss
    sockets = [raw_websocket(coordinator, f"/api/v1/jobs/{job_id}/follow") for _ in range(100)]
    try:
        wait_until(
            lambda: httpx.get(coordinator.url + "/healthz", timeout=10).json()["followers"] == 100,
            20,
            "100 followers",
        )
        peak = before
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            peak = max(peak, process.memory_info().rss)
            assert healthz_s(coordinator) < 1
        assert peak - before < 200 * MiB, f"grew by {(peak - before) // MiB} MiB"
    finally:
        for sock in sockets:
            sock.close()
    wait_until(
        lambda: httpx.get(coordinator.url + "/healthz", timeout=10).json()["followers"] == 0,
        20,
        "the followers to end",
    )


def test_pages_of_huge_lines_fit_the_message_limit(coordinator: Coordinator) -> None:
    """8 lines of 1 MiB reach a follower (v1 and seed sockets) and `compound logs -f`."""
    agent = FakeAgent(coordinator)
    job = dispatched(coordinator, agent)
    line = "z" * (MiB - 1) + "\n"
    per_line = MiB // CHUNK
    for index in range(8):
        seqs = list(range(index * per_line, (index + 1) * per_line))
        agent.send(
            {
                "type": "log",
                "job_id": job["job_id"],
                "lease_id": job["lease_id"],
                "records": [
                    {"seq": s, "data": line[(s % per_line) * CHUNK : (s % per_line + 1) * CHUNK]}
                    for s in seqs
                ],
            }
        )
        agent.recv_type("ack")
    agent.done(job, last_seq=8 * per_line - 1)
    coordinator.wait_for_status(job["job_id"], {"succeeded"})

    received = ""
    with connect(
        f"{coordinator.ws_url}/api/v1/jobs/{job['job_id']}/follow", max_size=MAX_MESSAGE_BYTES
    ) as follower:
        while (message := json.loads(follower.recv(timeout=30)))["type"] != "end":
            if message["type"] == "records":
                received += stream_text(message["records"])
    assert received == line * 8

    with connect(
        f"{coordinator.ws_url}/ws/submitter/{job['job_id']}", max_size=MAX_MESSAGE_BYTES
    ) as seed:
        lines = []
        while (message := json.loads(seed.recv(timeout=30)))["type"] != "done":
            lines.append(message["line"])
    assert "".join(lines) == (line[:-1]) * 8

    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "compound",
            "logs",
            job["job_id"],
            "--follow",
            "-c",
            coordinator.url,
        ],
        capture_output=True,
        env=product_env(),
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr.decode()
    assert cli.stdout.decode() == line * 8


def test_a_contributor_that_stops_reading_delays_no_one(coordinator: Coordinator) -> None:
    """The sweeper closes a non-reading contributor in the background: another
    contributor's lease still expires on time."""
    stalled = raw_websocket(coordinator, "/ws/contributor", rcvbuf=2048)
    hello = {
        "type": "hello",
        "protocol_version": 1,
        "node_id": "stalled-node",
        "name": "stalled",
        "cores": 1,
        "memory_bytes": 1,
    }
    stalled.sendall(masked_text_frame(json.dumps(hello)))
    coordinator.wait_for_contributor("stalled-node")
    # A 1 MiB script it never reads fills its socket buffers.
    coordinator.submit("#" * (MiB - 1000) + "\nprint(1)")
    silent = FakeAgent(coordinator)
    job = dispatched(coordinator, silent)
    handed_at = time.monotonic()
    try:
        coordinator.wait_for_status(job["job_id"], {"queued"}, timeout_s=30)
        late_by = time.monotonic() - handed_at - coordinator.lease_timeout_s
        assert late_by < 3, f"lease expired {late_by:.1f} s late"
    finally:
        stalled.close()


# ---------------------------------------------------------------- quotas


def test_queue_quotas_answer_429_with_a_sentence(tmp_path: Path, backend: Backend) -> None:
    """Past the queued-jobs quotas, submissions get 429 and one sentence saying which."""
    server = Coordinator(
        data_dir=tmp_path / "c",
        extra_args=[
            *backend.coordinator_args,
            *("--max-queued-per-submitter", "2", "--max-queued", "3"),
        ],
    ).start()
    try:
        server.submit("print(1)")
        server.submit("print(2)")
        refused = server.api("POST", "/api/v1/jobs", json={"script": "print(3)"})
        assert refused.status_code == 429
        assert "queued jobs" in refused.json()["detail"]
        seed = server.api("POST", "/submit-job", json={"script": "print(3)"})
        assert seed.status_code == 429
    finally:
        server.stop()


def test_log_quota_keeps_a_note_and_drops_the_rest(tmp_path: Path, backend: Backend) -> None:
    """Past the per-job log quota, records are acked but not stored; one note says so."""
    server = Coordinator(
        data_dir=tmp_path / "c",
        extra_args=[*backend.coordinator_args, "--max-log-mib-per-job", "1"],
    ).start()
    try:
        agent = FakeAgent(server)
        job = dispatched(server, agent)
        seq = 0
        for _ in range(4):  # 4 batches of ~0.9 MiB
            batch = list(range(seq, seq + 15))
            agent.log(job, batch, data="q" * (CHUNK - 1) + "\n")
            assert agent.recv_type("ack")["seq"] == batch[-1]
            seq += 15
        agent.done(job, last_seq=seq - 1)
        server.wait_for_status(job["job_id"], {"succeeded"})
        records = server.logs(job["job_id"])
        assert sum(len(r["data"]) for r in records if r["stream"] == "stdout") <= MiB
        notes = [r for r in records if r["stream"] == "system"]
        assert len(notes) == 1 and "limit" in notes[0]["data"]
        page = server.api("GET", f"/api/v1/jobs/{job['job_id']}/logs").json()
        assert page["complete"]
    finally:
        server.stop()


def test_records_of_many_lines_are_bounded_like_any_record(
    tmp_path: Path, backend: Backend
) -> None:
    """Records packed with newlines count against the log quota by their bytes, a record
    over MAX_RECORD_CHARS is refused with 1002, and the seed socket sends each stored line."""
    server = Coordinator(
        data_dir=tmp_path / "c",
        extra_args=[*backend.coordinator_args, "--max-log-mib-per-job", "1"],
    ).start()
    try:
        agent = FakeAgent(server)
        job = dispatched(server, agent)
        for first in range(0, 30, 15):  # 30 records of 65,536 empty lines: ~1.9 MiB
            agent.log(job, list(range(first, first + 15)), data="\n" * CHUNK)
            agent.recv_type("ack")
        agent.done(job, last_seq=29)
        server.wait_for_status(job["job_id"], {"succeeded"})
        records = server.logs(job["job_id"])
        stdout = stream_text(records)
        assert set(stdout) == {"\n"} and len(stdout) <= MiB
        assert [r["stream"] for r in records].count("system") == 1
        with connect(f"{server.ws_url}/ws/submitter/{job['job_id']}") as websocket:
            messages = [json.loads(raw) for raw in websocket]
        lines = [m for m in messages if m["type"] == "log" and m["stream"] == "stdout"]
        assert len(lines) == len(stdout) and all(m["line"] == "" for m in lines)
        assert messages[-1]["type"] == "done" and healthz_s(server) < 1

        hostile = FakeAgent(server)
        second = dispatched(server, hostile)
        hostile.log(second, [0], data="\n" * (CHUNK + 1))
        assert hostile.close_code() == 1002  # a malformed message, like any oversized record
    finally:
        server.stop()


def _holds_connection_to(pid: int, client_port: int) -> bool:
    """Whether process ``pid`` has an open socket whose peer is 127.0.0.1:``client_port``."""
    return any(
        conn.raddr and conn.raddr.port == client_port
        for conn in psutil.Process(pid).net_connections(kind="tcp")
    )


def test_a_dropped_follower_that_never_reads_loses_its_socket(tmp_path: Path) -> None:
    """A follower dropped for not reading is aborted: the coordinator holds no socket for it
    within seconds, although the peer still never reads (a plain close would wait for it)."""
    server = Coordinator(
        data_dir=tmp_path / "c", extra_args=["--follower-send-timeout-s", "1"]
    ).start()
    try:
        agent = FakeAgent(server)
        job = dispatched(server, agent)
        seq = 0
        for _ in range(4):  # ~4 MiB of log: far more than the socket buffers hold
            batch = list(range(seq, seq + 15))
            agent.log(job, batch, data="q" * (CHUNK - 1) + "\n")
            assert agent.recv_type("ack")["seq"] == batch[-1]
            seq += 15
        follower = raw_websocket(server, f"/api/v1/jobs/{job['job_id']}/follow")
        client_port = follower.getsockname()[1]
        assert server.proc is not None
        pid = server.proc.pid
        try:
            assert _holds_connection_to(pid, client_port)
            wait_until(
                lambda: not _holds_connection_to(pid, client_port),
                15,
                "the coordinator to let go of the non-reading follower's socket",
            )
        finally:
            follower.close()
    finally:
        server.stop()
