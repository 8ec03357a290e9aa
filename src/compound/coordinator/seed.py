"""The seed's endpoints, kept working as the original product described them.

POST /submit-job {"script"} -> {"job_id"}; WS /ws/submitter/{job_id} sends one
{"type": "log", "line"} per line of output, then {"type": "done", ...}; WS /ws/contributor.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

from fastapi import APIRouter, Depends, Request, WebSocket

from compound.coordinator.api import serve_follower, submit
from compound.coordinator.contributor_ws import contributor_endpoint
from compound.coordinator.follow import follow_job
from compound.coordinator.log_tail import LogPage
from compound.coordinator.state import CoordinatorState, get_state
from compound.protocol import FollowEnd

router = APIRouter()
# JSON escaping can grow text up to 6x: this keeps a seed line message under 4 MiB.
MAX_SEED_LINE_CHARS = 512 * 1024


@router.post("/submit-job")
async def submit_job(
    request: Request, state: CoordinatorState = Depends(get_state)
) -> dict[str, str]:
    """Seed form of job submission: ``{"script": "..."}`` -> ``{"job_id": "..."}``."""
    job = await submit(request, state)
    return {"job_id": job.id}


@router.websocket("/ws/contributor")
async def contributor(websocket: WebSocket) -> None:
    await contributor_endpoint(websocket, get_state(websocket))


@router.websocket("/ws/submitter/{job_id}")
async def submitter(websocket: WebSocket, job_id: str) -> None:
    state = get_state(websocket)
    await websocket.accept()
    await serve_follower(websocket, state, job_id, _seed_messages(state, job_id))


async def _seed_messages(state: CoordinatorState, job_id: str) -> AsyncGenerator[str, None]:
    # Records are chunks; the seed speaks in whole lines, so chunks of one stream are joined
    # until their newline. A last line without a newline is sent at the end. A line longer
    # than MAX_SEED_LINE_CHARS goes out in pieces, so no message nears the size limit.
    pending: dict[str, tuple[int, str]] = {}
    async for message in follow_job(state, job_id, -1):
        if isinstance(message, LogPage):
            for record in message.records:
                seq, text = pending.pop(record.stream.value, (record.seq, ""))
                text += record.data
                if text.endswith("\n"):
                    yield _line(text[:-1], record.stream.value, seq)
                elif len(text) >= MAX_SEED_LINE_CHARS:
                    yield _line(text, record.stream.value, seq)
                else:
                    pending[record.stream.value] = (seq, text)
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


def _line(text: str, stream: str, seq: int) -> str:
    message: dict[str, Any] = {"type": "log", "line": text, "stream": stream, "seq": seq}
    return json.dumps(message, ensure_ascii=False)
