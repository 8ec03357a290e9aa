"""The coordinator's API as the CLI uses it: one place that knows URLs and shapes."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import websockets
from websockets.asyncio.client import connect

from compound.protocol import (
    MAX_MESSAGE_BYTES,
    FollowEnd,
    FollowRecords,
    FollowStatus,
    JobView,
    parse_follow_message,
)
from compound.tls import (
    TlsConfigError,
    certificate_problem,
    ssl_context_for,
    websocket_ssl_options,
)

DEFAULT_COORDINATOR = "http://127.0.0.1:8000"


def default_coordinator() -> str:
    return os.environ.get("COMPOUND_COORDINATOR") or DEFAULT_COORDINATOR


def default_token() -> str | None:
    return os.environ.get("COMPOUND_TOKEN") or None


NEEDS_TOKEN = "the coordinator needs a valid token: set COMPOUND_TOKEN or pass --token"


class ClientError(Exception):
    """A sentence for the user: the coordinator refused the request or cannot be reached."""


class UnknownJobError(ClientError):
    pass


class CoordinatorClient:
    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout_s: float = 30.0,
        ca_file: str | None = None,
    ) -> None:
        """Raises ClientError when ``ca_file`` is needed (an https URL) and cannot be used."""
        self.base_url = base_url.rstrip("/")
        self.token = token
        # One context verifies the HTTP requests and the follow socket alike.
        try:
            self.ssl_context = ssl_context_for(self.base_url, ca_file)
        except TlsConfigError as exc:
            raise ClientError(str(exc)) from None
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout_s,
            verify=self.ssl_context or False,
            headers=self.auth_headers(),
        )

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            problem = certificate_problem(exc)
            if problem is not None:
                raise ClientError(problem) from None
            raise ClientError(f"cannot reach the coordinator at {self.base_url} ({exc})") from None
        if response.status_code == 404:
            raise UnknownJobError(_detail(response))
        if response.status_code == 401:
            raise ClientError(NEEDS_TOKEN)
        if response.status_code >= 400:
            raise ClientError(f"the coordinator refused: {_detail(response)}")
        return response.json()

    def submit(
        self,
        script: str,
        args: list[str],
        env: dict[str, str],
        timeout_s: float | None,
        name: str | None,
    ) -> JobView:
        body = {"script": script, "args": args, "env": env, "timeout_s": timeout_s, "name": name}
        return JobView.model_validate(
            self._request("POST", "/api/v1/jobs", json=body), strict=False
        )

    def job(self, job_id: str) -> JobView:
        return JobView.model_validate(
            self._request("GET", f"/api/v1/jobs/{quote(job_id)}"), strict=False
        )

    def jobs(self, limit: int) -> list[JobView]:
        data = self._request("GET", "/api/v1/jobs", params={"limit": limit})
        return [JobView.model_validate(item, strict=False) for item in data["jobs"]]

    def logs(self, job_id: str, after: int) -> dict[str, Any]:
        result: dict[str, Any] = self._request(
            "GET", f"/api/v1/jobs/{quote(job_id)}/logs", params={"after": after}
        )
        return result

    def cancel(self, job_id: str) -> JobView:
        return JobView.model_validate(
            self._request("POST", f"/api/v1/jobs/{quote(job_id)}/cancel"), strict=False
        )

    def contributors(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._request("GET", "/api/v1/contributors")["contributors"]
        return result

    def follow_url(self, job_id: str, after: int) -> str:
        ws_base = (
            "ws" + self.base_url[len("http") :]
            if self.base_url.startswith("http")
            else (self.base_url)
        )
        return f"{ws_base}/api/v1/jobs/{quote(job_id)}/follow?after={after}"


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    return str(detail or f"HTTP {response.status_code}")


async def follow_once(
    client: CoordinatorClient, job_id: str, after: int
) -> AsyncIterator[FollowRecords | FollowStatus | FollowEnd]:
    """One follow connection; ends after ``end`` or raises when the connection drops."""
    async with connect(
        client.follow_url(job_id, after),
        max_size=MAX_MESSAGE_BYTES,
        open_timeout=10,
        additional_headers=client.auth_headers(),
        **websocket_ssl_options(client.ssl_context),
    ) as websocket:
        async for raw in websocket:
            message = parse_follow_message(raw)
            yield message
            if isinstance(message, FollowEnd):
                return
    raise websockets.ConnectionClosedError(None, None)
