"""Robustness of the coordinator process: half-open floods, shutdown, file modes, and
`compound app` without its desktop extra. Real coordinator processes on loopback."""

from __future__ import annotations

import base64
import collections
import contextlib
import os
import resource
import selectors
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from support import Coordinator, product_env, wait_until

HALF_OPEN = 3000
HEADER_TIMEOUT_S = 2.0
MAX_CONNECTIONS = 500
# Room for scheduling on a shared 2-core machine.
MARGIN_S = 3.0
SHUTDOWN_LIMIT_S = 10.0


@pytest.fixture
def flood_coordinator(tmp_path: Path) -> Iterator[Coordinator]:
    server = Coordinator(
        data_dir=tmp_path / "coordinator",
        extra_args=[
            "--header-timeout-s",
            str(HEADER_TIMEOUT_S),
            "--max-connections",
            str(MAX_CONNECTIONS),
        ],
    ).start()
    yield server
    server.stop()


def _raise_own_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < needed:
        pytest.skip(f"this test needs {needed} open files; the hard limit is {hard}")


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _healthz(coordinator: Coordinator) -> int:
    # A fresh connection each time, as a monitoring probe makes.
    return httpx.get(coordinator.url + "/healthz", timeout=5).status_code


def _half_open(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    sock.setblocking(False)
    return sock


def _wait_all_closed(sockets: list[socket.socket], deadline: float) -> int:
    """Wait until the server has closed every socket; returns how many are still open."""
    selector = selectors.DefaultSelector()
    for sock in sockets:
        selector.register(sock, selectors.EVENT_READ)
    open_count = len(sockets)
    while open_count and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=max(0.0, deadline - time.monotonic())):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(4096)
            except ConnectionResetError:
                data = b""
            if not data:
                selector.unregister(sock)
                open_count -= 1
    selector.close()
    return open_count


def _most_repeated_line(output: str) -> tuple[str, int]:
    # Drop the "date time" prefix of our log format so identical messages compare equal.
    bodies = [line.split(" ", 2)[-1] for line in output.splitlines() if line.strip()]
    return collections.Counter(bodies).most_common(1)[0]


