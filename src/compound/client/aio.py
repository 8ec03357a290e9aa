"""The asyncio client: ``AsyncClient`` and ``AsyncJob``, ``Client``'s methods as coroutines.

Each call runs the blocking client in a worker thread (each thread has its own
connection), so coroutines may call it concurrently and the event loop never blocks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from compound.client.errors import ClientError
from compound.client.jobs import Client, Job, Record, Result

_END = object()


class AsyncJob:
    """A submitted job, as ``Job`` with coroutines."""

    def __init__(self, job: Job) -> None:
        self._job = job
        self.id = job.id

    def __repr__(self) -> str:
        return f"AsyncJob({self.id!r})"

    async def info(self) -> dict[str, Any]:
        return await asyncio.to_thread(self._job.info)

    async def stream(self, after: int = -1) -> AsyncIterator[Record]:
        """As ``Job.stream``: records, live, until the job is over."""
        records = self._job.stream(after)
        try:
            while (record := await asyncio.to_thread(next, records, _END)) is not _END:
                yield record  # type: ignore[misc]
        finally:
            records.close()

    async def wait(self) -> Result:
        return await asyncio.to_thread(self._job.wait)

    async def cancel(self) -> dict[str, Any]:
        return await asyncio.to_thread(self._job.cancel)

    async def artifacts(self) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._job.artifacts)

    async def download_artifacts(self, directory: str | Path = ".") -> list[Path]:
        return await asyncio.to_thread(self._job.download_artifacts, directory)


class AsyncClient:
    """One coordinator, as ``Client`` (same arguments and defaults), with coroutines."""

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        ca_file: str | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self._client = Client(url, token=token, ca_file=ca_file, timeout_s=timeout_s)
        self.url = self._client.url

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def submit(self, script: str | Path | None = None, **options: Any) -> AsyncJob:
        """As ``Client.submit``."""
        job = await asyncio.to_thread(self._client.submit, script, **options)
        return AsyncJob(job)

    def job(self, job_id: str) -> AsyncJob:
        return AsyncJob(self._client.job(job_id))

    async def jobs(self, limit: int = 50) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._client.jobs, limit)

    async def map(
        self,
        script: str | Path | None,
        arg_lists: Sequence[Sequence[str]],
        *,
        concurrency: int = 4,
        **options: Any,
    ) -> list[Result | ClientError]:
        """As ``Client.map``: results in order, failures per item."""
        return await asyncio.to_thread(
            self._client.map, script, arg_lists, concurrency=concurrency, **options
        )
