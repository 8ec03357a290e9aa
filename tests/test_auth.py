"""Access control against a real coordinator: tokens, roles, ownership, identity, browsers.

Tokens are made with the real `compound token` command, in the coordinator's data dir, while
it runs (it picks them up within seconds).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from compound.protocol.auth import bearer_subprotocols
from fake_agent import FakeAgent
from support import Coordinator, product_env, run_cli, wait_until

TOKEN_EFFECT_S = 5.0


def make_token(data_dir: Path, role: str, name: str) -> str:
    result = run_cli("token", "create", "--data-dir", str(data_dir), "--role", role, "--name", name)
    assert result.returncode == 0, result.stderr.decode()
    token = result.stdout.decode().strip()
    assert token and "\n" not in token
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[tuple[Coordinator, dict[str, str]]]:
    """A coordinator with auth on, and tokens by name: alice and bob submit, worker
    contributes, root administers."""
    data_dir = tmp_path / "coordinator"
    tokens = {
        "admin": make_token(data_dir, "admin", "root"),
        "alice": make_token(data_dir, "submitter", "alice"),
        "bob": make_token(data_dir, "submitter", "bob"),
        "worker": make_token(data_dir, "contributor", "worker"),
        "intruder": make_token(data_dir, "contributor", "intruder"),
    }
    server = Coordinator(data_dir=data_dir).start()
    yield server, tokens
    server.stop()


def submit(coordinator: Coordinator, token: str, script: str = "print(1)") -> str:
    response = coordinator.api(
        "POST", "/api/v1/jobs", json={"script": script}, headers=bearer(token)
    )
    assert response.status_code == 201, response.text
    job_id: str = response.json()["id"]
    return job_id


def ws_close_code(url: str, token: str | None = None, **kwargs: Any) -> int | None:
    """Open a WebSocket (token as the browser would send it) and read until it closes."""
    protocols = bearer_subprotocols(token) if token else None
    with connect(url, subprotocols=protocols, **kwargs) as websocket:  # type: ignore[arg-type]
        try:
            while True:
                websocket.recv(timeout=15)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None


# ---------------------------------------------------------------- tokens


def test_tokens_are_listed_without_secrets_and_stored_hashed(tmp_path: Path) -> None:
    """`token list` shows names and roles, never a secret; the database holds no token."""
    data_dir = tmp_path / "d"
    token = make_token(data_dir, "submitter", "alice")
    listed = run_cli("token", "list", "--data-dir", str(data_dir), "--json")
    rows = json.loads(listed.stdout)
    assert [(r["name"], r["role"], r["revoked_at"]) for r in rows] == [("alice", "submitter", None)]
    assert token not in listed.stdout.decode()
    assert token.encode() not in (data_dir / "compound.sqlite3").read_bytes()
    again = run_cli(
        "token", "create", "--data-dir", str(data_dir), "--role", "admin", "--name", "alice"
    )
    assert again.returncode == 1 and b"exists already" in again.stderr
    bad_role = run_cli(
        "token", "create", "--data-dir", str(data_dir), "--role", "god", "--name", "x"
    )
    assert bad_role.returncode != 0 and b"Traceback" not in bad_role.stderr


def test_missing_or_unknown_token_gets_401_everywhere(secured: tuple[Coordinator, dict]) -> None:
    """HTTP answers 401 with WWW-Authenticate; every WebSocket closes with 4401."""
    coordinator, tokens = secured
    job_id = submit(coordinator, tokens["alice"])
    for method, path in [
        ("GET", "/api/v1/jobs"),
        ("POST", "/api/v1/jobs"),
        ("GET", f"/api/v1/jobs/{job_id}"),
        ("GET", f"/api/v1/jobs/{job_id}/logs"),
        ("POST", f"/api/v1/jobs/{job_id}/cancel"),
        ("GET", "/api/v1/contributors"),
        ("POST", "/submit-job"),
    ]:
        for headers in ({}, bearer("cct_not-a-token")):
            response = coordinator.api(method, path, json={"script": "x"}, headers=headers)
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
            assert isinstance(response.json()["detail"], str)
    for path in [f"/api/v1/jobs/{job_id}/follow", f"/ws/submitter/{job_id}", "/ws/contributor"]:
        assert ws_close_code(coordinator.ws_url + path) == 4401
        assert ws_close_code(coordinator.ws_url + path, "cct_wrong") == 4401
    # Public: the pages, the API docs and the health check.
    for path in ["/", "/healthz", "/openapi.json"]:
        assert coordinator.api("GET", path).status_code == 200


def test_roles_are_enforced_with_403_and_4403(secured: tuple[Coordinator, dict]) -> None:
    """A contributor token cannot submit or read jobs; a submitter cannot contribute."""
    coordinator, tokens = secured
    job_id = submit(coordinator, tokens["alice"])
    worker = bearer(tokens["worker"])
    assert (
        coordinator.api("POST", "/api/v1/jobs", json={"script": "x"}, headers=worker).status_code
        == 403
    )
    assert (
        coordinator.api("POST", "/submit-job", json={"script": "x"}, headers=worker).status_code
        == 403
    )
    assert coordinator.api("GET", f"/api/v1/jobs/{job_id}", headers=worker).status_code == 403
    follow = f"{coordinator.ws_url}/api/v1/jobs/{job_id}/follow"
    assert ws_close_code(follow, tokens["worker"]) == 4403
    assert ws_close_code(f"{coordinator.ws_url}/ws/submitter/{job_id}", tokens["worker"]) == 4403
    assert ws_close_code(f"{coordinator.ws_url}/ws/contributor", tokens["alice"]) == 4403


def test_submitters_see_only_their_own_jobs(secured: tuple[Coordinator, dict]) -> None:
    """Another submitter's job is exactly as unknown (404 / 4404); an admin sees all."""
    coordinator, tokens = secured
    alices = submit(coordinator, tokens["alice"])
    bobs = submit(coordinator, tokens["bob"])
    bob = bearer(tokens["bob"])
    unknown = coordinator.api("GET", "/api/v1/jobs/0000000000000000", headers=bob)
    for method, path in [
        ("GET", f"/api/v1/jobs/{alices}"),
        ("GET", f"/api/v1/jobs/{alices}/logs"),
        ("POST", f"/api/v1/jobs/{alices}/cancel"),
    ]:
        response = coordinator.api(method, path, headers=bob)
        assert response.status_code == 404
        assert response.json()["detail"].replace(alices, "ID") == unknown.json()["detail"].replace(
            "0000000000000000", "ID"
        )
    assert ws_close_code(f"{coordinator.ws_url}/api/v1/jobs/{alices}/follow", tokens["bob"]) == 4404
    assert ws_close_code(f"{coordinator.ws_url}/ws/submitter/{alices}", tokens["bob"]) == 4404
    listed = coordinator.api("GET", "/api/v1/jobs", headers=bob).json()["jobs"]
    assert [job["id"] for job in listed] == [bobs]
    assert job_as(coordinator, alices, tokens["alice"])["status"] == "queued"
    everyone = coordinator.api("GET", "/api/v1/jobs", headers=bearer(tokens["admin"])).json()
    assert {job["id"] for job in everyone["jobs"]} == {alices, bobs}
    cancelled = coordinator.api(
        "POST", f"/api/v1/jobs/{alices}/cancel", headers=bearer(tokens["admin"])
    )
    assert cancelled.status_code == 202


