"""Hostile jobs against the real sandbox, under runc and gVisor (runsc).

Each job runs through the real DockerRunner (the agent's own, in this process) with the
agent's default limits, and must end in a terminal status with a stated reason; afterwards
no container is left and the same runner runs an ordinary job normally. The agent's secrets
are checked through a real agent process and coordinator, since that is where they live.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from compound.agent.output import OutputCollector
from compound.agent.runners.base import Limits, MiB, RunResult, RunSpec
from compound.agent.runners.docker.outputs import NO_TRAILER
from compound.agent.runners.docker.runner import DockerRunner, DockerRunnerSettings
from compound.protocol import MAX_RECORD_CHARS, JobStatus, LogRecord, Stream
from docker_env import RUNTIMES, leftover_container_ids
from support import Agent, Coordinator, stream_text, wait_until

pytestmark = pytest.mark.timeout(120)

JOB_TIMEOUT_S = 5.0
GRACE_S = 2.0
# What the collector keeps per job here (the agent's default is 64 MiB): enough to show the cap.
OUTPUT_CAP_BYTES = 4 * MiB
# Below the agent's default 256 MiB, so a single file meets RLIMIT_FSIZE before /tmp is full.
LIMITS = Limits(file_bytes=64 * MiB)
# A hostile job that has not ended after this long is a hang, not a slow machine.
ENDS_WITHIN_S = 40.0
OUT_OF_MEMORY = "ran out of memory (limit 512 MiB)"
TIMED_OUT = f"timed out after {JOB_TIMEOUT_S:g} s"


@dataclass(frozen=True)
class Outcome:
    result: RunResult
    records: list[LogRecord]

    def text(self, stream: Stream) -> str:
        return "".join(r.data for r in self.records if r.stream is stream)

    @property
    def stdout(self) -> str:
        return self.text(Stream.STDOUT)

    @property
    def report(self) -> dict[str, object]:
        """The JSON object the job printed last on stdout."""
        result: dict[str, object] = json.loads(self.stdout.strip().splitlines()[-1])
        return result


@pytest.fixture(params=RUNTIMES)
async def runner(request: pytest.FixtureRequest, docker_engine: str) -> AsyncIterator[DockerRunner]:
    settings = DockerRunnerSettings(
        image=docker_engine,
        runtime=request.param,
        limits=LIMITS,
        grace_s=GRACE_S,
        node_id=f"hostile-{uuid.uuid4().hex[:12]}",
    )
    runner = DockerRunner(settings)
    await runner.prepare()
    yield runner
    await runner.close()


async def run_job(runner: DockerRunner, script: str, **spec: object) -> Outcome:
    """Run one job through the runner and the agent's real output collector."""
    records: list[LogRecord] = []
    collector = OutputCollector(0, OUTPUT_CAP_BYTES, records.append)

    async def sink(stream: Stream, data: bytes) -> None:
        collector.feed(stream, data)

    job = RunSpec(job_id=uuid.uuid4().hex, script=textwrap.dedent(script), **spec)  # type: ignore[arg-type]
    result = await asyncio.wait_for(runner.run(job, sink, asyncio.Event()), ENDS_WITHIN_S)
    collector.close()
    return Outcome(result, records)


async def run_hostile(runner: DockerRunner, script: str, **spec: object) -> Outcome:
    """Run a hostile job, then check nothing is left and an ordinary job still runs."""
    spec.setdefault("timeout_s", JOB_TIMEOUT_S)
    outcome = await run_job(runner, script, **spec)
    assert outcome.result.status.is_terminal
    assert await leftover_container_ids(runner) == []
    ordinary = await run_job(runner, "print('ok')")
    assert ordinary.result == RunResult(JobStatus.SUCCEEDED, 0)
    assert ordinary.stdout == "ok\n"
    assert await leftover_container_ids(runner) == []
    return outcome


