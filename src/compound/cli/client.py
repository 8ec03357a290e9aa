"""The coordinator's API as the CLI uses it: one place that knows URLs and shapes.

Start-up time matters here (``compound submit`` is typed often), so JSON requests go over
``http_wire.py``'s small connection (no ``http.client``, ``email`` or ``ssl`` imports);
``http.client`` only for file transfers, ``ssl`` and ``compound.tls`` only for an https
coordinator or a failed request; following a job is ``follow.py``'s. Responses come back as
the coordinator's JSON objects; the commands that need ``JobView`` models build them.
"""

from __future__ import annotations

import json
import os
import socket
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import quote, urlencode, urlsplit

from compound.cli.http_wire import HttpConnection, ResponseError, StaleConnection
from compound.coordinators import CoordinatorList, CoordinatorListError

if TYPE_CHECKING:
    import http.client
    import ssl

DEFAULT_COORDINATOR = "http://127.0.0.1:8000"


def default_coordinator() -> str:
    return os.environ.get("COMPOUND_COORDINATOR") or DEFAULT_COORDINATOR


def default_token() -> str | None:
    return os.environ.get("COMPOUND_TOKEN") or None


NEEDS_TOKEN = "the coordinator needs a valid token: set COMPOUND_TOKEN or pass --token"

# A connection kept alive that the server closed meanwhile fails like this on reuse.
_STALE_CONNECTION = (StaleConnection, BrokenPipeError, ConnectionResetError)
# Errors that leave the request unsent: it may go to another coordinator, even a POST.
_NOT_SENT = (ConnectionRefusedError, socket.gaierror)
# A proxy's answers when the coordinator behind it is gone: a GET tries the next one.
_PROXY_WITHOUT_SERVER = (502, 503, 504)


class ClientError(Exception):
    """A sentence for the user: the coordinator refused the request or cannot be reached."""


class UnknownJobError(ClientError):
    """The coordinator has no such job (or no such file of it): 404."""


class AuthError(ClientError):
    """The coordinator needs a valid token (401) or refuses this one the request (403)."""


class TlsError(ClientError):
    """The coordinator's certificate cannot be verified, or the CA file cannot be used."""


class UnreachableError(ClientError):
    """The coordinator cannot be reached (refused, reset, timed out) or answers badly."""


class RefusedError(ClientError):
    """The coordinator refused the request (bad input, too big, over a quota: 4xx, 5xx)."""


# Contributors asked for per request (the coordinator's most).
CONTRIBUTORS_PAGE = 1000


