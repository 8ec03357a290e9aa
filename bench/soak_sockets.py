"""Raw loopback sockets for the soak: hand-made WebSocket handshakes and partial requests.

The soak's misbehaving clients must really misbehave (never read, never finish a request),
which a WebSocket library would not let them do; so they are plain non-blocking sockets
driven by the event loop's ``sock_*`` calls, which read nothing unless asked.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket

LOOPBACK = "127.0.0.1"
CONNECT_TIMEOUT_S = 5.0
# A partial request: headers never end, so the server waits for the rest.
PARTIAL_REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"


async def connect(port: int, receive_buffer_bytes: int | None = None) -> socket.socket:
    """A connected non-blocking TCP socket to loopback; closed again if connecting fails."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if receive_buffer_bytes is not None:
            # Before connect, so the advertised window is small from the first packet.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer_bytes)
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(loop.sock_connect(sock, (LOOPBACK, port)), CONNECT_TIMEOUT_S)
    except BaseException:
        sock.close()
        raise
    return sock


def websocket_request(path: str, port: int) -> bytes:
    """An RFC 6455 opening handshake for ``path``."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\n"
        f"Host: {LOOPBACK}:{port}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def close_frame(code: int = 1000) -> bytes:
    """A masked client close frame with ``code`` and no reason."""
    mask = os.urandom(4)
    payload = code.to_bytes(2, "big")
    masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return bytes([0x88, 0x80 | len(payload)]) + mask + masked


async def read_response_head(sock: socket.socket, timeout_s: float) -> bytes:
    """Bytes up to the end of the HTTP response head (or EOF); raises TimeoutError."""
    loop = asyncio.get_running_loop()
    received = b""
    async with asyncio.timeout(timeout_s):
        while b"\r\n\r\n" not in received:
            chunk = await loop.sock_recv(sock, 4096)
            if not chunk:
                break
            received += chunk
    return received


async def wait_closed_by_peer(sock: socket.socket) -> None:
    """Return when the peer closes (EOF or reset); whatever it sends is dropped."""
    loop = asyncio.get_running_loop()
    try:
        while await loop.sock_recv(sock, 4096):
            pass
    except OSError:
        pass
