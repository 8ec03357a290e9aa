"""Bad input gets a clear answer, never a traceback, and breaks nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from support import Coordinator

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coordinator]:
    """One coordinator for the module: bad input must not hurt it, so sharing it is a test too."""
    server = Coordinator(data_dir=tmp_path_factory.mktemp("bad-input")).start()
    yield server
    server.stop()


def post(coordinator: Coordinator, path: str, content: bytes) -> httpx.Response:
    return httpx.post(
        coordinator.url + path,
        content=content,
        headers={"content-type": "application/json"},
        timeout=30,
    )


@pytest.mark.parametrize("path", ["/submit-job", "/api/v1/jobs"])
@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b'{"script": ""}', 400, "empty"),
        (b'{"script": "   \\n"}', 400, "empty"),
        (b"print('hi')", 400, "not JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (b'{"script": "\xff\xfe"}', 400, "UTF-8"),
        (b"{}", 422, "script"),
        (b'{"script": 5}', 422, "script"),
        (b'{"script": "x", "args": "notalist"}', 422, "args"),
        (b'{"script": "x", "timeout_s": -1}', 422, "timeout_s"),
        (b'{"script": "x", "env": {"A=B": "c"}}', 422, "environment"),
        (b'{"script": "x", "env": {"FOO\\n": "c"}}', 422, "environment"),
        (b'{"script": "x", "timeout_s": "5"}', 422, "timeout_s"),
        (b'{"script": "x", "args": ["\\ud800"]}', 400, "not JSON"),
        (b'{"script": "x", "env": {"A": "\\ud800"}}', 400, "not JSON"),
        (b'{"script": "\\ud800"}', 400, "not JSON"),
        (b'{"script": "x", "args": ' + b"[" * 100_000 + b"}", 400, "recursion"),
    ],
)
def test_bad_submissions(
    coordinator: Coordinator, path: str, body: bytes, status: int, words: str
) -> None:
    """Each malformed submission gets its 4xx and a one-sentence detail."""
    response = post(coordinator, path, body)
    assert response.status_code == status
    detail = response.json()["detail"]
    assert isinstance(detail, str) and words in detail and "Traceback" not in detail
    # Nothing half-stored: the job list still reads.
    assert httpx.get(coordinator.url + "/api/v1/jobs", timeout=30).status_code == 200


@pytest.mark.parametrize("path", ["/submit-job", "/api/v1/jobs"])
def test_script_over_limit_is_413(coordinator: Coordinator, path: str) -> None:
    """A script over 1 MiB is refused with 413, both with and without a Content-Length."""
    too_big = json.dumps({"script": "#" * (MiB + 1)}).encode()
    assert post(coordinator, path, too_big).status_code == 413

    def chunks():  # no Content-Length: the limit holds while streaming too
        for start in range(0, len(too_big), 65536):
            yield too_big[start : start + 65536]

    streamed = httpx.post(coordinator.url + path, content=chunks(), timeout=30)
    assert streamed.status_code == 413
    fits = json.dumps({"script": "#" * (MiB - 100)}).encode()
    assert post(coordinator, path, fits).status_code in (200, 201)


def test_unknown_job_is_404(coordinator: Coordinator) -> None:
    """Every job endpoint answers 404 for an id it does not know."""
    for method, path in [
        ("GET", "/api/v1/jobs/nope"),
        ("GET", "/api/v1/jobs/nope/logs"),
        ("POST", "/api/v1/jobs/nope/cancel"),
    ]:
        response = coordinator.api(method, path)
        assert response.status_code == 404
        assert "nope" in response.json()["detail"]
    bad_query = coordinator.api("GET", "/api/v1/jobs/nope/logs", params={"after": "x"})
    assert bad_query.status_code == 422


def closing_code(coordinator: Coordinator, *messages: str | bytes) -> int:
    with connect(f"{coordinator.ws_url}/ws/contributor", max_size=None) as websocket:
        try:
            for message in messages:
                websocket.send(message)
            websocket.recv(timeout=10)
            websocket.recv(timeout=10)
        except ConnectionClosed as closed:
            assert closed.rcvd is not None
            assert "Traceback" not in closed.rcvd.reason
            return closed.rcvd.code
    raise AssertionError("the socket stayed open")


@pytest.mark.parametrize(
    ("messages", "code"),
    [
        (["not json"], 1007),
        ([b"\xff\xfe\xfd"], 1007),
        (['{"no": "type"}'], 1002),
        (['{"type": "launch-missiles"}'], 1002),
        (
            [
                '{"type": "hello", "protocol_version": 99, "node_id": "n", "name": "n", '
                '"cores": 1, "memory_bytes": 1}'
            ],
            1002,
        ),
        (
            [
                '{"type": "hello", "protocol_version": 1, "node_id": "", "name": "n", '
                '"cores": 1, "memory_bytes": 1}'
            ],
            1002,
        ),
        (["x" * (5 * MiB)], 1009),
    ],
)
def test_bad_contributor_messages_close_the_socket(
    coordinator: Coordinator, messages: list[str | bytes], code: int
) -> None:
    """Malformed, unknown or oversized agent messages close with 1002/1007/1009."""
    assert closing_code(coordinator, *messages) == code
    assert coordinator.api("GET", "/healthz").json()["status"] == "ok"


def test_bad_messages_are_logged_server_side(coordinator: Coordinator) -> None:
    """The reason for a close goes to the coordinator's log, for its operator."""
    closing_code(coordinator, "not json")
    assert coordinator.output is not None
    coordinator.output.wait_for(lambda line: "bad message" in line, 10, "a log line")
