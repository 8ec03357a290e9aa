"""The blocking client: ``Client`` submits and lists jobs, ``Job`` follows one to its end.

Each thread gets its own connection to the coordinator (``map`` runs items on a pool), so
one ``Client`` may be shared between threads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compound.cli.client import CoordinatorClient, default_coordinator, default_token
from compound.cli.files import download_artifacts, upload_inputs
from compound.client.errors import ClientError, UnreachableError

# Between two polls of a job's log while nothing new came, at most.
_MAX_POLL_S = 0.5
_FIRST_POLL_S = 0.05
# How long a follower keeps trying to get back to an unreachable coordinator.
_RECONNECT_S = 60.0


@dataclass(frozen=True)
class Record:
    """One piece of a job's output: ``stream`` is 'stdout', 'stderr' or 'system'
    (Compound's own notes); ``seq`` numbers it within the job."""

    seq: int
    stream: str
    text: str


@dataclass(frozen=True)
class Result:
    """How a job ended: ``status`` ('succeeded', 'failed', 'timed_out', 'cancelled'), its
    exit code (None when it never ran to an exit), its whole output by stream, and the
    coordinator's reason when it did not succeed."""

    job_id: str
    status: str
    exit_code: int | None
    stdout: str
    stderr: str
    error: str | None = None
    system: str = ""
    job: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"


class Job:
    """A submitted job: follow its output, wait for it, cancel it, fetch its files."""

    def __init__(self, client: Client, job_id: str) -> None:
        self.client = client
        self.id = job_id
        # The page that said the job is over (set by stream's end).
        self._last_page: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"Job({self.id!r})"

    def info(self) -> dict[str, Any]:
        """The job as the coordinator shows it now (GET /api/v1/jobs/{id})."""
        return self.client._api().job(self.id)

    def stream(self, after: int = -1) -> Generator[Record, None, None]:
        """Every record after sequence number ``after`` (-1: all), live, until the job is over; a
        coordinator that cannot be reached for a while (a restart) is retried for up to a
        minute, from the last record seen: no gap, no duplicate."""
        for page in self._pages(after):
            for record in page["records"]:
                yield Record(record["seq"], record.get("stream", "stdout"), record["data"])

    def _pages(self, after: int) -> Iterator[dict[str, Any]]:
        pause_s = _FIRST_POLL_S
        unreachable_since: float | None = None
        while True:
            try:
                page = self.client._api().logs(self.id, after)
            except UnreachableError:
                now = time.monotonic()
                unreachable_since = unreachable_since or now
                if now - unreachable_since > _RECONNECT_S:
                    raise
                time.sleep(_MAX_POLL_S)
                continue
            unreachable_since = None
            yield page
            after = page["last_seq"]
            if page["complete"]:
                self._last_page = page
                return
            if page["records"]:
                pause_s = _FIRST_POLL_S
            else:
                time.sleep(pause_s)
                pause_s = min(pause_s * 2, _MAX_POLL_S)

    def wait(self) -> Result:
        """Block until the job is over; its ``Result`` with its whole output."""
        texts: dict[str, list[str]] = {"stdout": [], "stderr": [], "system": []}
        for record in self.stream():
            texts.setdefault(record.stream, []).append(record.text)
        job: dict[str, Any] = self._last_page["job"]
        return Result(
            job_id=self.id,
            status=str(job["status"]),
            exit_code=job.get("exit_code"),
            stdout="".join(texts["stdout"]),
            stderr="".join(texts["stderr"]),
            error=job.get("error"),
            system="".join(texts["system"]),
            job=job,
        )

    def cancel(self) -> dict[str, Any]:
        """Ask the coordinator to stop the job; the job as it is then."""
        return self.client._api().cancel(self.id)

    def artifacts(self) -> list[dict[str, Any]]:
        """The job's output files: ``path``, ``size``, ``sha256`` each."""
        return self.client._api().artifacts(self.id)

    def download_artifacts(self, directory: str | Path = ".") -> list[Path]:
        """Download every output file into ``directory`` (made as needed), each checked
        against its hash; the paths written. One file that cannot be had does not stop the
        others: ClientError names the failed ones after all were tried."""
        target = Path(directory)
        api = self.client._api()
        listed = api.artifacts(self.id)
        download_artifacts(api, self.id, target)
        return [target / str(artifact["path"]) for artifact in listed]


class Client:
    """One coordinator. ``url``, ``token`` and ``ca_file`` default as the CLI's do:
    ``$COMPOUND_COORDINATOR`` (else http://127.0.0.1:8000), ``$COMPOUND_TOKEN``,
    ``$COMPOUND_CA_FILE``. Raises TlsError when an https URL's CA file cannot be used."""

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        ca_file: str | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.url = url or default_coordinator()
        self._settings = (self.url, token or default_token(), timeout_s, ca_file)
        self._local = threading.local()
        self._opened: list[CoordinatorClient] = []
        self._lock = threading.Lock()
        self._api()  # checks the URL and the TLS settings now

    def _api(self) -> CoordinatorClient:
        """This thread's connection to the coordinator."""
        api: CoordinatorClient | None = getattr(self._local, "api", None)
        if api is None:
            url, token, timeout_s, ca_file = self._settings
            api = CoordinatorClient(url, token, timeout_s, ca_file)
            self._local.api = api
            with self._lock:
                self._opened.append(api)
        return api

    def close(self) -> None:
        with self._lock:
            for api in self._opened:
                api.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def submit(
        self,
        script: str | Path | None = None,
        *,
        source: str | None = None,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        requirements: Sequence[str] = (),
        inputs: Sequence[str | Path] = (),
        timeout: float | None = None,
        name: str | None = None,
    ) -> Job:
        """Submit the script in file ``script`` (or the text ``source``); the new ``Job``.

        ``inputs``: files and folders that appear in the job's working directory under
        their base names. ``name`` defaults to the script's file name, which the job's
        script then runs as (tracebacks show it). ``timeout`` in seconds.
        """
        text, name = _script(script, source, name)
        inputs_ref = upload_inputs(self._api(), [Path(p) for p in inputs]) if inputs else None
        return self._submit(text, name, args, env, requirements, inputs_ref, timeout)

    def _submit(
        self,
        text: str,
        name: str | None,
        args: Sequence[str],
        env: dict[str, str] | None,
        requirements: Sequence[str],
        inputs_ref: dict[str, Any] | None,
        timeout: float | None,
    ) -> Job:
        view = self._api().submit(
            text, list(args), dict(env or {}), timeout, name, list(requirements), inputs_ref
        )
        return Job(self, str(view["id"]))

    def job(self, job_id: str) -> Job:
        """The job ``job_id`` (submitted before, by this token)."""
        return Job(self, job_id)

    def jobs(self, limit: int = 50) -> list[dict[str, Any]]:
        """Recent jobs, newest first, as the coordinator shows them."""
        return self._api().jobs(limit)

    def map(
        self,
        script: str | Path | None,
        arg_lists: Sequence[Sequence[str]],
        *,
        concurrency: int = 4,
        source: str | None = None,
        **options: Any,
    ) -> list[Result | ClientError]:
        """Run the script once per argument list, ``concurrency`` at a time; the results in
        the order of ``arg_lists``. A failure is per item: a job that fails is its
        ``Result``, a request that fails is its ``ClientError``, and neither stops the
        others. ``options``: ``submit``'s (env, requirements, inputs, timeout, name);
        inputs are uploaded once for all."""
        text, name = _script(script, source, options.pop("name", None))
        inputs = options.pop("inputs", ())
        inputs_ref = upload_inputs(self._api(), [Path(p) for p in inputs]) if inputs else None

        def run(args: Sequence[str]) -> Result | ClientError:
            try:
                job = self._submit(
                    text,
                    name,
                    args,
                    options.get("env"),
                    options.get("requirements", ()),
                    inputs_ref,
                    options.get("timeout"),
                )
                return job.wait()
            except ClientError as exc:
                return exc

        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            return list(pool.map(run, arg_lists))


def _script(
    script: str | Path | None, source: str | None, name: str | None
) -> tuple[str, str | None]:
    """The script's text and the job's name (the file's name by default)."""
    if (script is None) == (source is None):
        raise ValueError("give either a script file or source=, not both or neither")
    if source is not None:
        return source, name
    path = Path(script)  # type: ignore[arg-type]
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ClientError(f"cannot read the script {path}: {exc}") from None
    return text, name or path.name
