"""A fake agent for the soak: holds one job's lease and reports garbage about it.

It speaks the real protocol over a real WebSocket to /ws/contributor: a valid hello, then
(once told to misbehave) a bounded stream of bad log batches (duplicate and out-of-order
sequence numbers, gaps, huge and negative sequence numbers, invalid JSON, bytes that are not
UTF-8, unknown message types, over-long records, reports on jobs it does not hold, a message
over the size limit) mixed with heartbeats, and it reconnects whenever it is closed.

Why a job of its own (the "decoy"): a contributor with no job is idle and the scheduler would
hand it the next queued job, an ordinary one the soak checks. Holding the decoy keeps it busy
across reconnects (its hello lists the decoy's lease, the coordinator reattaches it), and
makes the batches reach the coordinator's log store instead of stopping at the lease check.
If the coordinator takes the decoy away, the fake stops registering (it then says hello with
an unsupported protocol version) so it can never capture an ordinary job.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from compound.protocol import (
    MAX_MESSAGE_BYTES,
    MAX_RECORD_CHARS,
    PROTOCOL_VERSION,
    Abandon,
    Heartbeat,
    Hello,
    Job,
    ProtocolError,
    RunningJob,
    Welcome,
    parse_coordinator_message,
    serialize,
)

HEARTBEAT_EVERY_S = 1.0
RECONNECT_PAUSE_S = 0.1
OPEN_TIMEOUT_S = 10.0
# Over the size limit: sent rarely, it is the most expensive message for both sides.
TOO_BIG_EVERY = 500
BAD_KINDS = (
    "duplicate_seqs",
    "gap",
    "invalid_json",
    "huge_seq",
    "huge_seq_in_range",
    "negative_seq",
    "not_utf8",
    "unknown_type",
    "foreign_job",
    "record_too_long",
    "no_job_named",
)


@dataclass
class BadContributor:
    ws_url: str
    node_id: str = "soak-bad-contributor"
    max_messages_per_s: float = 50.0
    max_connections: int = 5000
    decoy: RunningJob | None = None
    decoy_lost_at_s: float | None = None
    captured_jobs: list[str] = field(default_factory=list)
    connections: int = 0
    connect_failures: int = 0
    sent: Counter[str] = field(default_factory=Counter)
    close_codes: Counter[str] = field(default_factory=Counter)
    replies: Counter[str] = field(default_factory=Counter)
    _misbehaving: bool = False
    _misbehave_started: float = 0.0
    _registered: asyncio.Event = field(default_factory=asyncio.Event)
    _has_decoy: asyncio.Event = field(default_factory=asyncio.Event)
    _next_send: float = 0.0
    _seq: int = 0
    # Shared by all connections, so each kind gets its turn as a connection's first message.
    _kinds: Iterator[str] = field(default_factory=lambda: itertools.cycle(BAD_KINDS))

    async def wait_for_decoy(self, timeout_s: float) -> RunningJob:
        """The job the coordinator handed us (the soak submits it while we are the only idle
        contributor)."""
        await asyncio.wait_for(self._has_decoy.wait(), timeout_s)
        assert self.decoy is not None
        return self.decoy

    async def wait_registered(self, timeout_s: float) -> None:
        await asyncio.wait_for(self._registered.wait(), timeout_s)

    def misbehave(self) -> None:
        """From now on send bad batches instead of just heartbeats."""
        self._misbehaving = True
        self._misbehave_started = time.monotonic()

    async def run(self, stop: asyncio.Event) -> None:
        while self.connections + self.connect_failures < self.max_connections:
            try:
                await self._connection(stop)
            except (OSError, TimeoutError, InvalidHandshake):
                self.connect_failures += 1
            if stop.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RECONNECT_PAUSE_S)

    async def _connection(self, stop: asyncio.Event) -> None:
        async with connect(
            f"{self.ws_url}/ws/contributor",
            open_timeout=OPEN_TIMEOUT_S,
            max_size=MAX_MESSAGE_BYTES,
            ping_interval=None,
        ) as websocket:
            self.connections += 1
            reader = asyncio.create_task(self._read(websocket))
            try:
                await self._send(websocket, "hello", self._hello())
                await self._talk(websocket, stop)
            except ConnectionClosed:
                pass
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
            self._record_close(websocket)

    def _hello(self) -> str:
        running = [self.decoy] if self.decoy else []
        registering = self.decoy is not None or self.decoy_lost_at_s is None
        return serialize(
            Hello(
                protocol_version=PROTOCOL_VERSION if registering else PROTOCOL_VERSION + 99,
                node_id=self.node_id,
                name="soak bad contributor",
                cores=1,
                memory_bytes=1,
                running=running,
            )
        )

    def _record_close(self, websocket: ClientConnection) -> None:
        code = websocket.close_code
        self.close_codes["none (dropped)" if code is None else str(code)] += 1

    async def _talk(self, websocket: ClientConnection, stop: asyncio.Event) -> None:
        last_heartbeat = time.monotonic()
        while not stop.is_set():
            if time.monotonic() - last_heartbeat >= HEARTBEAT_EVERY_S:
                last_heartbeat = time.monotonic()
                await self._send(websocket, "heartbeat", serialize(Heartbeat()))
            elif self._misbehaving:
                kind = (
                    "too_big" if sum(self.sent.values()) % TOO_BIG_EVERY == 0 else next(self._kinds)
                )
                await self._send(websocket, kind, self._bad_message(kind))
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), HEARTBEAT_EVERY_S)

    async def _send(self, websocket: ClientConnection, kind: str, message: str | bytes) -> None:
        # One pace for every message, hello and heartbeats included.
        delay = self._next_send - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        self._next_send = max(self._next_send, time.monotonic()) + 1 / self.max_messages_per_s
        self.sent[kind] += 1
        await websocket.send(message)

    async def _read(self, websocket: ClientConnection) -> None:
        async for raw in websocket:
            try:
                message = parse_coordinator_message(raw)
            except ProtocolError:
                self.replies["unparseable"] += 1
                continue
            self.replies[message.type] += 1
            if isinstance(message, Welcome):
                self._on_welcome(message)
            elif isinstance(message, Job):
                await self._on_job(websocket, message)
            elif (
                isinstance(message, Abandon) and self.decoy and message.job_id == self.decoy.job_id
            ):
                # Idle now: leave before the scheduler hands us someone else's job.
                self._lose_decoy()
                await websocket.close()

    def _on_welcome(self, welcome: Welcome) -> None:
        self._registered.set()
        if self.decoy is not None and self.decoy.job_id not in welcome.acked:
            self._lose_decoy()

    async def _on_job(self, websocket: ClientConnection, job: Job) -> None:
        if self.decoy is None and self.decoy_lost_at_s is None:
            self.decoy = RunningJob(job_id=job.job_id, lease_id=job.lease_id)
            self._has_decoy.set()
            return
        # Someone else's work: leave at once; its lease expires and the job is requeued.
        self.captured_jobs.append(job.job_id)
        await websocket.close()

    def _lose_decoy(self) -> None:
        if self.decoy is not None:
            self.decoy = None
            self.decoy_lost_at_s = time.monotonic() - self._misbehave_started

    def _bad_message(self, kind: str) -> str | bytes:
        self._seq += 3
        job_id = self.decoy.job_id if self.decoy else uuid.uuid4().hex[:16]
        lease_id = self.decoy.lease_id if self.decoy else uuid.uuid4().hex

        def log(*seqs: int, data: str = "soak\n", job: str | None = job_id) -> str:
            records = [{"seq": seq, "stream": "stdout", "data": data} for seq in seqs]
            return json.dumps(
                {"type": "log", "job_id": job, "lease_id": lease_id, "records": records}
            )

        builders: dict[str, Any] = {
            "duplicate_seqs": lambda: log(self._seq, self._seq, max(0, self._seq - 7)),
            "gap": lambda: log(self._seq + 10_000),
            "invalid_json": lambda: '{"type": "log", "records": [{"seq": ',
            "huge_seq": lambda: log(2**63 + self._seq),
            "huge_seq_in_range": lambda: log(2**62 + self._seq),
            "negative_seq": lambda: log(-self._seq),
            "not_utf8": lambda: b'\xff\xfe{"type": "log"}',
            "unknown_type": lambda: json.dumps({"type": "nonsense", "seq": self._seq}),
            "foreign_job": lambda: log(self._seq, job=uuid.uuid4().hex[:16]),
            "record_too_long": lambda: log(self._seq, data="y" * (MAX_RECORD_CHARS + 1)),
            "no_job_named": lambda: log(self._seq, job=None),
            "too_big": lambda: "x" * (MAX_MESSAGE_BYTES + 1),
        }
        message: str | bytes = builders[kind]()
        return message

    def figures(self) -> dict[str, Any]:
        return {
            "messages_sent": sum(self.sent.values()),
            "sent_by_kind": dict(self.sent),
            "connections": self.connections,
            "connect_failures": self.connect_failures,
            "close_codes": dict(self.close_codes),
            "replies": dict(self.replies),
            "decoy_lost_at_s": self.decoy_lost_at_s,
            "captured_jobs": self.captured_jobs,
        }