async def test_fork_bomb_is_contained(runner: DockerRunner) -> None:
    """A fork bomb meets the process limit (runc) or the memory limit (gVisor) and ends."""
    outcome = await run_hostile(
        runner,
        """
        import os, time
        root = os.getpid()
        refused = False
        while True:
            try:
                os.fork()
            except OSError:
                if os.getpid() == root and not refused:
                    print("fork refused", flush=True)
                    refused = True
                time.sleep(0.01)
        """,
    )
    result = outcome.result
    if runner.runtime == "runc":
        assert (result.status, result.error) == (JobStatus.TIMED_OUT, TIMED_OUT)
        assert outcome.stdout == "fork refused\n"
    else:
        # gVisor charges each guest process's memory to the container: 256 Pythons > 512 MiB.
        assert (result.status, result.error) in {
            (JobStatus.FAILED, OUT_OF_MEMORY),
            (JobStatus.TIMED_OUT, TIMED_OUT),
        }


async def test_memory_hog_is_killed_with_a_reason(runner: DockerRunner) -> None:
    """A job reaching for 8 GiB is killed at the memory limit and told so."""
    outcome = await run_hostile(
        runner,
        """
        chunks = []
        print("asking for 8 GiB", flush=True)
        for _ in range(128):
            chunks.append(bytearray(64 << 20))
        print("got it")
        """,
    )
    # gVisor ends the whole sandbox, launcher included: the outputs are lost, and noted.
    assert outcome.result.outputs_note in (None, NO_TRAILER)
    assert replace(outcome.result, outputs_note=None) == RunResult(
        JobStatus.FAILED, 137, OUT_OF_MEMORY
    )
    assert outcome.stdout == "asking for 8 GiB\n"


async def test_cpu_spin_ignoring_sigterm_is_killed_after_timeout(runner: DockerRunner) -> None:
    """A busy loop that ignores SIGTERM is killed once the timeout and the grace are over."""
    started = time.monotonic()
    outcome = await run_hostile(
        runner,
        """
        import signal
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("spinning", flush=True)
        while True:
            pass
        """,
        timeout_s=3.0,
    )
    assert outcome.result == RunResult(JobStatus.TIMED_OUT, 137, "timed out after 3 s")
    assert outcome.stdout == "spinning\n"
    # The ordinary job after it takes well under the 5 s of slack.
    assert time.monotonic() - started < 3.0 + GRACE_S + 10.0


async def test_filling_tmp_stops_at_the_file_and_tmpfs_limits(runner: DockerRunner) -> None:
    """One file stops at RLIMIT_FSIZE (EFBIG), /tmp as a whole at its size (ENOSPC)."""
    outcome = await run_hostile(
        runner,
        """
        import errno, json, os
        chunk = b"x" * (1 << 20)

        def fill(path, limit_mib):
            written = 0
            try:
                with open(path, "wb", buffering=0) as f:
                    while written < limit_mib:
                        f.write(chunk)
                        written += 1
            except OSError as exc:
                return errno.errorcode[exc.errno], written
            return "no limit", written

        one_file = fill("/tmp/one", 1024)
        os.unlink("/tmp/one")
        total, index = 0, 0
        while True:
            code, written = fill(f"/tmp/part{index}", 32)
            total += written
            index += 1
            if code != "no limit":
                break
        print(json.dumps({"one_file": one_file, "all": [code, total]}))
        """,
    )
    assert outcome.result == RunResult(JobStatus.SUCCEEDED, 0)
    report = outcome.report
    assert report["one_file"] == ["EFBIG", 64]
    code, total_mib = report["all"]  # type: ignore[misc]
    assert code == "ENOSPC"
    assert 200 <= total_mib <= 256


async def test_nothing_outside_tmp_is_writable(runner: DockerRunner) -> None:
    """Writes to /, /etc, /usr, /var/tmp, /run/lock... fail; only tmpfs mounts (among them
    /job, the job's working directory) take them; the script itself is read-only."""
    outcome = await run_hostile(
        runner,
        """
        import errno, json, os
        created = []
        for root, dirs, _ in os.walk("/"):
            if root == "/":
                dirs[:] = [d for d in dirs if d not in ("proc", "sys")]
            probe = os.path.join(root, ".probe")
            try:
                open(probe, "x").close()
            except OSError:
                continue
            os.unlink(probe)
            created.append(root)
        named = {}
        for directory in ("/", "/etc", "/usr", "/usr/lib", "/var/tmp", "/run/lock",
                          "/var/lock", "/root", "/opt/compound/site"):
            try:
                open(os.path.join(directory, "planted"), "w").close()
                named[directory] = "written"
            except OSError as exc:
                named[directory] = errno.errorcode[exc.errno]
        try:
            open("/job/main.py", "a").close()
            named["/job/main.py"] = "written"
        except OSError as exc:
            named["/job/main.py"] = errno.errorcode[exc.errno]
        print(json.dumps({"created": created, "named": named}))
        """,
    )
    assert outcome.result == RunResult(JobStatus.SUCCEEDED, 0)
    report = outcome.report
    # POSIX shared memory and message queues live in their own bounded mounts.
    assert "/tmp" in report["created"]  # type: ignore[operator]
    assert set(report["created"]) <= {  # type: ignore[arg-type]
        "/tmp",
        "/dev/shm",
        "/dev/mqueue",
        "/job",
        "/job/outputs",
    }
    assert set(report["named"].values()) <= {"EROFS", "EACCES"}  # type: ignore[attr-defined]