def test_half_open_flood_is_bounded_and_healthz_answers(flood_coordinator: Coordinator) -> None:
    """3,000 connections that never finish their headers neither exhaust the coordinator nor
    block /healthz; the server closes them within the header timeout and logs no flood."""
    _raise_own_fd_limit(HALF_OPEN + 512)
    assert flood_coordinator.proc is not None and flood_coordinator.output is not None
    pid = flood_coordinator.proc.pid
    baseline_fds = _open_fds(pid)
    started = time.monotonic()
    sockets: list[socket.socket] = []
    peak_fds = 0
    try:
        for batch in range(HALF_OPEN // 500):
            sockets.extend(_half_open(flood_coordinator.port) for _ in range(500))
            assert _healthz(flood_coordinator) == 200, f"after {(batch + 1) * 500} half-open"
            peak_fds = max(peak_fds, _open_fds(pid))
        last_opened = time.monotonic()
        still_open = _wait_all_closed(sockets, last_opened + HEADER_TIMEOUT_S + MARGIN_S)
        assert still_open == 0, f"{still_open} half-open connections outlived the timeout"
    finally:
        for sock in sockets:
            sock.close()
    assert peak_fds <= baseline_fds + MAX_CONNECTIONS + 64, f"{peak_fds} fds at the peak"
    assert _healthz(flood_coordinator) == 200
    job = flood_coordinator.submit("print('still here')")
    assert flood_coordinator.job(job)["status"] == "queued"
    wait_until(lambda: _open_fds(pid) <= baseline_fds + 8, 10, "the coordinator's fds to drop")
    line, count = _most_repeated_line(flood_coordinator.output.text())
    assert count <= 3, f"logged {count} times: {line}"
    assert time.monotonic() - started < 30


def test_connection_limit_refuses_with_a_clean_503(tmp_path: Path) -> None:
    """WebSockets cannot take the slots kept for plain HTTP (one more is refused with 503
    while /healthz answers), and with every slot in real use a newcomer gets a 503 with a
    JSON detail rather than a reset."""
    max_connections = 16  # 1 slot kept for plain HTTP, 15 for WebSockets
    coordinator = Coordinator(
        data_dir=tmp_path / "coordinator", extra_args=["--max-connections", str(max_connections)]
    ).start()
    try:
        job = coordinator.submit("print('waiting')")
        follow_url = f"{coordinator.ws_url}/api/v1/jobs/{job}/follow"
        with contextlib.ExitStack() as sockets:
            for _ in range(max_connections - 1):
                sockets.enter_context(connect(follow_url, open_timeout=5))
            with pytest.raises(InvalidStatus) as refused:
                sockets.enter_context(connect(follow_url, open_timeout=5))
            assert refused.value.response.status_code == 503
            assert b"connection limit" in refused.value.response.body
            assert _healthz(coordinator) == 200
            # A request whose headers are complete but whose body never comes holds the
            # last slot: it is real work in progress, not a half-open connection.
            slow_body = sockets.enter_context(
                socket.create_connection(("127.0.0.1", coordinator.port), timeout=5)
            )
            slow_body.sendall(
                b"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
            )
            full = wait_until(
                lambda: (
                    (answer := httpx.get(coordinator.url + "/healthz", timeout=5)).status_code
                    == 503
                    and answer
                ),
                10,
                "a 503 once every slot is taken",
            )
            assert "connection limit" in full.json()["detail"]
        wait_until(lambda: _healthz(coordinator) == 200, 10, "/healthz once slots are free")
    finally:
        coordinator.stop()


def _read_response(sock: socket.socket) -> bytes:
    """One whole HTTP response (headers and a Content-Length body) from a kept-alive socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.lower().split(b"\r\n")
        if line.startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(4096)
    return head + b"\r\n\r\n" + body


def test_idle_and_stalled_keep_alive_connections_are_closed(
    flood_coordinator: Coordinator,
) -> None:
    """After a response, a kept-alive connection that sends nothing is closed by uvicorn's
    5 s keep-alive timeout, and one whose next request stalls mid-headers by the header
    timeout."""
    port = flood_coordinator.port
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as idle,
        socket.create_connection(("127.0.0.1", port), timeout=5) as stalled,
    ):
        for sock in (idle, stalled):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert _read_response(sock).startswith(b"HTTP/1.1 200")
        stalled.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        stalled.settimeout(HEADER_TIMEOUT_S + MARGIN_S)
        assert stalled.recv(4096).startswith(b"HTTP/1.1 408")
        idle.settimeout(5 + MARGIN_S)
        assert idle.recv(4096) == b""


BODY_TIMEOUT_S = 1.0


@pytest.fixture
def body_coordinator(tmp_path: Path) -> Iterator[Coordinator]:
    server = Coordinator(
        data_dir=tmp_path / "coordinator", extra_args=["--body-timeout-s", str(BODY_TIMEOUT_S)]
    ).start()
    yield server
    server.stop()


def _post_head(length: int) -> bytes:
    return (
        "POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def test_a_trickled_request_body_is_cut_with_408(body_coordinator: Coordinator) -> None:
    """Headers complete, then a body that stops coming: 408 and closed once its time is up
    (the body timeout plus a second per 500 bytes that came); others are served meanwhile."""
    with socket.create_connection(("127.0.0.1", body_coordinator.port), timeout=5) as slow:
        slow.sendall(_post_head(100_000) + b'{"script": "' + b"#" * 988)
        assert _healthz(body_coordinator) == 200
        began = time.monotonic()
        slow.settimeout(BODY_TIMEOUT_S + 2 + MARGIN_S)
        answer = _read_response(slow)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert b"The request body did not arrive in time." in answer
        # The thousand bytes that came bought two more seconds.
        assert time.monotonic() - began > BODY_TIMEOUT_S
        assert slow.recv(4096) == b""
    assert body_coordinator.submit("print('still served')")


def test_a_trickled_upload_is_cut_and_leaves_nothing(
    body_coordinator: Coordinator, tmp_path: Path
) -> None:
    """An inputs upload that stops coming is cut with a 408; its partial file is removed."""
    incoming = tmp_path / "coordinator" / "blobs" / "incoming"
    with socket.create_connection(("127.0.0.1", body_coordinator.port), timeout=5) as slow:
        slow.sendall(
            b"PUT /api/v1/inputs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/x-tar\r\nContent-Length: 1000000\r\n\r\n" + b"\0" * 100
        )
        wait_until(lambda: any(incoming.iterdir()), 10, "the upload's partial file")
        slow.settimeout(BODY_TIMEOUT_S + 1 + MARGIN_S)
        assert _read_response(slow).startswith(b"HTTP/1.1 408")
    wait_until(lambda: not any(incoming.iterdir()), 10, "the partial file removed")


def test_a_request_body_that_keeps_coming_is_not_cut(body_coordinator: Coordinator) -> None:
    """A body sent at ~1,600 bytes/s takes 2.5 times the body timeout and is taken whole."""
    body = b'{"script": "print(1)\\n#' + b"x" * 3960 + b'"}'
    with socket.create_connection(("127.0.0.1", body_coordinator.port), timeout=10) as paced:
        paced.sendall(_post_head(len(body)))
        for start in range(0, len(body), 400):
            paced.sendall(body[start : start + 400])
            time.sleep(0.25)  # the client's own pace: the thing under test
        answer = _read_response(paced)
    assert answer.startswith(b"HTTP/1.1 201"), answer


def _read_until_closed(websocket: ClientConnection, codes: list[int | None]) -> None:
    try:
        while True:
            websocket.recv()
    except ConnectionClosed as closed:
        codes.append(closed.rcvd.code if closed.rcvd else None)


def _raw_websocket(port: int, path: str) -> socket.socket:
    """A WebSocket handshake on a bare socket that will never be read from again."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    return sock


def test_sigterm_exits_within_10_s_and_closes_sockets_with_1001(tmp_path: Path) -> None:
    """With followers on a queued job, a client that never reads and a contributor socket
    that sent nothing, SIGTERM ends the process within 10 s and readers see close 1001."""
    coordinator = Coordinator(data_dir=tmp_path / "coordinator").start()
    assert coordinator.proc is not None and coordinator.output is not None
    job = coordinator.submit("print('never runs')")
    paths = [f"/api/v1/jobs/{job}/follow", f"/ws/submitter/{job}", "/ws/contributor"]
    clients = contextlib.ExitStack()
    readers = [clients.enter_context(connect(coordinator.ws_url + p)) for p in paths]
    codes: list[int | None] = []
    threads = [threading.Thread(target=_read_until_closed, args=(ws, codes)) for ws in readers]
    for thread in threads:
        thread.start()
    silent = _raw_websocket(coordinator.port, f"/api/v1/jobs/{job}/follow")
    try:
        wait_until(
            lambda: (
                coordinator.output is not None
                and coordinator.output.text().count("[accepted]") >= 4
            ),
            10,
            "four accepted WebSockets",
        )
        started = time.monotonic()
        coordinator.proc.send_signal(signal.SIGTERM)
        coordinator.proc.wait(SHUTDOWN_LIMIT_S)
        assert time.monotonic() - started < SHUTDOWN_LIMIT_S
        for thread in threads:
            thread.join(5)
        assert codes == [1001, 1001, 1001], coordinator.output.text()
        assert "Traceback" not in coordinator.output.text()
    finally:
        silent.close()
        clients.close()
        coordinator.stop()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _database_files(data_dir: Path) -> list[Path]:
    return sorted(data_dir.glob("compound.sqlite3*"))


def _check_private(data_dir: Path) -> None:
    assert _mode(data_dir) == 0o700
    files = _database_files(data_dir)
    assert {p.name for p in files} >= {"compound.sqlite3", "compound.sqlite3-wal"}
    for path in files:
        assert _mode(path) == 0o600, f"{path.name} is {oct(_mode(path))}"


def test_data_dir_and_database_files_are_private(tmp_path: Path) -> None:
    """The data directory is 0700 and the database with its -wal/-shm files 0600, fresh or
    left with looser modes by an earlier run."""
    data_dir = tmp_path / "coordinator"
    coordinator = Coordinator(data_dir=data_dir).start()
    try:
        coordinator.submit("print('a write, so the WAL exists')")
        _check_private(data_dir)
    finally:
        coordinator.stop()
    data_dir.chmod(0o755)
    for suffix in ("", "-wal", "-shm"):
        path = data_dir / f"compound.sqlite3{suffix}"
        path.touch()
        path.chmod(0o644)
    coordinator = Coordinator(data_dir=data_dir).start()
    try:
        coordinator.submit("print('again')")
        _check_private(data_dir)
    finally:
        coordinator.stop()


def test_app_without_desktop_extra_says_how_to_install_it() -> None:
    """`compound app` without pywebview prints one sentence naming the extra and --browser,
    and exits 1 with no traceback."""
    program = (
        "import sys; sys.modules['webview'] = None; sys.argv = ['compound', 'app']; "
        "from compound.cli.main import run; run()"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, env=product_env(), timeout=60
    )
    message = result.stderr.decode().strip()
    assert result.returncode == 1
    assert "Traceback" not in message and len(message.splitlines()) == 1
    assert "pip install 'compound[desktop]'" in message and "--browser" in message
