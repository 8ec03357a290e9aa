"""The soak's abusive clients: each hits one coordinator edge on loopback until told to stop.

Every generator is bounded in count (it never opens more than it was asked to) and in time
(it returns once ``stop`` is set; waits inside have their own timeouts), and keeps counters
that end up in the soak's report.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from soak_sockets import (
    PARTIAL_REQUEST,
    close_frame,
    connect,
    read_response_head,
    wait_closed_by_peer,
    websocket_request,
)

ABANDONED_SCRIPT = "print('abandoned')\n"
HTTP_TIMEOUT_S = 10.0
# In flight at once: the coordinator slows down under load and the count must still be met.
SUBMIT_WORKERS = 32
# Connections opened per second while ramping up, so the listen backlog is not the test.
RAMP_PER_S = 1000.0
REOPEN_PAUSE_S = 0.05
FAILED_OPEN_PAUSE_S = 0.5


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds``; True if ``stop`` was set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), max(0.0, seconds))
    return stop.is_set()


def _close_all(sockets: set[socket.socket]) -> None:
    for sock in sockets:
        sock.close()
    sockets.clear()


@dataclass
class AbandonedSubmitters:
    """Queue jobs and open their seed submitter socket, then walk away at once.

    Half the sockets leave with a close frame, half just drop the TCP connection. The jobs
    stay queued (behind the soak's ordinary jobs), so the coordinator's side of each socket
    has nothing to send until the job runs: it must notice the peer left on its own.
    """

    port: int
    total: int
    spread_over_s: float
    submitted: int = 0
    submit_failures: int = 0
    opened: int = 0
    open_failures: int = 0
    submit_latencies_s: list[float] = field(default_factory=list)
    job_ids: list[str] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        started = time.monotonic()
        indices = iter(range(self.total))
        limits = httpx.Limits(max_connections=SUBMIT_WORKERS)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.port}", timeout=HTTP_TIMEOUT_S, limits=limits
        ) as client:
            workers = [self._worker(client, indices, started, stop) for _ in range(SUBMIT_WORKERS)]
            await asyncio.gather(*workers)

    async def _worker(
        self, client: httpx.AsyncClient, indices: Any, started: float, stop: asyncio.Event
    ) -> None:
        for index in indices:
            due = started + index * self.spread_over_s / self.total
            if await _sleep_or_stop(stop, due - time.monotonic()):
                return
            job_id = await self._submit(client)
            if job_id is not None:
                await self._abandon(job_id, clean_close=index % 2 == 0)

    async def _submit(self, client: httpx.AsyncClient) -> str | None:
        began = time.monotonic()
        try:
            response = await client.post(
                "/api/v1/jobs", json={"script": ABANDONED_SCRIPT, "name": "soak-abandoned"}
            )
            response.raise_for_status()
        except httpx.HTTPError:
            self.submit_failures += 1
            return None
        self.submit_latencies_s.append(time.monotonic() - began)
        self.submitted += 1
        job_id: str = response.json()["id"]
        self.job_ids.append(job_id)
        return job_id

    async def _abandon(self, job_id: str, clean_close: bool) -> None:
        loop = asyncio.get_running_loop()
        try:
            sock = await connect(self.port)
        except OSError:
            self.open_failures += 1
            return
        try:
            await loop.sock_sendall(sock, websocket_request(f"/ws/submitter/{job_id}", self.port))
            head = await read_response_head(sock, HTTP_TIMEOUT_S)
            if not head.startswith(b"HTTP/1.1 101"):
                self.open_failures += 1
                return
            self.opened += 1
            if clean_close:
                await loop.sock_sendall(sock, close_frame())
        except (OSError, TimeoutError):
            self.open_failures += 1
        finally:
            sock.close()

    def figures(self) -> dict[str, Any]:
        latencies = sorted(self.submit_latencies_s) or [0.0]
        return {
            "submitted": self.submitted,
            "submit_failures": self.submit_failures,
            "sockets_abandoned": self.opened,
            "socket_failures": self.open_failures,
            "submit_p50_s": statistics.median(latencies),
            "submit_max_s": latencies[-1],
        }


@dataclass
class SilentFollowers:
    """Follow one big job's log from the start over sockets that never read a byte.

    The receive buffer is tiny and nothing is ever read, so everything the coordinator sends
    piles up on its side: in the kernel's send buffer, then in whatever it buffers itself.
    """

    port: int
    job_id: str
    count: int
    receive_buffer_bytes: int = 4096
    opened: int = 0
    failures: int = 0
    _sockets: set[socket.socket] = field(default_factory=set)

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        request_path = f"/api/v1/jobs/{self.job_id}/follow?after=-1"
        started = time.monotonic()
        try:
            for index in range(self.count):
                due = started + index / RAMP_PER_S
                if await _sleep_or_stop(stop, due - time.monotonic()):
                    return
                try:
                    sock = await connect(self.port, self.receive_buffer_bytes)
                    self._sockets.add(sock)
                    await loop.sock_sendall(sock, websocket_request(request_path, self.port))
                    self.opened += 1
                except OSError:
                    self.failures += 1
            await stop.wait()
        finally:
            _close_all(self._sockets)

    def figures(self) -> dict[str, Any]:
        return {"opened": self.opened, "failures": self.failures}


@dataclass
class HalfOpenConnections:
    """Hold up to ``limit`` connections that sent half a request line and then nothing.

    Each slot reopens its connection when the server closes it, so a server that times them
    out sees a steady stream of new ones; ``max_opens`` bounds the total.
    """

    port: int
    limit: int
    max_opens: int
    opens: int = 0
    open_failures: int = 0
    closed_by_server: int = 0
    open_now: int = 0
    peak_open: int = 0
    _sockets: set[socket.socket] = field(default_factory=set)

    async def run(self, stop: asyncio.Event) -> None:
        slots = [self._slot(index, stop) for index in range(self.limit)]
        try:
            await asyncio.gather(*slots)
        finally:
            _close_all(self._sockets)

    async def _slot(self, index: int, stop: asyncio.Event) -> None:
        if await _sleep_or_stop(stop, index / RAMP_PER_S):
            return
        while self.opens < self.max_opens and not stop.is_set():
            pause = REOPEN_PAUSE_S if await self._hold_one(stop) else FAILED_OPEN_PAUSE_S
            if await _sleep_or_stop(stop, pause):
                return

    async def _hold_one(self, stop: asyncio.Event) -> bool:
        """One connection held until the server closes it or the soak stops; False if none."""
        self.opens += 1
        try:
            sock = await connect(self.port)
            await asyncio.get_running_loop().sock_sendall(sock, PARTIAL_REQUEST)
        except (OSError, TimeoutError):
            self.open_failures += 1
            return False
        self._sockets.add(sock)
        self.open_now += 1
        self.peak_open = max(self.peak_open, self.open_now)
        closed = asyncio.ensure_future(wait_closed_by_peer(sock))
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({closed, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if closed.done():
                self.closed_by_server += 1
        finally:
            for task in (closed, stopped):
                task.cancel()
            self.open_now -= 1
            self._sockets.discard(sock)
            sock.close()
        return True

    def figures(self) -> dict[str, Any]:
        return {
            "opens": self.opens,
            "open_failures": self.open_failures,
            "closed_by_server": self.closed_by_server,
            "peak_open": self.peak_open,
        }


@dataclass
class LoopLag:
    """How late this process's event loop wakes up: if it lags, the load is not what we say."""

    interval_s: float = 0.1
    lags_s: list[float] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            began = time.monotonic()
            await asyncio.sleep(self.interval_s)
            self.lags_s.append(time.monotonic() - began - self.interval_s)

    def figures(self) -> dict[str, Any]:
        lags = sorted(self.lags_s) or [0.0]
        return {"p99_s": lags[int(0.99 * (len(lags) - 1))], "max_s": lags[-1]}
