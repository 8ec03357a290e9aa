"""Last-resort cleanup of a killed agent's job containers.

The agent removes its containers itself when it gets SIGTERM. Only when it had to be
SIGKILLed (it ignored SIGTERM past the grace period) does the app remove what the agent
left: containers labelled as managed by Compound *and* as belonging to this node, so other
agents' containers on the same engine are never touched. Uses the docker CLI, best effort.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

from compound.agent.runners.docker_spec import MANAGED_LABEL, NODE_LABEL

log = logging.getLogger(__name__)

DOCKER_TIMEOUT_S = 30.0


def node_id_of(state_dir: Path) -> str | None:
    """The node id the agent keeps in its state dir, if it wrote one."""
    try:
        text = (state_dir / "node_id").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return text or None


def remove_node_containers(node_id: str) -> list[str]:
    """Force-remove this node's job containers; returns their ids (empty on any failure)."""
    docker = shutil.which("docker")
    if docker is None:
        log.warning("cannot check for containers left by node %s: docker CLI not found", node_id)
        return []
    try:
        listed = subprocess.run(
            [
                docker,
                "ps",
                "-aq",
                "--filter",
                f"label={MANAGED_LABEL}=1",
                "--filter",
                f"label={NODE_LABEL}={node_id}",
            ],
            capture_output=True,
            text=True,
            timeout=DOCKER_TIMEOUT_S,
            check=True,
        )
        ids = listed.stdout.split()
        if ids:
            subprocess.run(
                [docker, "rm", "-f", *ids],
                capture_output=True,
                timeout=DOCKER_TIMEOUT_S,
                check=True,
            )
            log.warning("removed %d container(s) left by the killed agent", len(ids))
        return ids
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("could not remove containers left by node %s: %s", node_id, exc)
        return []
