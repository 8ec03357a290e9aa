"""The agent's files client against coordinators that misbehave: silent, trickling, refusing.

"Fake the server, not the client": each coordinator here is a real socket on loopback
answering raw HTTP, and the client is the agent's own (compound.agent.job_files).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from compound.agent.job_files import FilesError, JobFiles
from compound.agent.settings import AgentSettings
from compound.protocol import InputsRef

pytestmark = pytest.mark.timeout(30)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
INPUTS = InputsRef(sha256="0" * 64, size=100)


@asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[str]:
    """A coordinator on a free loopback port answering with ``handler``; its URL."""

    async def quietly(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The client hangs up or the test ends: either way the handler's work is over.
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await handler(reader, writer)

    server = await asyncio.start_server(quietly, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()


async def _read_request(reader: asyncio.StreamReader) -> None:
    await reader.readuntil(b"\r\n\r\n")


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    await asyncio.sleep(3600)


async def trickling(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
    for _ in range(100):
        writer.write(b"x")
        await writer.drain()
        await asyncio.sleep(0.1)


async def refusing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    body = b'{"detail": "the coordinator is shutting down"}'
    writer.write(
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    writer.close()


def _files(url: str, state_dir: Path) -> JobFiles:
    return JobFiles(AgentSettings(url, state_dir=state_dir), stall_timeout_s=0.5)


@pytest.mark.parametrize(
    ("handler", "sentence"),
    [
        (silent, "stopped answering"),
        (trickling, "too slow"),
        (refusing, "refused to fetch the job's input files (HTTP 503: the coordinator is"),
    ],
    ids=["silent", "trickling", "refusing"],
)
async def test_a_misbehaving_coordinator_fails_the_fetch_with_a_sentence_in_time(
    tmp_path: Path, handler: Handler, sentence: str
) -> None:
    """Silent past the stall timeout, slower than the minimum rate, or refusing: FilesError
    with one sentence within seconds, and no partial file left on the agent's disk."""
    async with serving(handler) as url:
        files = _files(url, tmp_path)
        started = time.monotonic()
        with pytest.raises(FilesError) as caught:
            await files.fetch_inputs("job1", "lease1", INPUTS)
    assert sentence in str(caught.value)
    assert time.monotonic() - started < 10
    assert list((tmp_path / "files").iterdir()) == []


async def test_a_silent_coordinator_fails_the_upload_in_time(tmp_path: Path) -> None:
    """Returning outputs to a coordinator that never answers ends with a sentence."""
    tar = tmp_path / "outputs.tar"
    tar.write_bytes(b"\0" * 10_240)
    async with serving(silent) as url:
        with pytest.raises(FilesError) as caught:
            await _files(url, tmp_path).return_outputs("job1", "lease1", tar)
    assert "could not return the output files" in str(caught.value)
