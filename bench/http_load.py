"""A light HTTP/1.1 load client: keep-alive connections that POST jobs, nothing else.

httpx costs the load generator about a millisecond of CPU per request, and the load
generator shares the machine's two cores with the coordinator it measures. This client
speaks the same real protocol over real sockets (request line, headers, a JSON body; the
answer's status line, headers and a Content-Length body), with none of httpx's generality.
Two ways to load: ``flood`` (as fast as answers come, for the saturated rate) and
``offer`` (open loop at a fixed rate, timed from when each request was due, so a slow
answer delays nothing after it and the latency includes any wait for a free connection).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field


class HttpError(Exception):
    pass


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self._host, self._port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post_json(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        assert self._reader is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self._writer.write(head.encode() + body)
        status_line = await self._reader.readline()
        if not status_line:
            self.close()
            raise HttpError("connection closed")
        status = int(status_line.split(b" ", 2)[1])
        length = 0
        while (line := await self._reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self._reader.readexactly(length)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


@dataclass
class JobSubmitter:
    """Submits ``script`` as jobs; keeps when each accepted one was sent (or was due)."""

    host: str
    port: int
    script: str
    connections: int = 16
    sent_at: dict[str, float] = field(default_factory=dict)
    failures: int = 0

    async def _submit(self, connection: Connection, began: float) -> None:
        try:
            status, body = await connection.post_json(
                "/api/v1/jobs", json.dumps({"script": self.script}).encode()
            )
        except (OSError, HttpError, asyncio.IncompleteReadError):
            connection.close()
            self.failures += 1
            return
        if status != 201:
            self.failures += 1
            return
        self.sent_at[json.loads(body)["id"]] = began

    async def flood(self, seconds: float) -> None:
        """Every connection submits back to back until ``seconds`` have passed."""
        deadline = time.monotonic() + seconds

        async def worker() -> None:
            connection = Connection(self.host, self.port)
            try:
                while time.monotonic() < deadline:
                    await self._submit(connection, time.monotonic())
            finally:
                connection.close()

        await asyncio.gather(*(worker() for _ in range(self.connections)))

    async def offer(self, rate_per_s: float, seconds: float) -> None:
        """Open loop: request i is due at start + i / rate, whatever came before it."""
        pool: asyncio.Queue[Connection] = asyncio.Queue()
        for _ in range(self.connections):
            pool.put_nowait(Connection(self.host, self.port))
        start = time.monotonic()
        tasks: list[asyncio.Task[None]] = []

        async def one(due: float) -> None:
            connection = await pool.get()
            try:
                await self._submit(connection, due)
            finally:
                pool.put_nowait(connection)

        for index in range(int(rate_per_s * seconds)):
            due = start + index / rate_per_s
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(due)))
        await asyncio.gather(*tasks)
        while not pool.empty():
            pool.get_nowait().close()