async def test_output_flood_is_capped_and_the_job_ends(runner: DockerRunner) -> None:
    """1 GiB of output: the collector keeps its cap, notes the drop once, the job finishes."""
    outcome = await run_hostile(
        runner,
        """
        import sys
        chunk = b"y" * (1 << 20)
        for _ in range(1024):
            sys.stdout.buffer.write(chunk)
        """,
        timeout_s=30.0,
    )
    assert outcome.result == RunResult(JobStatus.SUCCEEDED, 0)
    assert outcome.stdout == "y" * OUTPUT_CAP_BYTES
    assert outcome.text(Stream.SYSTEM) == (
        "[compound] output limit of 4 MiB reached; further output dropped\n"
    )


async def test_huge_line_without_newline_is_cut_into_bounded_records(runner: DockerRunner) -> None:
    """A 100 MiB line with no newline is never held whole: records stay small, the cap holds."""
    outcome = await run_hostile(
        runner,
        """
        import sys
        sys.stdout.write("z" * (100 << 20))
        """,
        timeout_s=30.0,
    )
    assert outcome.result == RunResult(JobStatus.SUCCEEDED, 0)
    assert outcome.stdout == "z" * OUTPUT_CAP_BYTES
    assert max(len(r.data) for r in outcome.records) <= MAX_RECORD_CHARS


@pytest.fixture
def host_listener() -> Iterator[socket.socket]:
    """A TCP socket listening on the host's loopback, which no job may reach."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.setblocking(False)
        yield server


async def test_network_is_unreachable(runner: DockerRunner, host_listener: socket.socket) -> None:
    """The host's loopback, the Docker gateway, the internet and DNS are all out of reach."""
    port = host_listener.getsockname()[1]
    outcome = await run_hostile(
        runner,
        """
        import errno, json, socket, sys
        port = int(sys.argv[1])
        seen = {}

        def attempt(name, action):
            try:
                action()
                seen[name] = "reached"
            except socket.gaierror:
                seen[name] = "no DNS"
            except OSError as exc:
                seen[name] = errno.errorcode.get(exc.errno, str(exc))

        tcp = lambda host, p: lambda: socket.create_connection((host, p), timeout=3).close()
        attempt("loopback", tcp("127.0.0.1", port))
        attempt("gateway", tcp("172.17.0.1", port))
        attempt("internet", tcp("1.1.1.1", 443))
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        attempt("udp", lambda: udp.sendto(b"x", ("8.8.8.8", 53)))
        attempt("dns", lambda: socket.getaddrinfo("example.com", 80))
        print(json.dumps(seen))
        """,
        args=[str(port)],
    )
    assert outcome.result == RunResult(JobStatus.SUCCEEDED, 0)
    report = outcome.report
    # 127.0.0.1 inside is the container's own loopback, where nothing listens.
    assert report["loopback"] == "ECONNREFUSED"
    unreachable = {"ENETUNREACH", "EHOSTUNREACH"}
    assert {report["gateway"], report["internet"], report["udp"]} <= unreachable
    assert report["dns"] == "no DNS"
    with pytest.raises(BlockingIOError):
        host_listener.accept()


