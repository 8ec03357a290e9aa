"""Simulated contributors: N real WebSocket connections to /ws/contributor on loopback.

Each speaks the real protocol with the models of ``compound.protocol``: a hello, a
heartbeat every ``heartbeat_s`` (phases spread evenly, as real agents' would be), and for
every job it is given an immediate ``done`` (exit 0, no output), as if the job took no time.
The time each job message arrives is kept, so the caller can measure dispatch latency with
the clock of the same host.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from compound.protocol import (
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    Done,
    Heartbeat,
    Hello,
    Job,
    JobStatus,
    Welcome,
    parse_coordinator_message,
    serialize,
)

CONNECT_TIMEOUT_S = 30.0
# Connections opened at once while ramping up, so the listen backlog is not what is tested.
CONNECT_CONCURRENCY = 200


@dataclass
class Swarm:
    ws_url: str
    count: int
    heartbeat_s: float = 5.0
    prefix: str = "swarm"
    connected: int = 0
    connect_failures: int = 0
    closed_by_server: int = 0
    heartbeats_sent: int = 0
    jobs_done: int = 0
    # job id -> time.monotonic() the job message arrived
    job_arrivals: dict[str, float] = field(default_factory=dict)
    _all_connected: asyncio.Event = field(default_factory=asyncio.Event)
    _job_arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, stop: asyncio.Event) -> None:
        """Connect every contributor (bounded concurrency), keep them until ``stop``."""
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
        tasks = [
            asyncio.create_task(self._contributor(index, gate, stop)) for index in range(self.count)
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def wait_connected(self, timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s):
            await self._all_connected.wait()

    def _counted(self) -> None:
        if self.connected + self.connect_failures >= self.count:
            self._all_connected.set()

    async def _contributor(self, index: int, gate: asyncio.Semaphore, stop: asyncio.Event) -> None:
        async with gate:
            try:
                websocket = await asyncio.wait_for(self._open(index), CONNECT_TIMEOUT_S)
            except (OSError, TimeoutError, ConnectionClosed):
                self.connect_failures += 1
                self._counted()
                return
        self.connected += 1
        self._counted()
        beat = asyncio.create_task(self._heartbeat(websocket, index, stop))
        try:
            await self._serve(websocket, stop)
        finally:
            beat.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(websocket.close(), 2.0)

    async def _open(self, index: int) -> ClientConnection:
        websocket = await connect(
            f"{self.ws_url}/ws/contributor",
            max_size=MAX_MESSAGE_BYTES,
            ping_interval=None,
            compression=None,
            open_timeout=CONNECT_TIMEOUT_S,
        )
        hello = Hello(
            protocol_version=PROTOCOL_VERSION,
            node_id=f"{self.prefix}-{index:05d}",
            name=f"{self.prefix}-{index:05d}",
            cores=1,
            memory_bytes=1 << 30,
            runtime="simulated",
        )
        await websocket.send(serialize(hello))
        welcome = parse_coordinator_message(await websocket.recv())
        if not isinstance(welcome, Welcome):
            await websocket.close()
            raise OSError(f"expected a welcome, got {welcome.type}")
        return websocket

    async def _heartbeat(
        self, websocket: ClientConnection, index: int, stop: asyncio.Event
    ) -> None:
        # Phases spread over the interval, as agents started at different times would be.
        await asyncio.sleep(self.heartbeat_s * index / max(1, self.count))
        message = serialize(
            Heartbeat(cpu_percent=1.0, ram_free_bytes=1 << 29, ram_total_bytes=1 << 30)
        )
        # On a fixed grid, not "interval after the last send": a stall of this process would
        # otherwise shift every late contributor's phase and bunch them for good.
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        with contextlib.suppress(ConnectionClosed):
            while not stop.is_set():
                await websocket.send(message)
                self.heartbeats_sent += 1
                next_at += self.heartbeat_s
                await asyncio.sleep(max(0.0, next_at - loop.time()))

    async def _serve(self, websocket: ClientConnection, stop: asyncio.Event) -> None:
        stopped = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                received = asyncio.ensure_future(websocket.recv())
                await asyncio.wait({received, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if not received.done():
                    received.cancel()
                    return
                try:
                    message = parse_coordinator_message(received.result())
                except ConnectionClosed:
                    self.closed_by_server += 1
                    return
                if isinstance(message, Job):
                    await self._finish(websocket, message)
        finally:
            stopped.cancel()

    async def _finish(self, websocket: ClientConnection, job: Job) -> None:
        self.job_arrivals[job.job_id] = time.monotonic()
        self._job_arrived.set()
        done = Done(
            job_id=job.job_id,
            lease_id=job.lease_id,
            status=JobStatus.SUCCEEDED,
            exit_code=0,
            last_seq=job.first_seq - 1,
        )
        await websocket.send(serialize(done))
        self.jobs_done += 1

    def figures(self) -> dict[str, int]:
        return {
            "connected": self.connected,
            "connect_failures": self.connect_failures,
            "closed_by_server": self.closed_by_server,
            "heartbeats_sent": self.heartbeats_sent,
            "jobs_done": self.jobs_done,
        }
