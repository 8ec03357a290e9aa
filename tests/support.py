"""Real processes for the tests: a coordinator and agents over real sockets on loopback.

Everything here is the real thing: the coordinator is `python -m compound coordinator` on a
free port, agents are `python -m compound agent` talking to the real Docker engine. Every
wait has a deadline and watches for a fact (an output line, an API answer), never a fixed
sleep.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from compound.tls import client_ssl_context
from docker_env import image_tag

TEST_IMAGE = image_tag()
STARTUP_TIMEOUT_S = 30.0
# The size pages are tested and screenshotted at.
VIEWPORT = {"width": 1280, "height": 800}
# Debian's Chromium, never a downloaded browser; the flags keep it off the network.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def csp_violations(page: Any) -> list[str]:
    """The Content-Security-Policy violations ``page`` reports from now on (a live list).

    Chromium reports each refusal as a console error ("Refused to ... because it violates
    the following Content Security Policy directive ...").
    """
    found: list[str] = []

    def on_console(message: Any) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            found.append(message.text)

    page.on("console", on_console)
    return found


def screenshot_path(name: str, scratch: Path) -> Path:
    """Where a test's screenshot ``name`` goes: docs/ when ``COMPOUND_REFRESH_SCREENSHOTS``
    is 1 (refreshing the README's pictures), else ``scratch`` (a test never changes the
    checkout)."""
    if os.environ.get("COMPOUND_REFRESH_SCREENSHOTS") == "1":
        return Path(__file__).resolve().parent.parent / "docs" / name
    return scratch / name


def product_env(**extra: str) -> dict[str, str]:
    """The environment of a user's machine: in particular, no PYTHONUNBUFFERED."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env.update(extra)
    return env


def wait_until(
    predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.05
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


class OutputLines:
    """Collects a process's output lines in a thread so tests can wait on them."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self._condition = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for raw in iter(stream.readline, b""):
            with self._condition:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._condition.notify_all()
        with self._condition:
            self.lines.append("")  # EOF marker wakes waiters
            self._condition.notify_all()

    def wait_for(
        self, predicate: Callable[[str], bool], timeout_s: float, what: str, start: int = 0
    ) -> str:
        deadline = time.monotonic() + timeout_s
        with self._condition:
            index = start
            while True:
                while index < len(self.lines):
                    if predicate(self.lines[index]):
                        return self.lines[index]
                    index += 1
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    tail = "\n".join(self.lines[-20:])
                    raise AssertionError(f"timed out waiting for {what}; last lines:\n{tail}")
                self._condition.wait(remaining)

    def text(self) -> str:
        with self._condition:
            return "\n".join(self.lines)


def _spawn(
    args: list[str], env: dict[str, str] | None = None, stdout_to_lines: bool = True
) -> tuple[subprocess.Popen[bytes], OutputLines]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "compound", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env or product_env(),
        start_new_session=True,
    )
    assert proc.stdout is not None
    return proc, OutputLines(proc.stdout)


def end_process(
    proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout_s: float = 20
) -> None:
    """Send ``sig``; SIGKILL if the process is still there after ``timeout_s``."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@dataclass(kw_only=True)
class ManagedProcess:
    """A `python -m compound ...` child process and its collected output."""

    proc: subprocess.Popen[bytes] | None = None
    output: OutputLines | None = None

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        assert self.proc is not None
        end_process(self.proc, signal.SIGKILL)

    def stop(self) -> None:
        if self.proc is not None:
            end_process(self.proc)


@dataclass
class Coordinator(ManagedProcess):
    data_dir: Path
    port: int = 0
    lease_timeout_s: float = 3.0
    heartbeat_interval_s: float = 0.5
    extra_args: list[str] = field(default_factory=list)
    # Set when it serves TLS (--tls-cert): the CA the test's own requests trust.
    ca_file: Path | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.ca_file else 'http'}://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.ca_file else 'ws'}://127.0.0.1:{self.port}"

    def start(self) -> Coordinator:
        self.proc, self.output = _spawn(
            [
                "coordinator",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
                "--lease-timeout",
                str(self.lease_timeout_s),
                "--heartbeat-interval",
                str(self.heartbeat_interval_s),
                *self.extra_args,
            ]
        )
        line = self.output.wait_for(
            lambda text: "listening on http" in text or text == "",
            STARTUP_TIMEOUT_S,
            "the coordinator to listen",
        )
        assert "listening on" in line, f"coordinator did not start:\n{self.output.text()}"
        self.port = int(line.rsplit(":", 1)[1])
        return self

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        verify = client_ssl_context(str(self.ca_file)) if self.ca_file else False
        return httpx.request(method, self.url + path, timeout=30, verify=verify, **kwargs)

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.api("GET", f"/api/v1/jobs/{job_id}")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def submit(self, script: str, **fields: Any) -> str:
        response = self.api("POST", "/api/v1/jobs", json={"script": script, **fields})
        assert response.status_code == 201, response.text
        job_id: str = response.json()["id"]
        return job_id

    def wait_for_status(
        self, job_id: str, statuses: set[str], timeout_s: float = 60
    ) -> dict[str, Any]:
        job: dict[str, Any] = wait_until(
            lambda: (current := self.job(job_id))["status"] in statuses and current,
            timeout_s,
            f"job {job_id} to be {statuses}",
        )
        return job

    def contributors(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("GET", "/api/v1/contributors").json()[
            "contributors"
        ]
        return result

    def wait_for_contributor(
        self, node_id: str, state: str = "online", timeout_s: float = 30
    ) -> dict[str, Any]:
        """Until ``node_id``'s row has ``state`` ("online": any state but offline); the row."""

        def found() -> dict[str, Any] | None:
            for row in self.contributors():
                matches = row["state"] != "offline" if state == "online" else row["state"] == state
                if row["id"] == node_id and matches:
                    return row
            return None

        row: dict[str, Any] = wait_until(found, timeout_s, f"contributor {node_id} to be {state}")
        return row

    def logs(self, job_id: str) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        after = -1
        while True:
            page = self.api("GET", f"/api/v1/jobs/{job_id}/logs", params={"after": after}).json()
            records.extend(page["records"])
            if not page["records"]:
                return records
            after = page["last_seq"]


@dataclass
class Agent(ManagedProcess):
    coordinator_url: str
    state_dir: Path
    name: str = "test-agent"
    runtime: str = "runc"
    extra_args: list[str] = field(default_factory=list)
    # True: the machine's --slots/--warm defaults (the benchmark measures what users get).
    machine_defaults: bool = False
    # A contributor token, passed the way users do: COMPOUND_TOKEN in the environment.
    token: str | None = field(default=None, repr=False)

    @property
    def node_id(self) -> str:
        return (self.state_dir / "node_id").read_text().strip()

    def _pinned_lending(self) -> list[str]:
        if self.machine_defaults:
            return []
        pinned = [] if "--slots" in self.extra_args else ["--slots", "1"]
        return pinned + ([] if "--warm" in self.extra_args else ["--warm", "1"])

    def start(self, wait_connected: bool = True) -> Agent:
        self.proc, self.output = _spawn(
            [
                "agent",
                "--coordinator",
                self.coordinator_url,
                "--image",
                TEST_IMAGE,
                "--runtime",
                self.runtime,
                "--name",
                self.name,
                "--state-dir",
                str(self.state_dir),
                "--grace",
                "2",
                "--events",
                "json",
                # The defaults follow the machine; tests pin one slot and one warm container
                # unless they say otherwise, so they behave alike everywhere.
                *self._pinned_lending(),
                *self.extra_args,
            ],
            env=product_env(COMPOUND_TOKEN=self.token) if self.token else None,
        )
        if wait_connected:
            self.wait_event("connected")
        return self

    def events(self) -> list[dict[str, Any]]:
        assert self.output is not None
        return [json.loads(line) for line in self.output.lines if line.startswith("{")]

    def wait_event(
        self, kind: str, timeout_s: float = STARTUP_TIMEOUT_S, start: int = 0, **fields: Any
    ) -> dict[str, Any]:
        assert self.output is not None

        def matches(line: str) -> bool:
            if line == "":
                raise AssertionError(f"agent exited:\n{self.output.text() if self.output else ''}")
            if not line.startswith("{"):
                return False
            event = json.loads(line)
            return bool(
                event.get("type") == kind and all(event.get(k) == v for k, v in fields.items())
            )

        line = self.output.wait_for(matches, timeout_s, f"agent event {kind} {fields}", start)
        result: dict[str, Any] = json.loads(line)
        return result


def remove_mount_dir(agent: Agent) -> None:
    """Remove the directory a stopped agent's containers mounted from (see agent.mount_dir):
    it lives under /var/tmp, not under the test's own directory."""
    with contextlib.suppress(OSError):
        recorded = (agent.state_dir / "mount-dir").read_text().strip()
        shutil.rmtree(recorded, ignore_errors=True)


def containers_of(node_id: str, *, jobs_only: bool = True) -> list[str]:
    """Ids of this node's job containers (``jobs_only`` False: warm ones too), running or
    not (real Docker, via the CLI)."""
    # Warm containers waiting for a job are renamed compound-job-* when given one.
    names = ["--filter", "name=compound-job-"] if jobs_only else []
    result = subprocess.run(
        [
            "docker",
            "ps",
            "-aq",
            "--filter",
            "label=compound.managed=1",
            "--filter",
            f"label=compound.node_id={node_id}",
            *names,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.split()


def make_token(data_dir: Path, role: str, name: str) -> str:
    """A new token of ``role`` named ``name`` in the coordinator's ``data_dir`` (the CLI)."""
    result = run_cli("token", "create", "--data-dir", str(data_dir), "--role", role, "--name", name)
    assert result.returncode == 0, result.stderr.decode()
    token: str = result.stdout.decode().strip()
    return token


def run_cli(
    *args: str,
    coordinator: Coordinator | None = None,
    timeout_s: float = 120,
    input_bytes: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    env = product_env(**({"COMPOUND_COORDINATOR": coordinator.url} if coordinator else {}))
    return subprocess.run(
        [sys.executable, "-m", "compound", *args],
        capture_output=True,
        env=env,
        timeout=timeout_s,
        input=input_bytes,
    )


def start_submit(
    script: Path, coordinator: Coordinator
) -> tuple[subprocess.Popen[bytes], OutputLines]:
    """`compound submit SCRIPT` following in the background; its stdout lines as they come."""
    cli = subprocess.Popen(
        [sys.executable, "-m", "compound", "submit", str(script), "-c", coordinator.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=product_env(),
    )
    assert cli.stdout is not None
    return cli, OutputLines(cli.stdout)


def follow(
    coordinator: Coordinator, job_id: str, after: int = -1, timeout_s: float = 60
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Follow a job over the real WebSocket until its end; returns (records, final job)."""
    from websockets.sync.client import connect

    records: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    with connect(
        f"{coordinator.ws_url}/api/v1/jobs/{job_id}/follow?after={after}", max_size=8 * 1024 * 1024
    ) as websocket:
        while True:
            message = json.loads(websocket.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message["type"] == "records":
                records.extend(message["records"])
            elif message["type"] == "end":
                return records, message["job"]


def stream_text(records: list[dict[str, Any]], stream: str = "stdout") -> str:
    return "".join(r["data"] for r in records if r["stream"] == stream)
