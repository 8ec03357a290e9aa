"""`compound logs -f` against the worst follow server: the CLI's own WebSocket client.

The server here is real (a thread on a loopback port, raw TCP, RFC 6455 frames written by
hand) and hostile or odd on purpose: it sends malformed JSON, frames a server must not send,
a message over the size limit, refusals by close code, or drops the connection mid-job. The
CLI is the real command in a subprocess; it must answer each with one sentence, the right
exit code, the right close code to the server, and never a traceback or a lost record.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from compound.cli.follow_socket import (
    FrameError,
    accept_value,
    encode_frame,
    parse_close,
    parse_frame,
)
from compound.protocol import MAX_MESSAGE_BYTES
from support import run_cli

pytestmark = pytest.mark.timeout(60)

JOB_ID = "job-1"
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
END_OK = {"id": JOB_ID, "status": "succeeded", "exit_code": 0, "created_at": 1.0}


def server_frame(opcode: int, payload: bytes, fin: bool = True, masked: bool = False) -> bytes:
    """A frame as a server writes it (unmasked unless asked to break the rule)."""
    first = (0x80 if fin else 0) | opcode
    length = len(payload)
    mask_bit = 0x80 if masked else 0
    if length < 126:
        header = struct.pack("!BB", first, mask_bit | length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", first, mask_bit | 126, length)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, length)
    return header + (b"\0\0\0\0" if masked else b"") + payload


def text(message: object) -> bytes:
    return server_frame(1, json.dumps(message).encode())


def close(code: int, reason: str = "") -> bytes:
    return server_frame(8, struct.pack("!H", code) + reason.encode())


@dataclass
class Connection:
    """What one client connection asked for and what it said when it closed."""

    target: str = ""
    close_code: int | None = None


Script = Callable[[int, Connection, socket.socket], None]


@dataclass
class FollowServer:
    """Accepts WebSocket clients on loopback and runs ``script`` for each connection."""

    script: Script
    accept: str | None = None  # a Sec-WebSocket-Accept to send instead of the right one
    listener: socket.socket = field(default_factory=socket.socket)
    connections: list[Connection] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def serve(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            with sock:
                sock.settimeout(20)
                connection = Connection()
                self.connections.append(connection)
                try:
                    self._handshake(sock, connection)
                    self.script(len(self.connections) - 1, connection, sock)
                    connection.close_code = read_client_close(sock)
                except OSError:
                    pass  # the client went away: what it did is in `connection`

    def _handshake(self, sock: socket.socket, connection: Connection) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        lines = head.decode("latin-1").split("\r\n")
        connection.target = lines[0].split(" ")[1]
        key = next(
            line.split(":", 1)[1].strip()
            for line in lines
            if line.lower().startswith("sec-websocket-key")
        )
        accept = (
            self.accept or base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
        )
        sock.sendall(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            ).encode()
        )


def read_client_close(sock: socket.socket) -> int | None:
    """The code of the client's close frame (frames before it are skipped); None at EOF."""
    buffer = b""
    while True:
        frame = parse_masked(buffer)
        if frame is not None:
            opcode, payload, used = frame
            buffer = buffer[used:]
            if opcode == 8:
                return parse_close(payload)[0]
            continue
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buffer += chunk


def parse_masked(buffer: bytes) -> tuple[int, bytes, int] | None:
    """A client frame (always masked, short here) from ``buffer``, unmasked."""
    if len(buffer) < 6:
        return None
    opcode, length = buffer[0] & 0x0F, buffer[1] & 0x7F
    assert buffer[1] & 0x80, "a client frame must be masked"
    assert length < 126, "the CLI only sends short control frames"
    if len(buffer) < 6 + length:
        return None
    mask = buffer[2:6]
    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(buffer[6 : 6 + length]))
    return opcode, payload, 6 + length


StartServer = Callable[..., FollowServer]


@pytest.fixture
def follow_server() -> Iterator[StartServer]:
    servers: list[tuple[FollowServer, threading.Thread]] = []

    def start(script: Script, accept: str | None = None) -> FollowServer:
        server = FollowServer(script, accept)
        server.listener.bind(("127.0.0.1", 0))
        server.listener.listen()
        thread = threading.Thread(target=server.serve, daemon=True)
        thread.start()
        servers.append((server, thread))
        return server

    yield start
    for server, thread in servers:
        server.listener.shutdown(socket.SHUT_RDWR)  # wakes accept(); close() alone does not
        server.listener.close()
        thread.join(5)


