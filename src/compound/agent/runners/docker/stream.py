"""A container's stdin, stdout and stderr, through the engine's attach endpoint.

Without a TTY the engine multiplexes both streams on one connection as frames: an 8-byte
header (stream type, 3 zero bytes, big-endian length) and the payload. aiodocker's own
parser moves its whole buffer for every frame, which turns 100,000 short lines into
gigabytes of copying, so we read large chunks and cut frames at offsets instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from compound.agent.runners.base import OutputSink
from compound.agent.runners.docker.engine import NOT_RUNNING, EngineError
from compound.protocol import Stream

_HEADER = struct.Struct(">BxxxL")
_STDERR = 2
READ_CHUNK_BYTES = 1024 * 1024
_MAX_ERROR_BODY_BYTES = 64 * 1024


class FrameDemuxer:
    """Pure parser: bytes in, ``(stream, payload)`` pieces out, in order.

    Consecutive frames of the same stream come out joined, so a burst of short lines costs
    one sink call per chunk read rather than one per line; bytes are never altered.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    @property
    def pending_bytes(self) -> int:
        """Bytes of an incomplete frame waiting for the rest of it."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[tuple[Stream, bytes]]:
        self._buffer += data
        runs: list[tuple[Stream, list[tuple[int, int]]]] = []
        offset = 0
        size = len(self._buffer)
        while size - offset >= _HEADER.size:
            kind, length = _HEADER.unpack_from(self._buffer, offset)
            end = offset + _HEADER.size + length
            if end > size:
                break
            stream = Stream.STDERR if kind == _STDERR else Stream.STDOUT
            if not runs or runs[-1][0] is not stream:
                runs.append((stream, []))
            runs[-1][1].append((offset + _HEADER.size, end))
            offset = end
        with memoryview(self._buffer) as view:
            # The slices die with each join, so the buffer can be resized below.
            pieces = [(stream, b"".join([view[a:b] for a, b in spans])) for stream, spans in runs]
        # One move of the unparsed tail per chunk, not one per frame.
        del self._buffer[:offset]
        return [(stream, data) for stream, data in pieces if data]


def _socket_target(docker_url: str) -> tuple[str, str, int]:
    """``("unix", path, 0)`` or ``("tcp", host, port)`` for an engine address."""
    parts = urlsplit(docker_url)
    if parts.scheme == "unix":
        return "unix", parts.path, 0
    if parts.scheme in ("tcp", "http"):
        return "tcp", parts.hostname or "localhost", parts.port or 2375
    raise EngineError(f"unsupported Docker address for streaming output: {docker_url}")


async def _open(docker_url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    kind, where, port = _socket_target(docker_url)
    try:
        if kind == "unix":
            return await asyncio.open_unix_connection(where, limit=2 * READ_CHUNK_BYTES)
        return await asyncio.open_connection(where, port, limit=2 * READ_CHUNK_BYTES)
    except OSError as exc:
        raise EngineError(NOT_RUNNING) from exc


def _error_from_response(head: bytes, body: bytes) -> EngineError:
    status = head.split(b"\r\n", 1)[0].decode(errors="replace")
    try:
        message = str(json.loads(body)["message"])
    except (ValueError, KeyError, TypeError):
        message = body.decode(errors="replace").strip() or status
    return EngineError(f"Docker engine error: {message.rstrip('.')}")


class Attachment:
    """A live attach connection to one container: ``pump`` it until the container ends."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, docker_url: str, api_version: str, container_id: str) -> Attachment:
        """Attach to all three streams; do it before starting the container to miss nothing."""
        reader, writer = await _open(docker_url)
        request = (
            f"POST /{api_version}/containers/{container_id}/attach"
            "?stream=1&stdin=1&stdout=1&stderr=1 HTTP/1.1\r\n"
            "Host: docker\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        attachment = cls(reader, writer)
        try:
            writer.write(request.encode())
            await writer.drain()
            await attachment._expect_upgrade()
        except BaseException:
            await attachment.close()
            raise
        return attachment

    async def _expect_upgrade(self) -> None:
        try:
            head = await self._reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise EngineError("Docker engine error: bad answer to attach") from exc
        if head.startswith((b"HTTP/1.1 101", b"HTTP/1.0 101")):
            return
        raise _error_from_response(head, await self._read_body(head))

    async def _read_body(self, head: bytes) -> bytes:
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length" and value.strip().isdigit():
                length = min(int(value), _MAX_ERROR_BODY_BYTES)
                return await self._reader.readexactly(length)
        # No length: the engine closes the connection after the body.
        return await self._reader.read(_MAX_ERROR_BODY_BYTES)

    async def write_stdin(self, data: bytes) -> None:
        """Write ``data`` to the container's stdin and keep it open for more.

        A container that already ended no longer reads; that shows in its output and exit.
        """
        with contextlib.suppress(ConnectionError):
            self._writer.write(data)
            await self._writer.drain()

    async def send_stdin(self, data: bytes) -> None:
        """Write ``data`` to the container's stdin, then close it (the engine sees EOF).

        A container that already ended no longer reads: the engine drops the connection's
        write side, which is not an error here; its output and exit code tell what happened.
        """
        with contextlib.suppress(ConnectionError):
            self._writer.write(data)
            await self._writer.drain()
            # Half-close only: the output keeps coming on the read side.
            self._writer.write_eof()

    async def until_readable(self) -> None:
        """Return once the container wrote something or its stream ended (one byte is lost).

        For a started container waiting for its job, which writes nothing until then: a
        return means it died or is broken. Cancelling it loses nothing.
        """
        await self._reader.read(1)

    async def read_stdout(self, size: int) -> bytes | None:
        """The next ``size`` bytes of stdout, unframed; None when something else comes
        first (stderr, more than ``size``) or the stream ends."""
        data = b""
        try:
            while len(data) < size:
                kind, length = _HEADER.unpack(await self._reader.readexactly(_HEADER.size))
                if kind == _STDERR or len(data) + length > size:
                    return None
                data += await self._reader.readexactly(length)
        except asyncio.IncompleteReadError:
            return None
        return data

    async def send_stdin_file(self, head: bytes, path: Path | None, *, close: bool = True) -> None:
        """Like ``send_stdin``, with the file at ``path`` streamed after ``head``; ``close``
        False keeps stdin open (for a next job, see reuse)."""
        with contextlib.suppress(ConnectionError):
            self._writer.write(head)
            await self._writer.drain()
            if path is not None:
                with path.open("rb") as source:
                    while chunk := source.read(READ_CHUNK_BYTES):
                        self._writer.write(chunk)
                        await self._writer.drain()
            if close:
                self._writer.write_eof()

    async def pump(self, on_output: OutputSink, until: Callable[[], bool] | None = None) -> None:
        """Pass every byte to ``on_output`` until the engine closes the stream, or until
        ``until()`` says (checked after each chunk is passed on) nothing more can come."""
        demuxer = FrameDemuxer()
        while chunk := await self._reader.read(READ_CHUNK_BYTES):
            for stream, data in demuxer.feed(chunk):
                await on_output(stream, data)
            if until is not None and until():
                return

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()
