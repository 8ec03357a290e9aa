"""The follow socket opened ahead of FastAPI's router answers exactly as the route did.

Two coordinator apps with auth on, one with the fast path and one without, under uvicorn on
loopback ports; the same senders, the worst ones first, against each: without a token, from
a foreign web page, with the wrong role, for another's job, for an unknown job, with a
garbage ``after``, holding the last free follower place, flooding the socket, leaving
mid-follow. Real sockets, a contributor speaking the real protocol, nothing mocked.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from compound.coordinator.app import create_app
from compound.coordinator.routes.follow_route import FollowRouteMiddleware
from compound.coordinator.settings import CoordinatorSettings
from compound.coordinator.state import CoordinatorState
from compound.protocol import (
    CLOSE_FORBIDDEN,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_TRY_AGAIN_LATER,
    CLOSE_UNAUTHORIZED,
    CLOSE_UNKNOWN_JOB,
)
from compound.protocol.auth import bearer_subprotocols
from fake_agent import FakeAgent
from support import Coordinator, run_cli, wait_until
from uvicorn_thread import serving_in_thread

pytestmark = pytest.mark.timeout(120)

PROMPT_S = 15.0
# Fields that differ between two runs of the same job.
_PER_RUN = ("id", "created_at", "started_at", "finished_at", "contributor_id", "files_expire_at")
ROLES = {"alice": "submitter", "bob": "submitter", "worker": "contributor"}


class RouterSentinel:
    """Innermost middleware: counts the sockets for the follow route (one job id segment)
    that reach FastAPI's router."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and _is_follow_path(scope["path"]):
            scope["app"].state.routed_follows += 1
        await self.app(scope, receive, send)


def _is_follow_path(path: str) -> bool:
    parts = path.split("/")
    return len(parts) == 6 and parts[:4] == ["", "api", "v1", "jobs"] and parts[5] == "follow"


@contextmanager
def _serving(data_dir: Path, fast: bool) -> Iterator[tuple[Coordinator, FastAPI, dict[str, str]]]:
    """A coordinator app with auth on (one follower per job at most), answering follow
    sockets with the fast path only or with FastAPI's route only; a ``Coordinator`` handle
    addressing it, and tokens by name."""
    tokens = {name: _token(data_dir, role, name) for name, role in ROLES.items()}
    app = create_app(CoordinatorSettings(data_dir=data_dir, max_followers_per_job=1))
    if not fast:  # the middleware stack is built at the first request: drop it before
        app.user_middleware = [m for m in app.user_middleware if m.cls is not FollowRouteMiddleware]
    app.user_middleware.append(Middleware(RouterSentinel))  # innermost: just before the router
    app.state.routed_follows = 0
    with serving_in_thread(app) as port:
        yield Coordinator(data_dir=data_dir, port=port), app, tokens


def _token(data_dir: Path, role: str, name: str) -> str:
    result = run_cli("token", "create", "--data-dir", str(data_dir), "--role", role, "--name", name)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode().strip()


def _open(url: str, token: str | None, origin: str | None = None) -> ClientConnection:
    protocols: Any = bearer_subprotocols(token) if token else None
    return connect(url, subprotocols=protocols, origin=origin, open_timeout=PROMPT_S)  # type: ignore[arg-type]


