"""Connecting to the local Docker engine and saying in one sentence what went wrong."""

from __future__ import annotations

import os

import aiodocker
from aiodocker.exceptions import DockerError

DEFAULT_DOCKER_URL = "unix:///var/run/docker.sock"
NOT_RUNNING = "Docker is not running: start it with scripts/setup-docker.sh"
# aiodocker reports a refused or missing socket with this pseudo HTTP status.
_UNREACHABLE_STATUS = 900


class EngineError(Exception):
    """The engine cannot do what we need; ``str(exc)`` is one human sentence."""


def resolve_url(docker_url: str | None) -> str:
    """The engine address: the explicit one, else ``$DOCKER_HOST``, else the local socket."""
    return docker_url or os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_URL


def connect(docker_url: str | None = None) -> aiodocker.Docker:
    """A client for the engine; opening it does no I/O.

    ``api_version="auto"`` makes aiodocker ask the engine for its API version on first use
    and speak that one, so a 20.10 engine (API 1.41) works with any aiodocker release.
    """
    return aiodocker.Docker(url=resolve_url(docker_url), api_version="auto")


def describe(exc: DockerError) -> str:
    """One sentence for an engine error, without aiodocker's status-code prefix."""
    if exc.status == _UNREACHABLE_STATUS:
        return NOT_RUNNING
    message = str(exc.message).strip().rstrip(".")
    return f"Docker engine error: {message}"


async def check_engine(docker: aiodocker.Docker) -> None:
    """Raise EngineError unless the engine answers."""
    try:
        await docker.version()
    except DockerError as exc:
        raise EngineError(describe(exc)) from exc
    except OSError as exc:
        raise EngineError(NOT_RUNNING) from exc