async def test_privilege_tricks_fail(runner: DockerRunner) -> None:
    """setuid, setuid binaries, raw sockets, chown, mount: nothing gives the job privilege."""
    outcome = await run_hostile(
        runner,
        """
        import ctypes, errno, json, os, shutil, socket, subprocess
        libc = ctypes.CDLL(None, use_errno=True)
        seen = {}

        def attempt(name, action):
            try:
                result = action()
                seen[name] = "done" if result in (None, 0) else f"exit {result}"
            except OSError as exc:
                seen[name] = errno.errorcode.get(exc.errno, str(exc))

        def call(rc):
            if rc != 0:
                code = ctypes.get_errno()
                raise OSError(code, os.strerror(code))

        attempt("setuid", lambda: os.setuid(0))
        attempt("setgid", lambda: os.setgid(0))
        attempt("setgroups", lambda: os.setgroups([0]))
        attempt("raw socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, 1))
        attempt("packet socket", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW))
        open("/tmp/mine", "w").close()
        attempt("chown to root", lambda: os.chown("/tmp/mine", 0, 0))
        os.makedirs("/tmp/mnt")
        attempt("mount", lambda: call(libc.mount(b"none", b"/tmp/mnt", b"tmpfs", 0, None)))
        shutil.copy("/usr/bin/id", "/tmp/id")
        os.chmod("/tmp/id", 0o4755)
        attempt("exec setuid copy", lambda: subprocess.run(["/tmp/id"]).returncode)
        quiet = {"stdin": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        attempt("su", lambda: subprocess.run(["su", "-c", "id"], **quiet).returncode)
        attempt("mount binary", lambda: subprocess.run(
            ["mount", "-t", "tmpfs", "none", "/tmp/mnt"], **quiet).returncode)
        status = dict(line.split(":", 1) for line in open("/proc/self/status"))
        seen["caps"] = sorted({status[k].strip() for k in status if k.startswith("Cap")})
        seen["no new privs"] = status.get("NoNewPrivs", "").strip()
        seen["uid"] = [os.getuid(), os.geteuid()]
        print(json.dumps(seen))
        """,
    )
    assert outcome.result == RunResult(JobStatus.SUCCEEDED, 0)
    seen = outcome.report
    for trick in ("setuid", "setgid", "setgroups", "chown to root", "mount"):
        assert seen[trick] == "EPERM", trick
    for socket_kind in ("raw socket", "packet socket"):
        assert seen[socket_kind] in {"EPERM", "EACCES"}, socket_kind
    # /tmp is noexec: the setuid copy never runs at all.
    assert seen["exec setuid copy"] == "EACCES"
    # The image's setuid binaries run, but without gaining anything (no_new_privs).
    assert seen["su"] != "done" and seen["mount binary"] != "done"
    assert seen["caps"] == ["0000000000000000"]
    assert seen["uid"] == [65534, 65534]
    if runner.runtime == "runc":
        # gVisor's /proc does not show the flag; Docker sets it for both runtimes.
        assert seen["no new privs"] == "1"


async def test_signals_stay_inside_the_container(runner: DockerRunner) -> None:
    """PID 1 is tini inside; a host process cannot be signalled, or even seen."""
    with subprocess.Popen(["sleep", "60"]) as host_process:
        try:
            outcome = await run_hostile(
                runner,
                """
                import errno, json, os, signal, sys
                host_pid = int(sys.argv[1])
                try:
                    os.kill(host_pid, signal.SIGKILL)
                    outcome = "sent"
                except OSError as exc:
                    outcome = errno.errorcode[exc.errno]
                pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
                pid1 = open("/proc/1/cmdline", "rb").read().split(b"\\0")[0].decode()
                # Straight to the container's stdout (the relay's ring is emptied first): the
                # kill below may end the whole sandbox before the relay's next pass.
                seen = {"kill host": outcome, "pids": pids, "pid 1": pid1}
                os.write(1, (json.dumps(seen) + "\\n").encode())
                os.kill(1, signal.SIGKILL)
                print("pid 1 is still there")
                """,
                args=[str(host_process.pid)],
            )
            assert host_process.poll() is None
        finally:
            host_process.kill()
    seen = json.loads(outcome.stdout.splitlines()[0])
    assert seen["kill host"] == "ESRCH"
    assert seen["pid 1"] == "/sbin/docker-init"
    assert host_process.pid not in seen["pids"] and len(seen["pids"]) <= 3
    if runner.runtime == "runc":
        # The kernel ignores SIGKILL sent to a namespace's init from inside it.
        assert outcome.result == RunResult(JobStatus.SUCCEEDED, 0)
        assert outcome.stdout.endswith("pid 1 is still there\n")
    else:
        # gVisor delivers it: the job kills its own sandbox, and only that.
        assert outcome.result == RunResult(JobStatus.FAILED, 137, outputs_note=NO_TRAILER)


