"""The agent's control socket: ``STATE_DIR/control.sock``, a Unix socket only its user can
open (0600 in a 0700 directory), never the network.

One request line, one answer line, then the connection closes. The peer is not trusted:
a request is bounded (``MAX_REQUEST_BYTES``) and must arrive within ``READ_TIMEOUT_S``, at
most ``MAX_CLIENTS`` are served at once (more are closed), and nothing it sends can raise
out of here. The socket of a killed agent is replaced; a live agent's is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

from compound.agent.control import MAX_REQUEST_BYTES, Request, parse_request, refusal_line

log = logging.getLogger("compound.agent")

READ_TIMEOUT_S = 5.0
WRITE_TIMEOUT_S = 5.0
MAX_CLIENTS = 8
# sockaddr_un holds 108 bytes; longer paths are reached through their directory's fd.
_MAX_SUN_PATH = 100

Handler = Callable[[Request], Awaitable[bytes]]


class ControlSocketError(Exception):
    """The control socket cannot be opened; ``str()`` says why, in one sentence."""


@contextlib.contextmanager
def socket_address(path: Path) -> Iterator[str]:
    """An address for ``path`` that fits a Unix socket address, valid inside the block."""
    if len(os.fsencode(path)) <= _MAX_SUN_PATH:
        yield str(path)
        return
    directory = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{directory}/{path.name}"
    finally:
        os.close(directory)


class ControlServer:
    def __init__(self, path: Path, handle: Handler) -> None:
        self.path = path
        self._handle = handle
        self._server: asyncio.Server | None = None
        self._clients = 0
        self._inode: int | None = None

    async def start(self) -> None:
        """Listen; ControlSocketError when another agent already does with this state dir."""
        directory = self.path.parent
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory.chmod(0o700)
        await self._replace_stale()
        with socket_address(self.path) as address:
            self._server = await asyncio.start_unix_server(
                self._serve, path=address, limit=MAX_REQUEST_BYTES + 1
            )
        self.path.chmod(0o600)
        self._inode = self.path.stat().st_ino

    async def _replace_stale(self) -> None:
        try:
            mode = self.path.lstat().st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise ControlSocketError(f"{self.path} is in the way and is not a socket")
        try:
            with socket_address(self.path) as address:
                _, writer = await asyncio.wait_for(asyncio.open_unix_connection(address), 2.0)
        except (OSError, TimeoutError):
            self.path.unlink(missing_ok=True)  # its agent was killed: nobody listens
            return
        writer.close()
        raise ControlSocketError(
            f"another agent is running with the state directory {self.path.parent}"
        )

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        with contextlib.suppress(OSError):
            # Only ours: a newer agent's socket at the same path is left alone.
            if self.path.stat().st_ino == self._inode:
                self.path.unlink()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._clients >= MAX_CLIENTS:
            writer.close()
            return
        self._clients += 1
        try:
            answer = await self._answer(reader)
            writer.write(answer)
            await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT_S)
        except (OSError, TimeoutError):
            pass  # the peer went or stalled: nothing to tell it
        except Exception:
            log.exception("control request failed")
        finally:
            self._clients -= 1
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader) -> bytes:
        try:
            line = await asyncio.wait_for(reader.readuntil(b"\n"), READ_TIMEOUT_S)
        except asyncio.LimitOverrunError:
            return refusal_line("the request is too long")
        except asyncio.IncompleteReadError:
            return refusal_line("the request ended before its newline")
        except TimeoutError:
            return refusal_line("the request took too long to arrive")
        request = parse_request(line)
        if isinstance(request, str):
            return refusal_line(request)
        return await self._handle(request)
