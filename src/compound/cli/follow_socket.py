"""A small synchronous WebSocket client (RFC 6455) for the CLI's follow socket.

``websockets`` with asyncio cost ~90 ms of imports before `compound submit` could follow its
job, and its sync client ~70 ms; this one needs ``socket``, ``base64``, ``hashlib`` and
``os``. It does what following needs and no more: a client handshake (plus TLS when given a
context), text and binary messages from the server (fragmented or not), ping answered with
pong, a keepalive ping when the server is silent, and the close handshake. It offers no
extension, so frames never arrive compressed.

The frame rules are pure functions (``parse_frame``, ``encode_frame``) apart from the I/O.
Bad frames from the server raise :class:`FrameError` with the close code to answer with,
never the details of a parser.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
import time
from typing import TYPE_CHECKING, NoReturn

from compound.cli.http_wire import open_socket

if TYPE_CHECKING:
    import ssl
    from collections.abc import Iterator

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10
_DATA_OPCODES = (OP_CONTINUATION, OP_TEXT, OP_BINARY)
_CONTROL_OPCODES = (OP_CLOSE, OP_PING, OP_PONG)
CLOSE_NO_STATUS = 1005  # the close frame carried no code (never sent on the wire)
MAX_HANDSHAKE_BYTES = 16 * 1024
# No byte from the server for this long: ping it; as long again without an answer: lost
# (websockets' default keepalive, which the asyncio client used).
KEEPALIVE_S = 20.0
_RECV_BYTES = 256 * 1024
# How long a client that closes waits for the server to end the connection.
CLOSE_TIMEOUT_S = 1.0


class FrameError(Exception):
    """The server broke RFC 6455; ``close_code`` is the answer (1002, 1007 or 1009)."""

    def __init__(self, reason: str, close_code: int = 1002) -> None:
        super().__init__(reason)
        self.close_code = close_code


class HandshakeError(Exception):
    """The server answered the upgrade with another HTTP ``status``."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.status = status