def _read_to_close(websocket: ClientConnection) -> tuple[object, ...]:
    messages: list[dict[str, Any]] = []
    try:
        while True:
            messages.append(_comparable(json.loads(websocket.recv(timeout=PROMPT_S))))
    except ConnectionClosed as closed:
        code, reason = (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else (None, "")
        return ("closed", code, reason, messages)


def _outcome(url: str, token: str | None, origin: str | None = None) -> tuple[object, ...]:
    """How the coordinator answered: a refused handshake, or the messages and close."""
    try:
        with _open(url, token, origin) as websocket:
            return _read_to_close(websocket)
    except InvalidStatus as refused:
        return ("refused", refused.response.status_code)


def _comparable(message: dict[str, Any]) -> dict[str, Any]:
    if "job" in message:
        message["job"] = {k: v for k, v in message["job"].items() if k not in _PER_RUN}
    return message


def _submit(coordinator: Coordinator, token: str) -> str:
    response = coordinator.api(
        "POST",
        "/api/v1/jobs",
        json={"script": "print(1)"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 201, response.text
    job_id: str = response.json()["id"]
    return job_id


def _ran_job(coordinator: Coordinator, tokens: dict[str, str]) -> str:
    """Alice's job, run by a contributor that printed three records, succeeded."""
    job_id = _submit(coordinator, tokens["alice"])
    agent = FakeAgent(coordinator, token=tokens["worker"])
    given = agent.recv_type("job")
    first = given["first_seq"]
    agent.log(given, [first, first + 1, first + 2], data="line\n")
    agent.recv_type("ack")
    agent.done(given, last_seq=first + 2)
    wait_until(
        lambda: (
            coordinator.api(
                "GET",
                f"/api/v1/jobs/{job_id}",
                headers={"Authorization": f"Bearer {tokens['alice']}"},
            ).json()["status"]
            == "succeeded"
        ),
        PROMPT_S,
        "the job to succeed",
    )
    agent.close()
    return job_id


def _answers(data_dir: Path, fast: bool) -> dict[str, tuple[object, ...]]:
    """Every sender's outcome against one app, by name."""
    with _serving(data_dir, fast) as (coordinator, app, tokens):
        alice = tokens["alice"]
        done = _ran_job(coordinator, tokens)
        queued = _submit(coordinator, alice)  # no contributor left: it stays queued
        base = f"{coordinator.ws_url}/api/v1/jobs"
        answers: dict[str, tuple[object, ...]] = {
            "no token": _outcome(f"{base}/{done}/follow", None),
            "bad token": _outcome(f"{base}/{done}/follow", "cpd_not-a-real-token"),
            "foreign origin": _outcome(f"{base}/{done}/follow", alice, "https://evil.example"),
            "contributor role": _outcome(f"{base}/{done}/follow", tokens["worker"]),
            "another's job": _outcome(f"{base}/{done}/follow", tokens["bob"]),
            "unknown job": _outcome(f"{base}/no-such-job/follow", alice),
            "after garbage": _outcome(f"{base}/{done}/follow?after=abc", alice),
            "after empty": _outcome(f"{base}/{done}/follow?after=", alice),
            "after below -1": _outcome(f"{base}/{done}/follow?after=-2", alice),
            "after past int64": _outcome(f"{base}/{done}/follow?after=9223372036854775808", alice),
            "after repeated": _outcome(f"{base}/{done}/follow?after=abc&after=0", alice),
            "no after": _outcome(f"{base}/{done}/follow", alice),
            "after the end": _outcome(f"{base}/{done}/follow?after=2", alice),
            "two segments": _outcome(f"{base}/{done}%2Fx/follow", alice),
            "trailing slash": _outcome(f"{base}/{done}/follow/", alice),
        }
        # The one follower place of the queued job taken: the next is told to come back.
        with _open(f"{base}/{queued}/follow", alice) as holder:
            answers["place held"] = (_comparable(json.loads(holder.recv(timeout=PROMPT_S))),)
            answers["over the cap"] = _outcome(f"{base}/{queued}/follow", alice)
        # A follower that floods the socket is ignored, not disturbed.
        state: CoordinatorState = app.state.compound
        wait_until(lambda: state.followers.open == 0, PROMPT_S, "the held place to be free")
        with _open(f"{base}/{queued}/follow", alice) as flooder:
            for _ in range(200):
                flooder.send("x" * 1000)
            answers["flooding"] = (_comparable(json.loads(flooder.recv(timeout=PROMPT_S))),)
            flooder.ping().wait(PROMPT_S)  # still open and answering
        # Followers leaving at once, or after the first message, leave nothing behind.
        for _ in range(5):
            with _open(f"{base}/{queued}/follow", alice):
                pass
            with _open(f"{base}/{done}/follow", alice) as leaver:
                leaver.recv(timeout=PROMPT_S)
        wait_until(
            lambda: state.followers.open == 0 and state.hub.watching() == 0,
            PROMPT_S,
            "every follower's place and alarm to be released",
        )
        answers["follows routed by FastAPI"] = (app.state.routed_follows > 0,)
        return answers


def test_the_fast_follow_route_answers_as_fastapi_route_does(tmp_path: Path) -> None:
    """Every sender, the worst ones included, gets the same handshake answer, messages,
    close code and sentence from both; and those are the documented ones."""
    began = time.monotonic()
    fast = _answers(tmp_path / "fast", fast=True)
    routed = _answers(tmp_path / "routed", fast=False)
    assert time.monotonic() - began < 100
    assert fast.pop("follows routed by FastAPI") == (False,)  # the fast path answered all
    assert routed.pop("follows routed by FastAPI") == (True,)
    for name in fast:
        assert fast[name] == routed[name], (name, fast[name], routed[name])
    assert fast["no token"][:2] == ("closed", CLOSE_UNAUTHORIZED)
    assert fast["bad token"][:2] == ("closed", CLOSE_UNAUTHORIZED)
    assert fast["foreign origin"] == ("refused", 403)
    assert fast["contributor role"][:2] == ("closed", CLOSE_FORBIDDEN)
    assert fast["another's job"] == ("closed", CLOSE_UNKNOWN_JOB, "unknown job", [])
    assert fast["unknown job"] == ("closed", CLOSE_UNKNOWN_JOB, "unknown job", [])
    for name in ("after garbage", "after empty", "after below -1", "after past int64"):
        assert fast[name] == ("closed", CLOSE_POLICY, "after must be an integer from -1", [])
    kinds = [m["type"] for m in fast["no after"][3]]  # type: ignore[attr-defined]
    assert kinds == ["status", "records", "end"] and fast["no after"][1] == CLOSE_NORMAL
    records = fast["no after"][3][1]["records"]  # type: ignore[index]
    assert [r["seq"] for r in records] == [0, 1, 2]
    repeated = fast["after repeated"][3][1]["records"]  # type: ignore[index]
    assert [r["seq"] for r in repeated] == [1, 2]  # of repeated values, the last counts
    assert [m["type"] for m in fast["after the end"][3]] == ["status", "end"]  # type: ignore[attr-defined]
    assert fast["flooding"] == fast["place held"]
    assert fast["over the cap"][:2] == ("closed", CLOSE_TRY_AGAIN_LATER)
    assert fast["place held"][0]["job"]["status"] == "queued"  # type: ignore[index]
