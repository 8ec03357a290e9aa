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
