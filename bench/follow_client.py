"""A minimal follower of a job's log over the real follow socket, for the benchmarks.

It parses pages with ``json.loads`` rather than the pydantic models: at a million lines the
validation would cost this process more CPU than the coordinator spends sending them, and
both share the machine's cores.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from websockets.asyncio.client import connect

from compound.protocol import MAX_MESSAGE_BYTES


@dataclass
class Followed:
    stdout: bytearray
    records: int = 0
    lines: int = 0  # newlines received: a record may hold part of a line
    opened_at: float = 0.0
    first_record_at: float | None = None
    # The same moment by the wall clock (time.time()), to compare with a job's own clock.
    first_record_wall: float | None = None
    last_record_at: float | None = None
    ended_at: float | None = None
    status: str = ""


async def follow(ws_url: str, job_id: str, keep_stdout: bool = True) -> Followed:
    """Follow ``job_id`` from its first record to its end; times by time.monotonic()."""
    followed = Followed(stdout=bytearray(), opened_at=time.monotonic())
    url = f"{ws_url}/api/v1/jobs/{job_id}/follow?after=-1"
    async with connect(url, max_size=MAX_MESSAGE_BYTES, compression=None) as websocket:
        async for raw in websocket:
            message = json.loads(raw)
            kind = message.get("type")
            if kind == "records":
                now = time.monotonic()
                if followed.first_record_at is None:
                    followed.first_record_at = now
                    followed.first_record_wall = time.time()
                followed.last_record_at = now
                followed.records += len(message["records"])
                for record in message["records"]:
                    followed.lines += record["data"].count("\n")
                    if keep_stdout and record.get("stream", "stdout") == "stdout":
                        followed.stdout += record["data"].encode()
            elif kind == "end":
                followed.ended_at = time.monotonic()
                followed.status = message["job"]["status"]
                break
    return followed