def test_contributors_list_hides_who_runs_what(secured: tuple[Coordinator, dict]) -> None:
    """Submitters see name, state, cores and runtime; node ids and jobs are for admins."""
    coordinator, tokens = secured
    agent = FakeAgent(coordinator, token=tokens["worker"])
    submit(coordinator, tokens["alice"])
    agent.recv_type("job")
    seen = coordinator.api("GET", "/api/v1/contributors", headers=bearer(tokens["alice"])).json()
    row = seen["contributors"][0]
    assert row["busy"] is True and row["cores"] == 1 and row["state"] == "busy"
    assert "id" not in row and "current_job_id" not in row and "token_name" not in row
    admin = coordinator.api("GET", "/api/v1/contributors", headers=bearer(tokens["admin"])).json()
    assert admin["contributors"][0]["id"] == agent.node_id


def test_takeover_of_a_node_id_fails(secured: tuple[Coordinator, dict]) -> None:
    """Another token saying hello with the victim's node id is refused with 4403; the
    victim stays connected and its job's result is its own."""
    coordinator, tokens = secured
    victim = FakeAgent(coordinator, node_id="victim-node", token=tokens["worker"])
    job_id = submit(coordinator, tokens["alice"])
    job = victim.recv_type("job")
    with connect(
        f"{coordinator.ws_url}/ws/contributor", additional_headers=bearer(tokens["intruder"])
    ) as intruder:
        hello = {
            "type": "hello",
            "protocol_version": 1,
            "node_id": "victim-node",
            "name": "x",
            "cores": 1,
            "memory_bytes": 1,
        }
        intruder.send(json.dumps(hello))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                intruder.recv(timeout=15)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
    victim.log(job, [0], data="mine\n")
    assert victim.recv_type("ack")["seq"] == 0
    victim.done(job, last_seq=0)
    wait_for_status_as(coordinator, job_id, tokens["alice"], {"succeeded"})
    logs = coordinator.api("GET", f"/api/v1/jobs/{job_id}/logs", headers=bearer(tokens["alice"]))
    assert [r["data"] for r in logs.json()["records"]] == ["mine\n"]


