"""The CLI's own HTTP/1.1 connection (cli/http_wire.py) against odd and hostile servers.

The server is real: a thread on a loopback port that reads each request and writes the bytes
a test gives it, right or wrong. `compound submit --detach` is the real command in a
subprocess; whatever the server answers, the user gets the job id or one sentence and exit
3, never a traceback, and the CLI reads no more than its bounds.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from compound.cli.client import ClientError, CoordinatorClient
from compound.cli.http_wire import MAX_BODY_BYTES, MAX_HEAD_BYTES
from support import run_cli

pytestmark = pytest.mark.timeout(60)

JOB = b'{"id": "job-7", "status": "queued"}'
Answer = Callable[[int, socket.socket], None]


class RawServer:
    """Reads one request on each connection, then answers it with ``answer(i, sock)``
    (``i`` the connection's number, from 0)."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def _serve(self) -> None:
        index = 0
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            with sock:
                try:
                    self.read_request(sock)
                    self.answer(index, sock)
                except OSError:
                    pass  # the client left: what it saw is its own business
            index += 1

    def read_request(self, sock: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionResetError
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            ),
            0,
        )
        while len(body) < length:
            body += sock.recv(65536)
        self.requests.append(head)

    def stop(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes accept(); close() alone does not
        self.listener.close()
        self.thread.join(5)


@pytest.fixture
def serve() -> Iterator[Callable[[Answer], RawServer]]:
    servers: list[RawServer] = []

    def start(answer: Answer) -> RawServer:
        servers.append(RawServer(answer))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "job.py"
    path.write_text("print('hello')\n")
    return path


def start_replying(serve: Callable[[Answer], RawServer], *parts: bytes) -> RawServer:
    """A server that answers every request with ``parts``, then ends the connection."""

    def answer(_index: int, sock: socket.socket) -> None:
        for part in parts:
            sock.sendall(part)

    return serve(answer)


def submit_detach(server: RawServer, script: Path) -> tuple[int, str, str]:
    result = run_cli("submit", str(script), "--detach", "-c", server.url, timeout_s=45)
    stderr = result.stderr.decode()
    assert "Traceback" not in stderr, stderr
    return result.returncode, result.stdout.decode(), stderr


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\n\r\n%s" % (len(JOB), JOB),
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\n" + JOB[:5] + b"\r\n" + b"%x\r\n" % (len(JOB) - 5) + JOB[5:] + b"\r\n"
        b"0\r\nX-Trailer: 1\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nConnection: close\r\n\r\n" + JOB,
        b"HTTP/1.0 201 Created\r\n\r\n" + JOB,
    ],
    ids=["content-length", "chunked-with-trailer", "interim-then-to-close", "http-1.0"],
)
def test_every_framing_of_an_answer_is_read(
    serve: Callable[[Answer], RawServer], script: Path, answer: bytes
) -> None:
    """Content-Length, chunked (with extensions and trailers), an interim 100, a body to the
    end of the connection: the job id comes out."""
    server = start_replying(serve, answer)
    assert submit_detach(server, script) == (0, "job-7\n", "")
    assert server.requests[0].startswith(b"POST /api/v1/jobs HTTP/1.1\r\n")


@pytest.mark.parametrize(
    ("parts", "words"),
    [
        ([b"SSH-2.0-OpenSSH\r\n\r\n"], "did not answer in HTTP/1.1"),
        ([b"HTTP/1.1 2x1 Created\r\n\r\n"], "no valid status code"),
        ([b"HTTP/1.1 201 Created\r\nno colon here\r\n\r\n"], "malformed header"),
        ([b"HTTP/1.1 201 Created\r\n", b"X-Pad: " + b"a" * (MAX_HEAD_BYTES + 10)], "too long"),
        ([b"HTTP/1.1 201 Created\r\nContent-Length: -5\r\n\r\n"], "invalid Content-Length"),
        (
            [b"HTTP/1.1 201 Created\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"],
            "two different lengths",
        ),
        (
            [b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY_BYTES + 1)],
            "too big",
        ),
        ([b'HTTP/1.1 201 Created\r\nContent-Length: 100\r\n\r\n{"id"'], "mid-answer"),
        ([b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"], "malformed"),
        (
            [
                b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n"
                % (MAX_BODY_BYTES + 1)
            ],
            "too big",
        ),
        ([b"HTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nnot"], "not JSON"),
        ([b""], "without an answer"),
    ],
    ids=[
        "not-http",
        "bad-status",
        "bad-header",
        "endless-head",
        "negative-length",
        "two-lengths",
        "huge-length",
        "cut-body",
        "bad-chunk-size",
        "huge-chunk",
        "not-json",
        "closed-at-once",
    ],
)
def test_a_broken_answer_is_one_sentence_and_exit_3(
    serve: Callable[[Answer], RawServer], script: Path, parts: list[bytes], words: str
) -> None:
    """Whatever breaks HTTP (or is too big to take) ends `submit` with a sentence naming it."""
    server = start_replying(serve, *parts)
    code, out, stderr = submit_detach(server, script)
    assert (code, out) == (3, "")
    assert words in stderr and stderr.count("\n") == 1, stderr


def test_a_stale_kept_alive_connection_is_replaced_once(
    serve: Callable[[Answer], RawServer],
) -> None:
    """The server closes a kept-alive connection between two requests: the second request
    goes again, once, on a fresh connection; a fresh one closed at once is an error."""
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(JOB), JOB)

    def answer(index: int, sock: socket.socket) -> None:
        if index < 2:
            sock.sendall(ok)  # then the connection ends, though the answer said keep-alive

    server = serve(answer)
    client = CoordinatorClient(server.url)
    try:
        assert client.job("job-7")["id"] == "job-7"
        assert client.job("job-7")["id"] == "job-7"  # stale: sent again on connection 2
        with pytest.raises(ClientError, match="without an answer"):
            client.job("job-7")  # connection 3 answers nothing: no second try
    finally:
        client.close()
    assert len(server.requests) == 3  # one on each connection
