"""docs/desktop.md names every route of the desktop app's local API, and only those."""

from __future__ import annotations

import re
from pathlib import Path

from starlette.routing import BaseRoute

from compound.desktop.server import LocalAppState, create_app
from compound.desktop.settings import SettingsStore
from compound.desktop.sidecar import AgentSidecar

DOC = Path(__file__).resolve().parent.parent / "docs" / "desktop.md"
_DOC_ROUTE = re.compile(r"`(GET|POST|PUT|DELETE|WS) (/local/api[^`\s]*)`")


def _local_routes(tmp_path: Path) -> set[tuple[str, str]]:
    state = LocalAppState(
        store=SettingsStore(tmp_path / "config"),
        sidecar=AgentSidecar(tmp_path / "agent", tmp_path / "agent.log"),
    )
    found: set[tuple[str, str]] = set()
    pending: list[BaseRoute] = list(create_app(state).routes)
    while pending:
        route = pending.pop()
        if hasattr(route, "original_router"):  # FastAPI's included router
            pending.extend(route.original_router.routes)
            continue
        path = getattr(route, "path", "")
        if not path.startswith("/local/api"):
            continue
        methods = getattr(route, "methods", None)
        if methods is None:
            found.add(("WS", path))
        else:
            found.update((method, path) for method in methods if method != "HEAD")
    return found


def test_docs_name_every_local_route_and_no_other(tmp_path: Path) -> None:
    """A local route added or removed without docs/desktop.md saying so fails here."""
    in_app = _local_routes(tmp_path)
    in_docs = set(_DOC_ROUTE.findall(DOC.read_text(encoding="utf-8")))
    assert in_app - in_docs == set(), "routes missing from docs/desktop.md"
    assert in_docs - in_app == set(), "docs/desktop.md names routes the app lacks"