def test_tokens_take_effect_and_revocation_closes_sockets(
    secured: tuple[Coordinator, dict],
) -> None:
    """A token made while the coordinator runs works within 5 s; a revoked one is refused
    within 5 s and its open sockets are closed."""
    coordinator, tokens = secured
    carol = make_token(coordinator.data_dir, "submitter", "carol")
    wait_until(
        lambda: coordinator.api("GET", "/api/v1/jobs", headers=bearer(carol)).status_code == 200,
        TOKEN_EFFECT_S,
        "the new token to work",
    )
    job_id = submit(coordinator, carol)
    agent = FakeAgent(coordinator, token=tokens["worker"])
    with connect(
        f"{coordinator.ws_url}/api/v1/jobs/{job_id}/follow",
        subprotocols=bearer_subprotocols(carol),  # type: ignore[arg-type]
    ) as follower:
        follower.recv(timeout=10)  # its status: the socket is open and served
        revoked = run_cli("token", "revoke", "--data-dir", str(coordinator.data_dir), "carol")
        assert revoked.returncode == 0
        started = time.monotonic()
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                follower.recv(timeout=TOKEN_EFFECT_S + 2)
        assert time.monotonic() - started < TOKEN_EFFECT_S + 1
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    assert coordinator.api("GET", "/api/v1/jobs", headers=bearer(carol)).status_code == 401
    agent.close()


def test_an_upload_whose_token_is_revoked_meanwhile_is_refused(
    secured: tuple[Coordinator, dict],
) -> None:
    """An input upload still streaming when its token is revoked gets 401 and leaves
    nothing stored, not even its partial data."""
    coordinator, _tokens = secured
    carol = make_token(coordinator.data_dir, "submitter", "carol")
    wait_until(
        lambda: coordinator.api("GET", "/api/v1/jobs", headers=bearer(carol)).status_code == 200,
        TOKEN_EFFECT_S,
        "the new token to work",
    )

    def body() -> Iterator[bytes]:
        yield b"a" * 65536
        revoked = run_cli("token", "revoke", "--data-dir", str(coordinator.data_dir), "carol")
        assert revoked.returncode == 0
        wait_until(
            lambda: (
                coordinator.api("GET", "/api/v1/jobs", headers=bearer(carol)).status_code == 401
            ),
            TOKEN_EFFECT_S,
            "the revocation to take effect",
        )
        for _ in range(4):
            yield b"b" * 65536

    response = httpx.put(
        coordinator.url + "/api/v1/inputs", content=body(), headers=bearer(carol), timeout=30
    )
    assert response.status_code == 401, response.text
    assert "revoked" in response.json()["detail"]
    blobs = coordinator.data_dir / "blobs"
    assert list((blobs / "incoming").iterdir()) == []
    assert [path for path in blobs.iterdir() if path.name != "incoming"] == []


