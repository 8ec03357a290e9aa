"""A contributor that speaks the real protocol over a real socket, scripted by the test.

"Fake the server, not the client" does not apply here: the coordinator is the thing under
test, and this peer is how a modified or hostile agent would talk to it.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from websockets.sync.client import ClientConnection, connect

from support import Coordinator


class FakeAgent:
    def __init__(
        self,
        coordinator: Coordinator,
        node_id: str | None = None,
        token: str | None = None,
        hello: dict[str, Any] | None = None,
    ) -> None:
        self.node_id = node_id or f"fake-{uuid.uuid4().hex[:10]}"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.ws: ClientConnection = connect(
            f"{coordinator.ws_url}/ws/contributor",
            max_size=8 * 1024 * 1024,
            additional_headers=headers,
        ).__enter__()
        self.send(
            {
                "type": "hello",
                "protocol_version": 1,
                "node_id": self.node_id,
                "name": self.node_id,
                "cores": 1,
                "memory_bytes": 1 << 30,
                **(hello or {}),
            }
        )
        welcome = self.recv()
        assert welcome["type"] == "welcome", welcome

    def send(self, message: dict[str, Any]) -> None:
        self.ws.send(json.dumps(message))

    def recv(self, timeout_s: float = 30) -> dict[str, Any]:
        message: dict[str, Any] = json.loads(self.ws.recv(timeout=timeout_s))
        return message

    def recv_type(self, kind: str, timeout_s: float = 30) -> dict[str, Any]:
        """The next message of type ``kind``, skipping others (acks, abandons)."""
        while True:
            message = self.recv(timeout_s)
            if message["type"] == kind:
                return message

    def log(self, job: dict[str, Any], seqs: list[int], data: str = "x\n") -> None:
        self.send(
            {
                "type": "log",
                "job_id": job["job_id"],
                "lease_id": job["lease_id"],
                "records": [{"seq": seq, "stream": "stdout", "data": data} for seq in seqs],
            }
        )

    def done(self, job: dict[str, Any], last_seq: int, exit_code: int = 0) -> None:
        self.send(
            {
                "type": "done",
                "job_id": job["job_id"],
                "lease_id": job["lease_id"],
                "status": "succeeded" if exit_code == 0 else "failed",
                "exit_code": exit_code,
                "last_seq": last_seq,
            }
        )

    def report(self, job: dict[str, Any], records: list[tuple[str, str]], first_seq: int) -> int:
        """Report `records` ((stream, data) pairs) as one log batch numbered from
        `first_seq`, and wait for its ack; the next seq."""
        self.send(
            {
                "type": "log",
                "job_id": job["job_id"],
                "lease_id": job["lease_id"],
                "records": [
                    {"seq": first_seq + i, "stream": stream, "data": data}
                    for i, (stream, data) in enumerate(records)
                ],
            }
        )
        last_seq = first_seq + len(records) - 1
        assert self.recv_type("ack")["seq"] == last_seq
        return last_seq + 1

    def run(self, job: dict[str, Any], records: list[tuple[str, str]]) -> None:
        """Report `records` as the job's output, in batches of up to 256 K characters (escapes
        grow sixfold in JSON: far below MAX_MESSAGE_BYTES), then its success."""
        seq = job["first_seq"]
        batch: list[tuple[str, str]] = []
        for index, record in enumerate(records):
            batch.append(record)
            if sum(len(data) for _, data in batch) >= 256 * 1024 or index == len(records) - 1:
                seq = self.report(job, batch, seq)
                batch = []
        self.done(job, last_seq=seq - 1)

    def close_code(self, timeout_s: float = 30) -> int | None:
        """Read until the coordinator closes the socket; its close code."""
        from websockets.exceptions import ConnectionClosed

        try:
            while True:
                self.ws.recv(timeout=timeout_s)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None

    def close(self) -> None:
        self.ws.close()


def job_with_output(coordinator: Coordinator, records: list[tuple[str, str]]) -> str:
    """A job a FakeAgent ran and finished (exit 0) whose stored output is `records`, given as
    (stream, data) pairs of at most MAX_RECORD_CHARS each; its id. No Docker involved."""
    agent = FakeAgent(coordinator)
    try:
        job_id = coordinator.submit("print('output reported by a fake agent')")
        job = agent.recv_type("job")
        assert job["job_id"] == job_id, job
        agent.run(job, records)
        coordinator.wait_for_status(job_id, {"succeeded"}, timeout_s=30)
    finally:
        agent.close()
    return job_id
