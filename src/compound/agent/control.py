"""The agent's control requests (``compound agent pause|resume|drain|status|set``) as pure
data: one JSON object per line each way, parsed and bounded here, no I/O.

Bad input never raises out of ``parse_request``: it becomes one sentence for the peer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SOCKET_NAME = "control.sock"
# A request is a command and at most one short setting; an answer at most a status.
MAX_REQUEST_BYTES = 4096
MAX_ANSWER_BYTES = 1024 * 1024
MAX_VALUE_CHARS = 100
COMMANDS = ("status", "pause", "resume", "drain", "set")


def socket_path(state_dir: Path) -> Path:
    return state_dir / SOCKET_NAME


@dataclass(frozen=True)
class Request:
    command: str
    key: str = ""
    value: str = ""


def parse_request(line: bytes) -> Request | str:
    """The request in ``line`` (one JSON object), or a sentence saying why it is refused."""
    if len(line) > MAX_REQUEST_BYTES:
        return "the request is too long"
    try:
        data = json.loads(line)
    except (ValueError, RecursionError):
        return "the request is not JSON"
    if not isinstance(data, dict):
        return "the request is not a JSON object"
    command = data.get("command")
    if command not in COMMANDS:
        return f"unknown command: one of {', '.join(COMMANDS)}"
    if command != "set":
        return Request(command)
    key, value = data.get("key"), data.get("value")
    if not isinstance(key, str) or not isinstance(value, str):
        return "set needs a key and a value, both text"
    if len(key) > MAX_VALUE_CHARS or len(value) > MAX_VALUE_CHARS:
        return "the key or the value is too long"
    return Request(command, key, value)


def request_line(command: str, key: str = "", value: str = "") -> bytes:
    body: dict[str, str] = {"command": command}
    if command == "set":
        body |= {"key": key, "value": value}
    return json.dumps(body).encode() + b"\n"


def answer_line(message: str, status: dict[str, Any] | None = None, ok: bool = True) -> bytes:
    """One answer: ``ok``, a sentence for the donor and, for status, the agent's state."""
    body: dict[str, Any] = {"ok": ok, "message": message}
    if status is not None:
        body["status"] = status
    return json.dumps(body).encode() + b"\n"


def refusal_line(sentence: str) -> bytes:
    return answer_line(sentence, ok=False)


def parse_answer(line: bytes) -> dict[str, Any] | None:
    """The agent's answer, or None when it is not one."""
    try:
        data = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("message"), str):
        return None
    return data
