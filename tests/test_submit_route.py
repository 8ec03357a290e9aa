"""POST /api/v1/jobs answered ahead of FastAPI's router answers exactly as the route did."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from compound.coordinator.app import create_app
from compound.coordinator.routes.submit_route import SubmitRouteMiddleware
from compound.coordinator.settings import CoordinatorSettings
from support import Coordinator
from uvicorn_thread import serving_in_thread

pytestmark = pytest.mark.timeout(60)

# Fields that differ between two jobs submitted alike.
_PER_JOB = ("id", "created_at", "position")
BODIES = [
    b'{"script": "print(1)"}',
    b'{"script": "print(1)", "args": ["a"], "env": {"A": "b"}, "timeout_s": 5, "name": "n"}',
    b'{"script": "# /// script\\n# dependencies = [\\"rich\\"]\\n# ///\\nprint(1)"}',
    b'{"script": ""}',
    b"print('hi')",
    b"[1, 2]",
    b'{"script": "\xff\xfe"}',
    b"{}",
    b'{"script": 5}',
    b'{"script": "x", "timeout_s": "5"}',
    b'{"script": "x", "unknown": 1}',
    b'{"script": "x", "env": {"A=B": "c"}}',
    b'{"script": "x", "args": ' + b"[" * 100_000 + b"}",
    b'{"script": "x", "inputs": {"sha256": "00", "size": 1}}',
    b'{"script": "' + b"x" * (64 * 1024 + 1) + b'"}',
]


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """``app`` under uvicorn with the coordinator's protocol classes on port 0; its URL."""
    with serving_in_thread(app) as port:
        yield f"http://127.0.0.1:{port}"


def _app(data_dir: Path, fast: bool) -> FastAPI:
    settings = CoordinatorSettings(
        data_dir=data_dir, max_script_bytes=64 * 1024, max_queued_per_submitter=3
    )
    app = create_app(settings)
    if not fast:  # the middleware stack is built at the first request: drop it before
        app.user_middleware = [m for m in app.user_middleware if m.cls is not SubmitRouteMiddleware]
    return app


def _answers(url: str, bodies: list[bytes]) -> list[tuple[int, object]]:
    answers: list[tuple[int, object]] = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for body in bodies:
            response = client.post(
                "/api/v1/jobs", content=body, headers={"content-type": "application/json"}
            )
            payload = response.json()
            if isinstance(payload, dict):
                payload = {k: v for k, v in payload.items() if k not in _PER_JOB}
            answers.append((response.status_code, payload))
    return answers


def test_the_fast_route_answers_as_fastapi_route_does(tmp_path: Path) -> None:
    """Valid, malformed, oversized and over-quota submissions (the 4th valid one is over
    the quota of 3) get the same status and body from both, and no traceback."""
    bodies = [*BODIES, BODIES[0]]
    with serving(_app(tmp_path / "fast", fast=True)) as url:
        fast = _answers(url, bodies)
    with serving(_app(tmp_path / "routed", fast=False)) as url:
        routed = _answers(url, bodies)
    assert fast == routed
    statuses = [status for status, _ in fast]
    assert statuses.count(201) == 3 and 429 in statuses and 413 in statuses, statuses
    assert all("Traceback" not in str(payload) for _, payload in fast)


def test_a_sender_that_hangs_up_mid_body_leaves_the_route_working(tmp_path: Path) -> None:
    """A client announcing a body and closing after part of it gets nothing, and the next
    submission is served."""
    with serving(_app(tmp_path, fast=True)) as url:
        port = int(url.rsplit(":", 1)[1])
        for _ in range(20):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(
                    b"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                    b'{"script": "pri'
                )
        response = httpx.post(f"{url}/api/v1/jobs", json={"script": "print(1)"}, timeout=30)
        assert response.status_code == 201, response.text


def test_a_forged_forwarded_for_neither_renames_the_submitter_nor_escapes_its_quota(
    tmp_path: Path,
) -> None:
    """In open mode jobs belong to, and quotas count by, the client's address: a loopback
    client claiming other addresses with X-Forwarded-For is still itself, and is refused
    once over its quota."""
    server = Coordinator(data_dir=tmp_path, extra_args=["--max-queued-per-submitter", "2"])
    server.start()
    try:
        statuses = []
        for index in range(3):
            response = httpx.post(
                f"{server.url}/api/v1/jobs",
                json={"script": "print(1)"},
                headers={"X-Forwarded-For": f"203.0.113.{index}"},
                timeout=30,
            )
            statuses.append(response.status_code)
        assert statuses == [201, 201, 429]
    finally:
        server.stop()
