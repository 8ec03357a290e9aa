"""The client side of the agent's control socket: one request, one answer (``control``).

Used by ``compound agent pause|resume|drain|status|set`` and by the desktop app's local
server. Blocking (a plain socket with a timeout): async callers run it in a thread.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from compound.agent.control import MAX_ANSWER_BYTES, parse_answer, request_line, socket_path
from compound.agent.control_server import socket_address

ANSWER_TIMEOUT_S = 30.0


class NoAgent(Exception):
    """No agent answers on that state directory; ``str()`` says so."""


def ask(state_dir: Path, command: str, key: str = "", value: str = "") -> dict[str, Any]:
    """The running agent's answer to one control request; NoAgent when none answers."""
    path = socket_path(state_dir)
    missing = f"no agent is running with the state directory {state_dir}"
    if not path.exists():
        raise NoAgent(f"{missing} (start one with `compound agent --state-dir {state_dir}`)")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(ANSWER_TIMEOUT_S)
        try:
            with socket_address(path) as address:
                connection.connect(address)
            connection.sendall(request_line(command, key, value))
            answer = _read_line(connection)
        except (ConnectionRefusedError, FileNotFoundError):
            raise NoAgent(f"{missing} (its control socket is left from a stopped agent)") from None
        except PermissionError:
            raise NoAgent(f"not allowed to control the agent of {state_dir}") from None
        except OSError as exc:
            raise NoAgent(f"the agent of {state_dir} did not answer: {exc}") from None
    parsed = parse_answer(answer)
    if parsed is None:
        raise NoAgent(f"the agent of {state_dir} gave an answer that cannot be read")
    return parsed


def _read_line(connection: socket.socket) -> bytes:
    received = b""
    while not received.endswith(b"\n") and len(received) <= MAX_ANSWER_BYTES:
        chunk = connection.recv(65536)
        if not chunk:
            break
        received += chunk
    return received
