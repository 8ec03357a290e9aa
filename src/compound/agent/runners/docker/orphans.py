"""Containers a node left behind: found by their labels, removed by force.

Only containers labelled as managed by Compound *and* as this node's are ever touched, so
other agents' containers on the same engine (and anything not Compound's) are safe. The
agent removes its own at start (a crash left them); the desktop app removes those of an
agent it had to SIGKILL, which could not clean up (``remove_node_containers``).
"""

from __future__ import annotations

import asyncio
import logging

import aiodocker
from aiodocker.exceptions import DockerError

from compound.agent.runners.docker.engine import connect
from compound.agent.runners.docker.sandbox import TRANSPORT_ERRORS, remove
from compound.agent.runners.docker.spec import MANAGED_LABEL, NODE_LABEL

log = logging.getLogger(__name__)

REMOVAL_TIMEOUT_S = 30.0


def node_labels(node_id: str) -> list[str]:
    """The engine's label filter for this node's containers (both labels must match)."""
    return [f"{MANAGED_LABEL}=1", f"{NODE_LABEL}={node_id}"]


async def remove_orphans(docker: aiodocker.Docker, node_id: str) -> list[str]:
    """Force-remove this node's containers, running or not; their ids.

    Listing them raises DockerError when the engine refuses; a container that cannot be
    removed is skipped (the next try removes it).
    """
    containers = await docker.containers.list(all=True, filters={"label": node_labels(node_id)})
    for container in containers:
        await remove(container)
    return [container.id for container in containers]


def remove_node_containers(
    node_id: str, docker_url: str | None = None, timeout_s: float = REMOVAL_TIMEOUT_S
) -> list[str]:
    """``remove_orphans`` for synchronous callers with no event loop running in their thread.

    Best effort: any failure (engine down, timeout) is logged and yields an empty list.
    """
    try:
        ids = asyncio.run(_remove_node_containers(node_id, docker_url, timeout_s))
    except (DockerError, TimeoutError, OSError, *TRANSPORT_ERRORS) as exc:
        log.warning("could not remove containers left by node %s: %s", node_id, exc)
        return []
    if ids:
        log.warning("removed %d container(s) left by node %s", len(ids), node_id)
    return ids


async def _remove_node_containers(
    node_id: str, docker_url: str | None, timeout_s: float
) -> list[str]:
    async with connect(docker_url) as docker:
        return await asyncio.wait_for(remove_orphans(docker, node_id), timeout_s)