class CoordinatorClient:
    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout_s: float = 30.0,
        ca_file: str | None = None,
    ) -> None:
        """Raises ClientError when a URL is not http(s) or ``ca_file`` is needed (an https
        URL) and cannot be used. ``ca_file`` None means ``$COMPOUND_CA_FILE``.

        ``base_url`` may name several coordinators sharing one database (``A,B,...``): a
        request that cannot reach one goes to the next (``compound.coordinators``)."""
        try:
            self.coordinators = CoordinatorList.parse(base_url)
        except CoordinatorListError as exc:
            raise ClientError(str(exc)) from None
        self.token = token
        self._timeout_s = timeout_s
        self._ca_file = ca_file
        # One context verifies the HTTP requests and the follow socket alike; an http URL
        # needs none, and building one costs more than the rest of `submit`'s start-up.
        self.ssl_context: ssl.SSLContext | None = None
        for url in self.coordinators.urls:
            self._check_url(url)
        self._use(self.coordinators.current)

    def _check_url(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ClientError(f"cannot reach the coordinator at {url} (not an http or https URL)")
        if parts.scheme == "https" and self.ssl_context is None:
            from compound.tls import TlsConfigError, default_ca_file, ssl_context_for

            try:
                self.ssl_context = ssl_context_for(url, self._ca_file or default_ca_file())
            except TlsConfigError as exc:
                raise TlsError(str(exc)) from None

    def _use(self, url: str) -> None:
        """Send requests to ``url`` (one of the list) from now on."""
        self.base_url = url
        parts = urlsplit(url)
        self._parts = parts
        self._connection = HttpConnection(
            parts.hostname or "",
            parts.port or (443 if parts.scheme == "https" else 80),
            self._timeout_s,
            self.ssl_context if parts.scheme == "https" else None,
        )

    @property
    def ssl_context_in_use(self) -> ssl.SSLContext | None:
        """The context for the coordinator in use: None for an http one."""
        return self.ssl_context if self._parts.scheme == "https" else None

    def fail_over(self) -> float:
        """The coordinator in use was lost: move to the next of the list; the seconds to
        wait before trying it (none to speak of while the list has untried ones)."""
        self._connection.close()
        delay_s = self.coordinators.failed()
        self._use(self.coordinators.current)
        return delay_s

    def reached(self) -> None:
        """The coordinator in use answered: stay on it."""
        self.coordinators.succeeded()

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def close(self) -> None:
        self._connection.close()

    def _connect(self) -> http.client.HTTPConnection:
        """An ``http.client`` connection, for the transfers that stream a file."""
        import http.client

        host, port = self._parts.hostname or "", self._parts.port
        if self.ssl_context_in_use is not None:
            return http.client.HTTPSConnection(
                host, port, timeout=self._timeout_s, context=self.ssl_context_in_use
            )
        return http.client.HTTPConnection(host, port, timeout=self._timeout_s)

    def _exchange(
        self, method: str, target: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        reused = self._connection.is_open
        try:
            return self._connection.exchange(method, target, body, headers)
        except _STALE_CONNECTION:
            if not reused:
                raise
            # Once, on a fresh connection (exchange closed the stale one).
            return self._connection.exchange(method, target, body, headers)

    def _target(self, path: str) -> str:
        return self._parts.path + path

    def _transfer(
        self, method: str, path: str, body: Any, headers: dict[str, str], sink: BinaryIO | None
    ) -> tuple[int, bytes]:
        """One request on a fresh connection with a streamed body (a file-like object) and,
        for a 2xx answer, the response copied to ``sink``; the status and the error body."""
        import http.client

        connection = self._connect()
        connection.timeout = max(self._timeout_s, 120.0)
        try:
            connection.request(
                method, self._target(path), body=body, headers={**self.auth_headers(), **headers}
            )
            response = connection.getresponse()
            if response.status >= 300 or sink is None:
                return response.status, response.read(64 * 1024)
            while chunk := response.read(1024 * 1024):
                sink.write(chunk)
            return response.status, b""
        except (OSError, http.client.HTTPException) as exc:
            from compound.tls import certificate_problem

            problem = certificate_problem(exc)
            if problem is not None:
                raise TlsError(problem) from None
            raise UnreachableError(
                f"cannot reach the coordinator at {self.base_url} ({exc})"
            ) from None
        finally:
            connection.close()

    def _raise_for(self, status: int, data: bytes) -> None:
        if status == 404:
            raise UnknownJobError(_detail(status, data))
        if status == 401:
            raise AuthError(NEEDS_TOKEN)
        if status == 403:
            raise AuthError(f"the coordinator refused: {_detail(status, data)}")
        if status >= 400:
            raise RefusedError(f"the coordinator refused: {_detail(status, data)}")

    def upload_inputs(self, source: BinaryIO, size: int, sha256: str) -> dict[str, Any]:
        """Store an input tar (read from ``source``, ``size`` bytes); its {sha256, size}."""
        headers = {
            "Content-Type": "application/x-tar",
            "Content-Length": str(size),
            "X-Compound-SHA256": sha256,
            "Accept": "application/json",
        }
        status, data = self._transfer("PUT", "/api/v1/inputs", source, headers, None)
        self._raise_for(status, data)
        result: dict[str, Any] = json.loads(data)
        return result

    def max_input_bytes(self) -> int | None:
        """The coordinator's cap on one job's input files, if it says (older ones do not)."""
        value = self._request("GET", "/healthz").get("max_input_bytes")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def artifacts(self, job_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._request(
            "GET", f"/api/v1/jobs/{quote(job_id)}/artifacts"
        )["artifacts"]
        return result

    def download_artifact(self, job_id: str, path: str, sink: BinaryIO) -> None:
        target = f"/api/v1/jobs/{quote(job_id)}/artifacts/{quote(path)}"
        status, data = self._transfer("GET", target, None, {}, sink)
        self._raise_for(status, data)

    def _request(
        self, method: str, path: str, params: dict[str, Any] | None = None, json_body: Any = None
    ) -> Any:
        target = path + (f"?{urlencode(params)}" if params else "")
        headers = {"Accept": "application/json", **self.auth_headers()}
        body = None
        if json_body is not None:
            # ASCII escapes: a lone surrogate from argv reaches the coordinator, which refuses it
            # with a sentence, instead of failing to encode here.
            body = json.dumps(json_body).encode("ascii")
            headers["Content-Type"] = "application/json"
        status, data = self._exchange_failing_over(method, target, body, headers)
        self._raise_for(status, data)
        try:
            return json.loads(data)
        except ValueError:
            raise ClientError(f"the coordinator sent a reply that is not JSON ({status})") from None

    def _exchange_failing_over(
        self, method: str, target: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        """One request, to the next coordinator of the list while the one in use cannot be
        reached: any request that was not sent, and a GET whatever became of it (a POST
        that may have arrived is not sent twice). Raises UnreachableError or TlsError (both
        ClientErrors) with a sentence."""
        tries = len(self.coordinators.urls)
        while True:
            tries -= 1
            try:
                status, data = self._exchange(method, self._parts.path + target, body, headers)
            except ResponseError as exc:
                if tries and method == "GET":
                    self.fail_over()
                    continue
                raise UnreachableError(
                    f"the coordinator at {self.base_url} answered badly ({exc})"
                ) from None
            except OSError as exc:
                from compound.tls import certificate_problem

                problem = certificate_problem(exc)
                if problem is not None:
                    raise TlsError(problem) from None
                if tries and (method == "GET" or isinstance(exc, _NOT_SENT)):
                    self.fail_over()
                    continue
                raise UnreachableError(
                    f"cannot reach the coordinator at {self.base_url} ({exc})"
                ) from None
            if tries and method == "GET" and status in _PROXY_WITHOUT_SERVER:
                self.fail_over()
                continue
            self.reached()
            return status, data

    def submit(
        self,
        script: str,
        args: list[str],
        env: dict[str, str],
        timeout_s: float | None,
        name: str | None,
        requirements: list[str] | None = None,
        inputs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The new job, as a JobView object."""
        body: dict[str, Any] = {
            "script": script,
            "args": args,
            "env": env,
            "timeout_s": timeout_s,
            "name": name,
        }
        if requirements:
            body["requirements"] = requirements
        if inputs is not None:
            body["inputs"] = inputs
        result: dict[str, Any] = self._request("POST", "/api/v1/jobs", json_body=body)
        return result

    def job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/api/v1/jobs/{quote(job_id)}")
        return result

    def jobs(self, limit: int) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._request(
            "GET", "/api/v1/jobs", params={"limit": limit}
        )["jobs"]
        return result

    def logs(self, job_id: str, after: int) -> dict[str, Any]:
        result: dict[str, Any] = self._request(
            "GET", f"/api/v1/jobs/{quote(job_id)}/logs", params={"after": after}
        )
        return result

    def cancel(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("POST", f"/api/v1/jobs/{quote(job_id)}/cancel")
        return result

    def contributors(self) -> list[dict[str, Any]]:
        """Every contributor, page after page (the coordinator answers a page at a time)."""
        result: list[dict[str, Any]] = []
        after: int | None = 0
        while after is not None:
            page = self._request(
                "GET", "/api/v1/contributors", params={"after": after, "limit": CONTRIBUTORS_PAGE}
            )
            result.extend(page["contributors"])
            # An older coordinator answers everything at once, with no "next"; a position
            # that does not move on would never end.
            following = page.get("next")
            after = following if isinstance(following, int) and following > after else None
        return result

    def follow_address(self, job_id: str, after: int) -> tuple[str, int, str]:
        """Host, port and request target of the job's follow socket (same host as the API)."""
        default_port = 443 if self._parts.scheme == "https" else 80
        target = self._target(f"/api/v1/jobs/{quote(job_id)}/follow?after={after}")
        return self._parts.hostname or "", self._parts.port or default_port, target


def _detail(status: int, data: bytes) -> str:
    try:
        detail = json.loads(data).get("detail")
    except (ValueError, AttributeError):
        detail = None
    return str(detail or f"HTTP {status}")
