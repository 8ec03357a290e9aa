"""What one contributor token may cost the coordinator: a bounded number of node ids, and a
contributors list answered a page at a time (review finding 8)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from compound.cli import client as cli_client
from fake_agent import FakeAgent
from support import Coordinator
from test_auth import bearer, make_token

MAX_NODES = 3


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[tuple[Coordinator, dict[str, str]]]:
    """A coordinator whose contributor tokens may register 3 node ids each."""
    data_dir = tmp_path / "coordinator"
    tokens = {
        "admin": make_token(data_dir, "admin", "root"),
        "alice": make_token(data_dir, "submitter", "alice"),
        "worker": make_token(data_dir, "contributor", "worker"),
    }
    server = Coordinator(
        data_dir=data_dir, extra_args=["--max-nodes-per-token", str(MAX_NODES)]
    ).start()
    yield server, tokens
    server.stop()


def hello_refused(coordinator: Coordinator, token: str, node_id: str) -> tuple[int, str]:
    """Say hello as ``node_id``; the close code and reason the coordinator answers with."""
    with connect(
        f"{coordinator.ws_url}/ws/contributor", additional_headers=bearer(token)
    ) as websocket:
        hello = {
            "type": "hello",
            "protocol_version": 1,
            "node_id": node_id,
            "name": node_id,
            "cores": 1,
            "memory_bytes": 1,
        }
        websocket.send(json.dumps(hello))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                websocket.recv(timeout=15)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


def test_a_token_registers_a_bounded_number_of_node_ids(
    limited: tuple[Coordinator, dict[str, str]],
) -> None:
    """Past --max-nodes-per-token a new node id is refused with 4403 and a sentence; the
    token's own node ids still reconnect, and an admin token is not limited."""
    coordinator, tokens = limited
    for index in range(MAX_NODES):
        FakeAgent(coordinator, node_id=f"node-{index}", token=tokens["worker"]).ws.close()
    code, reason = hello_refused(coordinator, tokens["worker"], "node-extra")
    assert code == 4403
    assert f"limit of {MAX_NODES} node ids" in reason
    FakeAgent(coordinator, node_id="node-0", token=tokens["worker"]).ws.close()
    for index in range(MAX_NODES + 1):
        FakeAgent(coordinator, node_id=f"admin-{index}", token=tokens["admin"]).ws.close()
    seen = coordinator.api(
        "GET", "/api/v1/contributors", params={"limit": 1000}, headers=bearer(tokens["admin"])
    ).json()["contributors"]
    assert "node-extra" not in {row["id"] for row in seen}
    assert len(seen) == 2 * MAX_NODES + 1


def test_the_contributors_list_comes_in_pages(
    limited: tuple[Coordinator, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """GET /api/v1/contributors answers at most ``limit`` rows and where to go on; the pages
    hold every contributor once, and the CLI's client follows them."""
    coordinator, tokens = limited
    node_ids = [f"admin-{index}" for index in range(5)]
    for node_id in node_ids:
        FakeAgent(coordinator, node_id=node_id, token=tokens["admin"]).ws.close()
    default = coordinator.api("GET", "/api/v1/contributors", headers=bearer(tokens["alice"]))
    assert default.json()["next"] is None
    seen: list[str] = []
    after = 0
    pages = 0
    while after is not None:
        page = coordinator.api(
            "GET",
            "/api/v1/contributors",
            params={"after": after, "limit": 2},
            headers=bearer(tokens["admin"]),
        ).json()
        assert len(page["contributors"]) <= 2
        seen.extend(row["id"] for row in page["contributors"])
        after, pages = page["next"], pages + 1
    assert seen == node_ids and pages == 3
    too_many = coordinator.api(
        "GET", "/api/v1/contributors", params={"limit": 100_000}, headers=bearer(tokens["admin"])
    )
    assert too_many.status_code == 422
    monkeypatch.setattr(cli_client, "CONTRIBUTORS_PAGE", 2)
    client = cli_client.CoordinatorClient(coordinator.url, token=tokens["admin"])
    assert sorted(row["id"] for row in client.contributors()) == sorted(node_ids)
