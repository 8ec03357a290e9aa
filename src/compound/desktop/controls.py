"""The contributor page's controls of the running agent: ``/local/api/agent/...`` routes that
ask the agent over its control socket (``compound.agent.control_client``), as
``compound agent pause|resume|drain|status|set`` does.

    GET  /local/api/agent/control   its lending state, settings and running jobs
    POST /local/api/agent/pause     freeze its jobs, take no new one
    POST /local/api/agent/resume    thaw them, take jobs again
    POST /local/api/agent/drain     finish the running jobs, then stop
    POST /local/api/agent/set       {"key": "hours", "value": "09:00-17:00"}

Each answers ``{"message": sentence, "status": {...}}`` (the status the agent gives after the
change; null when it has already exited). The state-changing ones pass the access guard
(cookie, Origin / Sec-Fetch-Site) and must also send ``application/json`` (else 415); no
agent running is 409, an agent that does not answer 503, a value it refuses 422, each with
one sentence in ``detail``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from compound.agent.control_client import NoAgent, ask
from compound.agent.donor import KEYS
from compound.desktop.sidecar import AgentSidecar

MAX_BODY_BYTES = 1024
MAX_VALUE_CHARS = 100
NOT_RUNNING = "The agent is not running: start contributing first."


class ControlRefused(Exception):
    """A control request that gets no answer: ``status_code`` and one sentence."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


def _sentence(text: str) -> str:
    text = text.strip()
    text = text[:1].upper() + text[1:]
    return text if text.endswith(".") else f"{text}."


def _ask(state_dir: Path, command: str, key: str = "", value: str = "") -> dict[str, Any]:
    """The agent's answer; ControlRefused when it gives none or refuses."""
    try:
        answer = ask(state_dir, command, key, value)
    except NoAgent as exc:
        raise ControlRefused(503, _sentence(str(exc))) from None
    if not answer.get("ok"):
        raise ControlRefused(422, _sentence(str(answer.get("message", "refused"))))
    return answer


def _command(state_dir: Path, command: str, key: str = "", value: str = "") -> dict[str, Any]:
    """One command, then the agent's status after it, or None when it is already gone (a
    drain with nothing running); blocking: run it in a thread."""
    done = _ask(state_dir, command, key, value)
    try:
        status = _ask(state_dir, "status").get("status")
    except ControlRefused:
        status = None
    return {"message": done["message"], "status": status if isinstance(status, dict) else None}


async def _json_body(request: Request) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != "application/json":
        raise ControlRefused(415, "Send JSON (application/json).")
    body = await request.body()
    try:
        raw = json.loads(body) if len(body) <= MAX_BODY_BYTES else None
    except ValueError:
        raw = None
    if not isinstance(raw, dict):
        raise ControlRefused(400, "Send a JSON object of at most 1 KiB.")
    return raw


def _setting(raw: dict[str, Any]) -> tuple[str, str]:
    key, value = raw.get("key"), raw.get("value")
    if not isinstance(key, str) or key not in KEYS:
        raise ControlRefused(422, f"Unknown setting: one of {', '.join(KEYS)}.")
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_VALUE_CHARS:
        raise ControlRefused(422, f"Give {key} a value of at most {MAX_VALUE_CHARS} characters.")
    return key, value.strip()


class AgentControls:
    """Asks the agent the app's sidecar runs (its state dir holds the control socket)."""

    def __init__(self, sidecar: AgentSidecar) -> None:
        self._sidecar = sidecar

    def _state_dir(self) -> Path:
        if not self._sidecar.status().running:
            raise ControlRefused(409, NOT_RUNNING)
        return self._sidecar.state_dir

    async def status(self) -> dict[str, Any]:
        done = await asyncio.to_thread(_ask, self._state_dir(), "status")
        return {"message": done["message"], "status": done.get("status") or {}}

    async def command(self, request: Request, command: str) -> dict[str, Any]:
        raw = await _json_body(request)
        key, value = _setting(raw) if command == "set" else ("", "")
        return await asyncio.to_thread(_command, self._state_dir(), command, key, value)


def _refused(exc: ControlRefused) -> JSONResponse:
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)


def control_routes(sidecar: AgentSidecar) -> APIRouter:
    """The routes, bound to the app's one sidecar."""
    controls = AgentControls(sidecar)
    router = APIRouter(prefix="/local/api/agent")

    @router.get("/control", response_model=None)
    async def control_status() -> dict[str, Any] | JSONResponse:
        try:
            return await controls.status()
        except ControlRefused as exc:
            return _refused(exc)

    for command in ("pause", "resume", "drain", "set"):
        router.add_api_route(
            f"/{command}", _command_route(controls, command), methods=["POST"], response_model=None
        )
    return router


def _command_route(controls: AgentControls, command: str) -> Any:
    async def route(request: Request) -> dict[str, Any] | JSONResponse:
        try:
            return await controls.command(request, command)
        except ControlRefused as exc:
            return _refused(exc)

    route.__name__ = f"agent_{command}"
    return route
