"""The agent's node id: made once, kept in the state directory, stable across restarts."""

from __future__ import annotations

import uuid
from pathlib import Path


def load_node_id(state_dir: Path) -> str:
    path = state_dir / "node_id"
    try:
        node_id = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        node_id = ""
    if node_id:
        return node_id
    node_id = f"node-{uuid.uuid4().hex[:12]}"
    state_dir.mkdir(parents=True, exist_ok=True)
    # Written then renamed, so a crash never leaves a half-written id behind.
    temporary = path.with_suffix(".tmp")
    temporary.write_text(node_id + "\n", encoding="utf-8")
    temporary.replace(path)
    return node_id