def test_cli_and_agent_use_the_token(secured: tuple[Coordinator, dict], tmp_path: Path) -> None:
    """`compound submit` reads COMPOUND_TOKEN or --token; without one: a sentence, exit 3."""
    coordinator, tokens = secured
    script = tmp_path / "job.py"
    script.write_text("print('hi')\n")
    refused = run_cli("submit", str(script), "--detach", coordinator=coordinator)
    assert refused.returncode == 3
    assert b"needs a valid token" in refused.stderr and b"Traceback" not in refused.stderr
    wrong_role = run_cli(
        "submit", str(script), "--detach", "--token", tokens["worker"], coordinator=coordinator
    )
    assert wrong_role.returncode == 3 and b"refused" in wrong_role.stderr
    env = product_env(COMPOUND_COORDINATOR=coordinator.url, COMPOUND_TOKEN=tokens["alice"])
    queued = subprocess.run(
        [sys.executable, "-m", "compound", "submit", str(script), "--detach"],
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert queued.returncode == 0, queued.stderr.decode()
    other = run_cli("jobs", "--json", "--token", tokens["bob"], coordinator=coordinator)
    assert json.loads(other.stdout) == []


# ---------------------------------------------------------------- browsers


def test_foreign_origins_are_refused(tmp_path: Path) -> None:
    """A page elsewhere cannot submit (even a text/plain POST) nor open a socket; an origin
    named with --allow-origin can, and gets CORS headers naming it, never '*'."""
    allowed = "http://localhost:9999"
    server = Coordinator(data_dir=tmp_path / "c", extra_args=["--allow-origin", allowed]).start()
    try:
        evil = {"Origin": "https://evil.example", "Content-Type": "text/plain"}
        response = server.api(
            "POST", "/submit-job", content=b'{"script": "print(1)"}', headers=evil
        )
        assert response.status_code == 403
        assert server.api("GET", "/api/v1/jobs").json()["jobs"] == []
        evil_origin: Any = "https://evil.example"
        for path in ["/ws/contributor", "/ws/submitter/x", "/api/v1/jobs/x/follow"]:
            with (
                pytest.raises(InvalidStatus) as refused,
                connect(f"{server.ws_url}{path}", origin=evil_origin),
            ):
                pass
            assert refused.value.response.status_code == 403
        ok = server.api("GET", "/api/v1/jobs", headers={"Origin": allowed})
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == allowed
        own = server.api("GET", "/api/v1/jobs", headers={"Origin": server.url})
        assert own.status_code == 200 and "access-control-allow-origin" not in own.headers
    finally:
        server.stop()


def test_open_mode_answers_only_loopback_host_names(coordinator: Coordinator) -> None:
    """DNS rebinding: with no tokens, a request naming another host is refused."""
    rebinding = coordinator.api("GET", "/api/v1/jobs", headers={"Host": "evil.example:80"})
    assert rebinding.status_code == 403 and "loopback" in rebinding.json()["detail"]
    for host in ("localhost", "127.0.0.1", f"127.0.0.1:{coordinator.port}", "[::1]:80"):
        assert coordinator.api("GET", "/api/v1/jobs", headers={"Host": host}).status_code == 200


def test_non_loopback_without_tokens_refuses_to_start(tmp_path: Path) -> None:
    """Bound to every address with no token, the coordinator exits with one sentence; with
    --insecure-open it starts, warning. (In a network namespace that has only loopback.)"""
    command = [
        "unshare",
        "-n",
        sys.executable,
        "-m",
        "compound",
        "coordinator",
        "--host",
        "0.0.0.0",
        "--port",
        "0",
        "--data-dir",
        str(tmp_path / "d"),
    ]
    refused = subprocess.run(command, capture_output=True, env=product_env(), timeout=60)
    assert refused.returncode == 1
    assert b"compound token create" in refused.stderr and b"Traceback" not in refused.stderr
    insecure = subprocess.Popen(
        [*command, "--insecure-open"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=product_env(),
    )
    try:
        assert insecure.stdout is not None
        seen = b""
        deadline = time.monotonic() + 30
        while b"listening on" not in seen and time.monotonic() < deadline:
            line = insecure.stdout.readline()
            if not line:
                break
            seen += line
        assert b"INSECURE" in seen and b"listening on" in seen
    finally:
        insecure.terminate()
        insecure.wait(20)


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[Coordinator]:
    server = Coordinator(data_dir=tmp_path / "open").start()
    yield server
    server.stop()


def job_as(coordinator: Coordinator, job_id: str, token: str) -> dict[str, Any]:
    response = httpx.get(
        f"{coordinator.url}/api/v1/jobs/{job_id}", headers=bearer(token), timeout=30
    )
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def wait_for_status_as(
    coordinator: Coordinator, job_id: str, token: str, statuses: set[str], timeout_s: float = 30
) -> dict[str, Any]:
    job: dict[str, Any] = wait_until(
        lambda: (current := job_as(coordinator, job_id, token))["status"] in statuses and current,
        timeout_s,
        f"job {job_id} to be {statuses}",
    )
    return job