class Closed(Exception):
    """The connection ended: ``code`` is the server's close code, None when it just ended."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"connection closed ({code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


# ------------------------------------------------------------------ frames: pure


def encode_frame(opcode: int, payload: bytes, mask: bytes) -> bytes:
    """A final client frame of ``opcode``, masked with the 4 bytes ``mask`` (RFC 6455 5.3)."""
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


def parse_frame(buffer: bytes | bytearray, max_size: int) -> tuple[bool, int, bytes, int] | None:
    """The first frame in ``buffer`` as (fin, opcode, payload, bytes used); None until the
    buffer holds all of it. Raises FrameError for a frame a server must not send."""
    if len(buffer) < 2:
        return None
    fin, opcode = _check_header(buffer[0], buffer[1])
    extent = _payload_extent(buffer)
    if extent is None:
        return None
    start, length = extent
    if length > max_size:
        raise FrameError("message too big", 1009)
    if len(buffer) < start + length:
        return None
    return fin, opcode, bytes(buffer[start : start + length]), start + length


def _check_header(first: int, second: int) -> tuple[bool, int]:
    fin, opcode = bool(first & 0x80), first & 0x0F
    if first & 0x70:
        raise FrameError("reserved bits set without an extension")
    if second & 0x80:
        raise FrameError("a server frame was masked")
    if opcode not in _DATA_OPCODES and opcode not in _CONTROL_OPCODES:
        raise FrameError("unknown opcode")
    if opcode in _CONTROL_OPCODES and (not fin or second & 0x7F > 125):
        raise FrameError("a control frame was fragmented or too long")
    return fin, opcode


def _payload_extent(buffer: bytes | bytearray) -> tuple[int, int] | None:
    """Where the payload starts and how long it is; None until the length is all there."""
    length = buffer[1] & 0x7F
    if length == 126:
        return (4, struct.unpack_from("!H", buffer, 2)[0]) if len(buffer) >= 4 else None
    if length == 127:
        return (10, struct.unpack_from("!Q", buffer, 2)[0]) if len(buffer) >= 10 else None
    return 2, length


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode("utf-8")[:120]


def parse_close(payload: bytes) -> tuple[int, str]:
    """The code and reason of a close frame (1005 when it carries none)."""
    if len(payload) < 2:
        return CLOSE_NO_STATUS, ""
    (code,) = struct.unpack_from("!H", payload)
    return code, payload[2:].decode("utf-8", "replace")


def accept_value(key: str) -> str:
    """The Sec-WebSocket-Accept the server must answer ``key`` with (RFC 6455 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode("ascii")


def handshake_request(host: str, target: str, key: str, headers: dict[str, str]) -> bytes:
    lines = [
        f"GET {target} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def check_handshake_response(head: bytes, key: str) -> None:
    """Raise unless ``head`` (status line and headers) upgrades to WebSocket: HandshakeError
    for another HTTP answer (a coordinator restarting: worth trying again), FrameError for
    a 101 that breaks RFC 6455 (no use trying again)."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or parts[1] != "101":
        code = parts[1] if len(parts) > 1 else "?"
        status = int(code) if len(code) == 3 and code.isdigit() else None
        raise HandshakeError(f"the server answered HTTP {code} instead of a WebSocket", status)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("upgrade", "").lower() != "websocket":
        raise FrameError("the server did not upgrade to WebSocket")
    if headers.get("sec-websocket-accept") != accept_value(key):
        raise FrameError("the server's Sec-WebSocket-Accept is wrong")
    if headers.get("sec-websocket-extensions"):
        raise FrameError("the server chose an extension that was not offered")


# ------------------------------------------------------------------ the connection: I/O


class FollowSocket:
    """One client connection; iterate ``messages()`` for the server's messages."""

    def __init__(self, sock: socket.socket, buffered: bytes, max_size: int) -> None:
        self._sock = sock
        self._buffer = bytearray(buffered)
        self._max_size = max_size
        self._closed = False

    @classmethod
    def connect(
        cls,
        host: str,
        port: int,
        target: str,
        headers: dict[str, str],
        ssl_context: ssl.SSLContext | None,
        max_size: int,
        open_timeout_s: float = 10.0,
    ) -> FollowSocket:
        """Connect and complete the handshake; raises OSError (ssl errors included),
        TimeoutError, HandshakeError or FrameError."""
        sock = open_socket(host, port, open_timeout_s, ssl_context)
        try:
            key = base64.b64encode(os.urandom(16)).decode("ascii")
            host_header = host if ":" not in host else f"[{host}]"
            sock.sendall(handshake_request(f"{host_header}:{port}", target, key, headers))
            head, rest = _read_head(sock)
            check_handshake_response(head, key)
            sock.settimeout(KEEPALIVE_S)
        except BaseException:
            sock.close()
            raise
        return cls(sock, rest, max_size)

    def messages(self) -> Iterator[bytes]:
        """The payloads of the server's data messages as they arrive; ends with Closed
        (the server closed, or the connection ended) or FrameError (after answering it
        with its close code)."""
        fragments: list[bytes] = []
        size = 0
        while True:
            fin, opcode, payload = self._next_frame()
            if opcode in _CONTROL_OPCODES:
                self._control(opcode, payload)
                continue
            if (opcode == OP_CONTINUATION) != bool(fragments):
                self._fail(FrameError("a continuation frame out of place"))
            size += len(payload)
            if size > self._max_size:
                self._fail(FrameError("message too big", 1009))
            fragments.append(payload)
            if fin:
                yield fragments[0] if len(fragments) == 1 else b"".join(fragments)
                fragments, size = [], 0

    def fail(self, code: int, reason: str) -> None:
        """Close with ``code`` (the client refuses what it was sent)."""
        self._send_close(code, reason)
        self.close()

    def close(self) -> None:
        """Close politely (1000 if nothing was said yet) and release the socket."""
        if not self._closed:
            self._send_close(1000, "")
            self._await_server_close()
        self._sock.close()

    def _await_server_close(self) -> None:
        """Read until the server ends the connection, briefly: closing with its close frame
        unread would answer it with a TCP reset."""
        deadline = time.monotonic() + CLOSE_TIMEOUT_S
        try:
            self._sock.shutdown(socket.SHUT_WR)
            while (left := deadline - time.monotonic()) > 0:
                self._sock.settimeout(left)
                if not self._sock.recv(_RECV_BYTES):
                    return
        except OSError:  # TimeoutError included: the server is slow or gone; we are done
            return

    def _control(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_PING:
            self._send(OP_PONG, payload)
        elif opcode == OP_CLOSE:
            code, reason = parse_close(payload)
            self._send_close(code if code != CLOSE_NO_STATUS else 1000, "")
            self._sock.close()
            raise Closed(code, reason)

    def _next_frame(self) -> tuple[bool, int, bytes]:
        pinged = False
        while True:
            try:
                frame = parse_frame(self._buffer, self._max_size)
            except FrameError as exc:
                self._fail(exc)
            if frame is not None:
                fin, opcode, payload, used = frame
                del self._buffer[:used]
                return fin, opcode, payload
            try:
                chunk = self._sock.recv(_RECV_BYTES)
            except TimeoutError:
                if pinged:
                    raise
                self._send(OP_PING, b"keepalive")
                pinged = True
                continue
            if not chunk:
                self._sock.close()
                raise Closed(None)
            pinged = False
            self._buffer += chunk

    def _fail(self, exc: FrameError) -> NoReturn:
        self.fail(exc.close_code, str(exc))
        raise exc

    def _send_close(self, code: int, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._send(OP_CLOSE, close_payload(code, reason))
        except OSError:
            return  # the server is gone already: nothing to tell it

    def _send(self, opcode: int, payload: bytes) -> None:
        self._sock.sendall(encode_frame(opcode, payload, os.urandom(4)))


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """The handshake response's head and whatever came after it, bounded in size."""
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > MAX_HANDSHAKE_BYTES:
            raise FrameError("the server's handshake response is too long")
        chunk = sock.recv(4096)
        if not chunk:
            raise HandshakeError("the server closed the connection during the handshake")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest
