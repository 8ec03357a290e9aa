"""The agent's HTTP client for jobs' files: input tars down, output tars up.

Both directions stream between the coordinator and a file in the agent's state directory,
never through memory or the WebSocket. A download is checked against the SHA-256 and size
the job message named before the job may use it; an upload carries its hash, the agent's
token and the job's lease id. Every failure, a refusal or a coordinator too slow (each
transfer has a deadline), becomes a :class:`FilesError` with one sentence for the job's log.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from compound.agent.settings import AgentSettings
from compound.protocol import InputsRef
from compound.tls import TlsConfigError, certificate_problem, ssl_context_for

_CHUNK_BYTES = 1024 * 1024
CONNECT_TIMEOUT_S = 10.0
# A transfer that moves no byte for this long is abandoned...
STALL_TIMEOUT_S = 60.0
# ...and so is one slower than this on average, whatever it moves: a coordinator that
# trickles bytes must not hold a finished job's ending back for ever.
MIN_RATE_BYTES_S = 128 * 1024
LEASE_HEADER = "X-Compound-Lease"
SHA256_HEADER = "X-Compound-SHA256"


class FilesError(Exception):
    """A sentence saying why a job's files could not be moved."""


def http_base_url(coordinator_url: str) -> str:
    """The coordinator's http(s) base URL, whichever scheme the agent was given."""
    url = coordinator_url.rstrip("/")
    for ws, http in (("wss://", "https://"), ("ws://", "http://")):
        if url.startswith(ws):
            return http + url[len(ws) :]
    return url if url.startswith(("http://", "https://")) else "http://" + url


class JobFiles:
    def __init__(self, settings: AgentSettings, stall_timeout_s: float = STALL_TIMEOUT_S) -> None:
        self._stall_timeout_s = stall_timeout_s
        self._base_url = http_base_url(settings.coordinator_urls[0])
        self._token = settings.token
        self._ca_file = settings.ca_file
        self._dir = settings.state_dir / "files"

    def use_coordinator(self, coordinator_url: str) -> None:
        """Move files through ``coordinator_url`` from now on (the one the agent is on)."""
        self._base_url = http_base_url(coordinator_url)

    def _headers(self, lease_id: str) -> dict[str, str]:
        headers = {LEASE_HEADER: lease_id}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    def _client(self) -> httpx.AsyncClient:
        try:
            context: ssl.SSLContext | None = ssl_context_for(self._base_url, self._ca_file)
        except TlsConfigError as exc:
            raise FilesError(str(exc)) from None
        timeout = httpx.Timeout(self._stall_timeout_s, connect=CONNECT_TIMEOUT_S)
        return httpx.AsyncClient(timeout=timeout, verify=context or False)

    def _deadline_s(self, size: int) -> float:
        # Room for one stall's worth of waiting at the start, then the minimum rate.
        return 2 * self._stall_timeout_s + size / MIN_RATE_BYTES_S

    def new_path(self, suffix: str) -> Path:
        """A fresh private file for one transfer (the caller deletes it)."""
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self._dir, suffix=suffix)
        os.close(fd)
        return Path(name)

    async def fetch_inputs(self, job_id: str, lease_id: str, inputs: InputsRef) -> Path:
        """The job's input tar in a new file, its hash and size as the job message named."""
        path = self.new_path(".inputs.tar")
        try:
            async with asyncio.timeout(self._deadline_s(inputs.size)):
                await self._download(job_id, lease_id, inputs, path)
        except TimeoutError:
            path.unlink(missing_ok=True)
            raise FilesError("could not fetch the job's input files: too slow") from None
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path

    async def _download(self, job_id: str, lease_id: str, inputs: InputsRef, path: Path) -> None:
        url = f"{self._base_url}/api/v1/jobs/{job_id}/inputs"
        digest = hashlib.sha256()
        size = 0
        async with self._client() as client:
            try:
                async with client.stream("GET", url, headers=self._headers(lease_id)) as response:
                    await _check(response, "fetch the job's input files")
                    with path.open("wb") as out:
                        async for chunk in response.aiter_bytes(_CHUNK_BYTES):
                            size += len(chunk)
                            if size > inputs.size:
                                raise FilesError("the input files are larger than announced")
                            digest.update(chunk)
                            out.write(chunk)
            except httpx.HTTPError as exc:
                raise FilesError(_transport_problem(exc, "fetch the job's input files")) from None
        if size != inputs.size or digest.hexdigest() != inputs.sha256:
            raise FilesError("the input files arrived damaged (their SHA-256 does not match)")

    async def return_outputs(self, job_id: str, lease_id: str, tar: Path) -> int:
        """Upload the job's output tar; the number of files the coordinator stored."""
        digest = hashlib.sha256()
        with tar.open("rb") as source:
            while chunk := source.read(_CHUNK_BYTES):
                digest.update(chunk)
        headers = {
            **self._headers(lease_id),
            SHA256_HEADER: digest.hexdigest(),
            "Content-Type": "application/x-tar",
            "Content-Length": str(tar.stat().st_size),
        }
        url = f"{self._base_url}/api/v1/jobs/{job_id}/artifacts"
        async with self._client() as client:
            try:
                async with asyncio.timeout(self._deadline_s(tar.stat().st_size)):
                    response = await client.put(url, content=_read(tar), headers=headers)
            except TimeoutError:
                raise FilesError("could not return the output files: too slow") from None
            except httpx.HTTPError as exc:
                raise FilesError(_transport_problem(exc, "return the output files")) from None
            await _check(response, "return the output files")
        try:
            return len(response.json()["artifacts"])
        except (ValueError, KeyError, TypeError):
            raise FilesError("the coordinator's answer to the output files is not JSON") from None


async def _read(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as source:
        while chunk := source.read(_CHUNK_BYTES):
            yield chunk


async def _check(response: httpx.Response, what: str) -> None:
    if response.status_code < 300:
        return
    await response.aread()
    try:
        detail = str(response.json().get("detail") or "")[:300]
    except (ValueError, AttributeError):
        detail = ""
    raise FilesError(
        f"the coordinator refused to {what} (HTTP {response.status_code}"
        + (f": {detail})" if detail else ")")
    )


def _transport_problem(exc: httpx.HTTPError, what: str) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"could not {what}: the coordinator stopped answering"
    problem = certificate_problem(exc)
    return f"could not {what}: {problem or exc or type(exc).__name__}"