REFUSED_ENV = {
    "LD_PRELOAD": "/tmp/evil.so",
    "LD_LIBRARY_PATH": "/tmp",
    "GLIBC_TUNABLES": "glibc.malloc.check=3",
    "TINI_VERBOSITY": "3",
    "PYTHONIOENCODING": "latin-1",
    "A=B": "c",
}


async def test_refused_environment_starts_no_container(runner: DockerRunner) -> None:
    """Variables that would change how the sandbox starts the job fail it, naming the variable."""
    for name, value in REFUSED_ENV.items():
        outcome = await run_job(runner, "print('never')", env={name: value})
        assert outcome.result.status is JobStatus.FAILED, name
        assert outcome.result.exit_code is None, name
        assert name in (outcome.result.error or ""), name
        assert outcome.records == [], name
    # Repeating a value the agent sets anyway is fine.
    outcome = await run_hostile(runner, "print('ok')", env={"PYTHONUNBUFFERED": "1"})
    assert outcome.result == RunResult(JobStatus.SUCCEEDED, 0)


CANARY_SCRIPT = """
import json, os, sys
canary, file_name, state_dir = sys.argv[1:]
in_env = any(canary in value for value in os.environ.values())
in_proc = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        if canary.encode() in open(f"/proc/{pid}/environ", "rb").read():
            in_proc.append(pid)
    except OSError:
        pass
found = []
for root, dirs, files in os.walk("/"):
    if root == "/":
        dirs[:] = [d for d in dirs if d not in ("proc", "sys")]
    found += [os.path.join(root, f) for f in files if f == file_name]
print(json.dumps({
    "env": in_env, "proc": in_proc, "files": found,
    "state dir": os.path.exists(state_dir),
    "docker socket": os.path.exists("/var/run/docker.sock"),
}))
"""


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_agent_environment_and_files_are_invisible(
    coordinator: Coordinator,
    start_agent: Callable[..., Agent],
    runtime: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A canary in the agent's environment and one in its state dir are invisible to jobs."""
    canary = f"canary-{uuid.uuid4().hex}"
    monkeypatch.setenv("COMPOUND_TEST_CANARY", canary)  # the agent inherits it
    state_dir = tmp_path / "agent-state"
    state_dir.mkdir()
    (state_dir / f"{canary}.txt").write_text(canary)
    agent = start_agent(runtime=runtime, state_dir=state_dir)
    assert os.environ["COMPOUND_TEST_CANARY"] == canary
    job_id = coordinator.submit(
        CANARY_SCRIPT, args=[canary, f"{canary}.txt", str(state_dir)], timeout_s=30
    )
    job = coordinator.wait_for_status(job_id, {"succeeded", "failed", "timed_out"})
    assert job["status"] == "succeeded", coordinator.logs(job_id)
    seen = json.loads(stream_text(coordinator.logs(job_id)))
    assert seen == {
        "env": False,
        "proc": [],
        "files": [],
        "state dir": False,
        "docker socket": False,
    }
    assert agent.proc is not None and agent.proc.poll() is None


def test_runtime_auto_reports_gvisor_and_refusals_reach_the_log(
    coordinator: Coordinator, start_agent: Callable[..., Agent]
) -> None:
    """--runtime auto picks gVisor here, says so, reports it; a refused variable is a note."""
    agent = start_agent(runtime="auto")
    agent.wait_event("log", message="runtime auto: jobs run under gVisor (runsc)")
    wait_until(
        lambda: any(
            c["id"] == agent.node_id and c["runtime"] == "runsc" for c in coordinator.contributors()
        ),
        10,
        "the contributors list to show runsc",
    )
    refused = coordinator.submit("print('never')", env={"LD_PRELOAD": "/tmp/x.so"})
    job = coordinator.wait_for_status(refused, {"failed"})
    reason = "the job may not set LD_PRELOAD: it would change how the sandbox starts the job"
    assert job["error"] == reason
    assert stream_text(coordinator.logs(refused), "system") == f"[compound] {reason}\n"
    ordinary = coordinator.submit("print('ok')")
    assert coordinator.wait_for_status(ordinary, {"succeeded"})["exit_code"] == 0