def follow(server: FollowServer) -> tuple[int, bytes, str]:
    result = run_cli("logs", "-f", JOB_ID, "-c", server.url, timeout_s=45)
    stderr = result.stderr.decode()
    assert "Traceback" not in stderr, stderr
    return result.returncode, result.stdout, stderr


def sending(*frames: bytes) -> Script:
    def script(_index: int, _connection: Connection, sock: socket.socket) -> None:
        sock.sendall(b"".join(frames))

    return script


# ------------------------------------------------------------------ the happy path, by hand


def test_fragments_pings_and_end_give_the_output_and_exit_code(follow_server: StartServer) -> None:
    """A message in fragments with a ping between them, then the end: the output byte-exact,
    the script's exit code, a pong sent and a normal close."""
    records = json.dumps(
        {"type": "records", "records": [{"seq": 0, "data": "héllo\n"}, {"seq": 1, "data": "x"}]}
    ).encode()
    server = follow_server(
        sending(
            server_frame(1, records[:10], fin=False),
            server_frame(9, b"are you there"),
            server_frame(0, records[10:], fin=True),
            text({"type": "end", "job": {**END_OK, "exit_code": 7}}),
            close(1000),
        )
    )
    code, out, _ = follow(server)
    assert (code, out) == (7, "héllo\nx".encode())
    assert server.connections[0].close_code == 1000


def test_a_dropped_connection_resumes_after_the_last_record(follow_server: StartServer) -> None:
    """The connection drops mid-job: the CLI reconnects with after=<last seq>, and a record
    sent again is not printed twice."""

    def script(index: int, _connection: Connection, sock: socket.socket) -> None:
        if index == 0:
            sock.sendall(text({"type": "records", "records": [{"seq": 0, "data": "a\n"}]}))
            sock.shutdown(socket.SHUT_RDWR)  # no close frame: the connection is lost
            return
        resent = [{"seq": 0, "data": "a\n"}, {"seq": 1, "data": "b\n"}]
        sock.sendall(
            text({"type": "records", "records": resent}) + text({"type": "end", "job": END_OK})
        )

    server = follow_server(script)
    code, out, stderr = follow(server)
    assert (code, out) == (0, b"a\nb\n")
    assert "reconnecting" in stderr
    assert [c.target.rsplit("after=", 1)[1] for c in server.connections] == ["-1", "0"]


# ------------------------------------------------------------------ hostile servers


