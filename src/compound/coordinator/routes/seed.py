"""The seed's endpoints, kept working as the original product described them.

POST /submit-job {"script"} -> {"job_id"}; WS /ws/submitter/{job_id} sends one
{"type": "log", "line"} per line of output, then {"type": "done", ...}; WS /ws/contributor.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Iterator
from typing import Any

from fastapi import APIRouter, Depends, Request, WebSocket

from compound.coordinator.follow.follower import Following, follow_job
from compound.coordinator.routes.api import serve_follower, submit
from compound.coordinator.routes.contributor_socket import contributor_endpoint
from compound.coordinator.state import CoordinatorState, get_state, state_of
from compound.coordinator.storage.log_tail import LogPage
from compound.protocol import FollowEnd, LogRecord
from compound.protocol.responses import SeedSubmitted

router = APIRouter()
# JSON escaping can grow text up to 6x: this keeps a seed line message under 4 MiB.
MAX_SEED_LINE_CHARS = 512 * 1024


@router.post("/submit-job")
async def submit_job(
    request: Request, state: CoordinatorState = Depends(get_state)
) -> SeedSubmitted:
    """Seed form of job submission: ``{"script": "..."}`` -> ``{"job_id": "..."}``."""
    job = await submit(request, state)
    return SeedSubmitted(job_id=job.id)


@router.websocket("/ws/contributor")
async def contributor(websocket: WebSocket) -> None:
    await contributor_endpoint(websocket, state_of(websocket))


@router.websocket("/ws/submitter/{job_id}")
async def submitter(websocket: WebSocket, job_id: str) -> None:
    state = state_of(websocket)
    await websocket.accept()
    await serve_follower(websocket, state, job_id, _seed_messages)


async def _seed_messages(following: Following) -> AsyncGenerator[str, None]:
    # Records are chunks of one or more lines; the seed speaks in whole lines, so records
    # are split at their newlines and a line cut across records of one stream is joined.
    pending: dict[str, tuple[int, str]] = {}
    async for message in follow_job(following, -1):
        if isinstance(message, LogPage):
            for record in message.records:
                for line in _seed_lines(pending, record):
                    yield line
        elif isinstance(message, FollowEnd):
            for stream, (seq, text) in sorted(pending.items(), key=lambda item: item[1][0]):
                yield _line(text, stream, seq)
            job = message.job
            yield json.dumps(
                {
                    "type": "done",
                    "job_id": job.id,
                    "status": job.status.value,
                    "exit_code": job.exit_code,
                    "error": job.error,
                }
            )


def _seed_lines(pending: dict[str, tuple[int, str]], record: LogRecord) -> Iterator[str]:
    """The seed messages of each line ``record`` completes; what follows its last newline
    waits in ``pending`` for the stream's next record. A line longer than
    MAX_SEED_LINE_CHARS goes out in pieces, so no message nears the size limit. Every line
    carries the seq of the record it started in."""
    stream = record.stream.value
    seq, text = pending.pop(stream, (record.seq, ""))
    data = record.data
    start = 0
    while start < len(data):
        newline = data.find("\n", start)
        if newline == -1:
            text += data[start:]
            break
        yield _line(text + data[start:newline], stream, seq)
        seq, text, start = record.seq, "", newline + 1
    if len(text) >= MAX_SEED_LINE_CHARS:
        yield _line(text, stream, seq)
    elif text:
        pending[stream] = (seq, text)


def _line(text: str, stream: str, seq: int) -> str:
    message: dict[str, Any] = {"type": "log", "line": text, "stream": stream, "seq": seq}
    return json.dumps(message, ensure_ascii=False)
