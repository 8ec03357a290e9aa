"""A small HTTP/1.1 client connection for the CLI's JSON requests, kept alive between them.

``http.client`` pulls in the ``email`` package and ``ssl`` on import: ~30 ms, half of what
`compound submit` imported before its first byte went out. The CLI's requests are small
JSON exchanges with one coordinator, so this connection does only that: one request at a
time, a body of known length, and a response read by Content-Length, chunked, or to the
end of the connection. Everything the server sends is bounded (head, body, chunk sizes);
what breaks HTTP raises :class:`ResponseError` with a sentence. Streaming file transfers
still use ``http.client`` (``client.py``), imported only for them.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ssl

MAX_HEAD_BYTES = 64 * 1024
# The largest JSON answer the CLI takes: a page of logs is bounded by the coordinator's
# 4 MiB message size, a list of jobs by its limit; this leaves room and bounds a hostile one.
MAX_BODY_BYTES = 64 * 1024 * 1024
_RECV_BYTES = 64 * 1024


class ResponseError(Exception):
    """The server's answer is not HTTP/1.1 this client can read; ``str()`` says why."""


class StaleConnection(ResponseError):
    """A kept-alive connection ended before any answer: the server closed it meanwhile."""


class HttpConnection:
    """One connection to ``host``:``port`` (TLS when ``ssl_context`` is given), opened on
    the first request and reused while the server keeps it alive."""

    def __init__(
        self, host: str, port: int, timeout_s: float, ssl_context: ssl.SSLContext | None
    ) -> None:
        self._host = host
        self._port = port
        self._timeout_s = timeout_s
        self._ssl_context = ssl_context
        self._sock: socket.socket | None = None
        self._buffer = b""

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buffer = b""

    def exchange(
        self, method: str, target: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        """Send one request and read its response: (status, body). Raises OSError (ssl's
        errors and TimeoutError included) or ResponseError; the connection is closed then."""
        try:
            sock = self._open()
            sock.sendall(self._request(method, target, body, headers))
            status, keep_alive, body_out = self._response(method)
        except BaseException:
            self.close()
            raise
        if not keep_alive:
            self.close()
        return status, body_out

    def _open(self) -> socket.socket:
        if self._sock is None:
            self._sock = open_socket(self._host, self._port, self._timeout_s, self._ssl_context)
        return self._sock

    def _request(
        self, method: str, target: str, body: bytes | None, headers: dict[str, str]
    ) -> bytes:
        host = self._host if ":" not in self._host else f"[{self._host}]"
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}:{self._port}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if body is not None or method in ("POST", "PUT"):
            lines.append(f"Content-Length: {len(body or b'')}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head + (body or b"")

    def _response(self, method: str) -> tuple[int, bool, bytes]:
        head = self._read_until(b"\r\n\r\n", MAX_HEAD_BYTES, "answer head", at_start=True)
        status, version, headers = parse_head(head)
        if status == 100:  # an interim answer; the real one follows
            return self._response(method)
        keep_alive = version == "HTTP/1.1" and "close" not in headers.get("connection", "")
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return status, keep_alive, b""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return status, keep_alive, self._read_chunked()
        if "content-length" in headers:
            length = _content_length(headers["content-length"])
            return status, keep_alive, self._read_exactly(length)
        return status, False, self._read_to_end()

    def _recv(self) -> bytes:
        assert self._sock is not None
        return self._sock.recv(_RECV_BYTES)

    def _read_until(self, mark: bytes, limit: int, what: str, at_start: bool = False) -> bytes:
        """The bytes before ``mark``; ``at_start``: an end of the connection before any
        byte of the answer is a StaleConnection (the only case worth sending again)."""
        while mark not in self._buffer:
            if len(self._buffer) > limit:
                raise ResponseError(f"the server's {what} is too long")
            chunk = self._recv()
            if not chunk:
                if at_start and not self._buffer:
                    raise StaleConnection("the server closed the connection without an answer")
                raise ResponseError("the server closed the connection mid-answer")
            self._buffer += chunk
        found, _, self._buffer = self._buffer.partition(mark)
        if len(found) > limit:
            raise ResponseError(f"the server's {what} is too long")
        return found

    def _read_exactly(self, length: int) -> bytes:
        if length > MAX_BODY_BYTES:
            raise ResponseError("the server's answer is too big")
        parts, have = [self._buffer], len(self._buffer)
        while have < length:
            chunk = self._recv()
            if not chunk:
                raise ResponseError("the server closed the connection mid-answer")
            parts.append(chunk)
            have += len(chunk)
        data = b"".join(parts)
        self._buffer = data[length:]
        return data[:length]

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self._read_until(b"\r\n", 1024, "chunk size line")
            size = _chunk_size(line)
            if size == 0:
                while self._read_until(b"\r\n", MAX_HEAD_BYTES, "trailer"):
                    pass  # trailers: not used
                return b"".join(parts)
            total += size
            if total > MAX_BODY_BYTES:
                raise ResponseError("the server's answer is too big")
            parts.append(self._read_exactly(size))
            if self._read_exactly(2) != b"\r\n":
                raise ResponseError("the server's chunked answer is malformed")

    def _read_to_end(self) -> bytes:
        parts, total = [self._buffer], len(self._buffer)
        self._buffer = b""
        while chunk := self._recv():
            total += len(chunk)
            if total > MAX_BODY_BYTES:
                raise ResponseError("the server's answer is too big")
            parts.append(chunk)
        return b"".join(parts)


def open_socket(
    host: str, port: int, timeout_s: float, ssl_context: ssl.SSLContext | None
) -> socket.socket:
    """A TCP connection to the coordinator, with TLS over it when given a context. Nagle is
    off: each small request or frame waits for its answer."""
    # An ASCII name goes as bytes: a str is put through the IDNA codec, whose import
    # (encodings.idna, stringprep, unicodedata) costs ~3 ms.
    address = host.encode("ascii") if host.isascii() else host
    # typeshed says str; create_connection hands the host to getaddrinfo, which takes bytes.
    sock = socket.create_connection((address, port), timeout=timeout_s)  # type: ignore[arg-type]
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ssl_context is not None:
            sock = ssl_context.wrap_socket(sock, server_hostname=host)
    except BaseException:
        sock.close()
        raise
    return sock


def parse_head(head: bytes) -> tuple[int, str, dict[str, str]]:
    """Status code, HTTP version and headers (names in lower case) of a response head."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or parts[0] not in ("HTTP/1.1", "HTTP/1.0"):
        raise ResponseError("the server did not answer in HTTP/1.1")
    if len(parts[1]) != 3 or not parts[1].isdigit():
        raise ResponseError("the server's answer has no valid status code")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise ResponseError("the server's answer has a malformed header")
        key = name.lower()
        value = value.strip()
        if key in headers and key == "content-length" and headers[key] != value:
            raise ResponseError("the server's answer has two different lengths")
        if key in headers and key != "content-length":
            value = f"{headers[key]}, {value}"
        headers[key] = value
    return int(parts[1]), parts[0], headers


def _content_length(value: str) -> int:
    if not value.isdigit() or len(value) > 19:
        raise ResponseError("the server's answer has an invalid Content-Length")
    return int(value)


def _chunk_size(line: bytes) -> int:
    size = line.split(b";", 1)[0].strip()
    if not size or len(size) > 16 or any(c not in b"0123456789abcdefABCDEF" for c in size):
        raise ResponseError("the server's chunked answer is malformed")
    return int(size, 16)