@pytest.mark.parametrize(
    ("frames", "close_code", "words"),
    [
        ([server_frame(1, b"{not json")], 1007, "cannot read (message is not valid JSON)"),
        ([server_frame(1, b"\xff\xfe")], 1007, "not valid UTF-8"),
        ([text({"type": "records", "records": [{"seq": "0", "data": "x"}]})], 1002, "seq"),
        ([text({"type": "end", "job": {"id": JOB_ID, "status": "lost"}})], 1002, "status"),
        ([text({"type": "bye"})], 1002, "with a type"),
        ([text({"type": "records", "records": [{"seq": 0, "data": "x" * 70_000}]})], 1002, "data"),
        ([server_frame(1, b"{}", masked=True)], 1002, "masked"),
        ([server_frame(0x3, b"")], 1002, "unknown opcode"),
        ([server_frame(9, b"x" * 126)], 1002, "control frame"),
        ([server_frame(0, b"{}")], 1002, "continuation"),
        ([struct.pack("!BBQ", 0x81, 127, MAX_MESSAGE_BYTES + 1)], 1009, "too big"),
        (
            [
                server_frame(1, b" " * (MAX_MESSAGE_BYTES // 2), fin=False),
                *[server_frame(0, b" " * (MAX_MESSAGE_BYTES // 2), fin=False)] * 2,
            ],
            1009,
            "too big",
        ),
    ],
    ids=[
        "not-json",
        "not-utf8",
        "seq-as-string",
        "unknown-status",
        "unknown-type",
        "record-too-long",
        "masked-frame",
        "unknown-opcode",
        "long-ping",
        "stray-continuation",
        "frame-over-limit",
        "fragments-over-limit",
    ],
)
def test_a_bad_message_is_one_sentence_exit_3_and_a_close_code(
    follow_server: StartServer,
    frames: list[bytes],
    close_code: int,
    words: str,
) -> None:
    """Whatever the server sends that breaks the protocol: exit 3, one sentence naming the
    problem, the matching close code sent back, and no reconnection loop."""
    server = follow_server(sending(*frames))
    code, out, stderr = follow(server)
    assert code == 3 and out == b""
    assert words in stderr and stderr.count("\n") == 1, stderr
    assert [c.close_code for c in server.connections] == [close_code]


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (4404, f"no job with id '{JOB_ID}'"),
        (4401, "needs a valid token"),
        (4403, "the coordinator refused: not yours"),
    ],
)
def test_refusals_by_close_code_are_sentences(
    follow_server: StartServer, code: int, words: str
) -> None:
    """The coordinator's refusals (unknown job, no token, forbidden) end the command at once
    with a sentence and exit 3, without reconnecting."""
    server = follow_server(sending(close(code, "not yours")))
    exit_code, _, stderr = follow(server)
    assert exit_code == 3 and words in stderr, stderr
    assert len(server.connections) == 1


def test_a_wrong_handshake_is_a_sentence_not_a_reconnection_loop(
    follow_server: StartServer,
) -> None:
    """A 101 with the wrong Sec-WebSocket-Accept breaks RFC 6455: exit 3 at once."""
    server = follow_server(sending(text({"type": "end", "job": END_OK})), accept="bogus")
    code, _, stderr = follow(server)
    assert code == 3 and "Sec-WebSocket-Accept is wrong" in stderr, stderr
    assert len(server.connections) == 1


@pytest.mark.parametrize(("status", "refused"), [(404, True), (503, False)])
def test_an_http_answer_to_the_upgrade(status: int, refused: bool) -> None:
    """A 4xx to the upgrade is a refusal (exit 3, no retry); a 5xx is retried, and the
    follow goes on when the server comes round."""

    def answer(index: int, sock: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        if index == 0:
            sock.sendall(b"HTTP/1.1 %d No\r\nContent-Length: 0\r\n\r\n" % status)
            return
        key = next(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key")
        )
        accept = accept_value(key.decode())
        sock.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: %s\r\n\r\n"
            % accept.encode()
            + text({"type": "end", "job": END_OK})
        )

    listener = socket.create_server(("127.0.0.1", 0))
    accepted = 0

    def serve() -> None:
        nonlocal accepted
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            with sock:
                answer(accepted, sock)
            accepted += 1

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        result = run_cli("logs", "-f", JOB_ID, "-c", url, timeout_s=45)
    finally:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(5)
    stderr = result.stderr.decode()
    assert "Traceback" not in stderr
    if refused:
        assert result.returncode == 3 and "HTTP 404" in stderr and accepted == 1, stderr
    else:
        assert result.returncode == 0 and "reconnecting" in stderr and accepted == 2, stderr


def test_a_huge_exit_code_is_not_taken_as_the_scripts(follow_server: StartServer) -> None:
    """An exit code no process can have (valid JSON, a hostile value) gives 125, not a crash."""
    server = follow_server(sending(text({"type": "end", "job": {**END_OK, "exit_code": 10**30}})))
    assert follow(server)[0] == 125


# ------------------------------------------------------------------ the frame rules, pure


def test_client_frames_are_masked_and_round_trip() -> None:
    """encode_frame masks; unmasking gives the payload back, at each length encoding."""
    for size in (0, 125, 126, 65_535, 65_536):
        payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
        frame = encode_frame(2, payload, b"\x01\x02\x03\x04")
        assert frame[1] & 0x80
        start = {True: 2, False: 4 if size < 65_536 else 10}[size < 126] + 4
        mask = frame[start - 4 : start]
        assert bytes(b ^ mask[i % 4] for i, b in enumerate(frame[start:])) == payload


def test_parse_frame_waits_for_a_whole_frame() -> None:
    """A frame cut anywhere is None until its last byte is there."""
    frame = server_frame(1, b"x" * 300)
    assert all(parse_frame(frame[:cut], 1000) is None for cut in range(len(frame)))
    assert parse_frame(frame + b"\x81", 1000) == (True, 1, b"x" * 300, len(frame))
    with pytest.raises(FrameError):
        parse_frame(server_frame(1, b"x" * 300), 299)


def test_accept_value_is_rfc_6455s_example() -> None:
    """The example of RFC 6455 section 1.3."""
    assert accept_value("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
