"""Last-resort cleanup of a killed agent's job containers.

The agent removes its containers itself when it gets SIGTERM. Only when it had to be
SIGKILLed (it ignored SIGTERM past the grace period) does the app remove what the agent
left: it asks the Docker runner's package (``orphans``), which touches only containers
labelled as managed by Compound *and* as belonging to this node, so other agents'
containers on the same engine are never touched. Best effort.
"""

from __future__ import annotations

from pathlib import Path

from compound.agent.runners.docker.orphans import remove_node_containers


def node_id_of(state_dir: Path) -> str | None:
    """The node id the agent keeps in its state dir, if it wrote one."""
    try:
        text = (state_dir / "node_id").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return text or None


def remove_left_containers(state_dir: Path) -> list[str]:
    """Force-remove the containers of the killed agent that kept ``state_dir``; their ids.

    Empty when it never wrote its node id (it started no container) or on any failure.
    """
    node_id = node_id_of(state_dir)
    if node_id is None:
        return []
    return remove_node_containers(node_id)
