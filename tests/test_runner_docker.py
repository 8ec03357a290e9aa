"""DockerRunner against the real Docker engine, with runc and with gVisor (runsc)."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from compound.agent.runners.base import Limits, MiB, RunResult, RunSpec
from compound.agent.runners.docker.engine import NOT_RUNNING, EngineError, connect
from compound.agent.runners.docker.runner import (
    DockerRunner,
    DockerRunnerSettings,
    container_config,
    write_site,
)
from compound.agent.runners.docker.runtime import choose_runtime
from compound.agent.runners.docker.spec import sandbox_key
from compound.agent.runners.docker.stream import FrameDemuxer
from compound.protocol import JobStatus, Stream
from docker_env import (
    RUNTIMES,
    Collected,
    leftover_container_ids,
    managed_container_ids,
    run_job,
)

# Jobs start in ~0.2 s (runc) or ~0.4 s (runsc); a minute is a hang, not a slow machine.
pytestmark = pytest.mark.timeout(60)


def _settings(image: str, runtime: str, **changes: object) -> DockerRunnerSettings:
    base = DockerRunnerSettings(
        image=image, runtime=runtime, node_id=f"test-{uuid.uuid4().hex[:12]}", grace_s=5.0
    )
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture(params=RUNTIMES)
async def runner(request: pytest.FixtureRequest, docker_engine: str) -> AsyncIterator[DockerRunner]:
    runner = DockerRunner(_settings(docker_engine, request.param))
    await runner.prepare()
    yield runner
    await runner.close()


run = run_job


async def test_stdout_and_stderr_stay_separate_and_exact(runner: DockerRunner) -> None:
    """Each stream carries exactly what the script wrote to it, in order."""
    script = (
        "import sys\n"
        "for i in range(50):\n"
        "    print(f'out {i}')\n"
        "    print(f'err {i}', file=sys.stderr)\n"
    )
    result, sink = await run(runner, script)
    assert result == RunResult(JobStatus.SUCCEEDED, 0)
    assert sink.stdout == b"".join(f"out {i}\n".encode() for i in range(50))
    assert sink.stderr == b"".join(f"err {i}\n".encode() for i in range(50))


async def test_non_zero_exit_fails_with_its_code(runner: DockerRunner) -> None:
    """A script exiting 3 is FAILED with exit code 3 and no engine error."""
    result, sink = await run(runner, "import sys\nprint('bye')\nsys.exit(3)")
    assert result == RunResult(JobStatus.FAILED, 3)
    assert sink.stdout == b"bye\n"


async def test_uncaught_exception_reaches_stderr(runner: DockerRunner) -> None:
    """A traceback goes to stderr and the job fails with exit code 1."""
    result, sink = await run(runner, "raise ValueError('boom')")
    assert result == RunResult(JobStatus.FAILED, 1)
    assert sink.stderr.endswith(b"ValueError: boom\n")
    assert sink.stdout == b""


async def test_args_env_and_sandbox_identity(runner: DockerRunner) -> None:
    """Args and env reach the script; it runs as nobody, without capabilities, in /job."""
    script = (
        "import json, os, resource, sys\n"
        "try:\n"
        "    open('/var/tmp/written', 'w')\n"
        "    root = 'writable'\n"
        "except OSError as exc:\n"
        "    root = os.strerror(exc.errno)\n"
        "caps = [l for l in open('/proc/self/status') if l.startswith('CapEff')][0]\n"
        "open('/tmp/scratch', 'w').write('ok')\n"
        "try:\n"
        "    open('/job/written', 'w')\n"
        "    job_dir = 'writable'\n"
        "except OSError:\n"
        "    job_dir = 'read-only'\n"
        "print(json.dumps({'argv': sys.argv[1:], 'uid': os.getuid(), 'gid': os.getgid(),\n"
        "    'env': {k: os.environ.get(k) for k in ('GREETING', 'HOME', 'PYTHONUNBUFFERED',\n"
        "    'PYTHONIOENCODING', 'PYTHONDONTWRITEBYTECODE')}, 'caps': caps.split()[1],\n"
        "    'job_dir': job_dir, 'cwd': os.getcwd(), 'path': sys.path, 'stdin': sys.stdin.read(),\n"
        "    'nofile': resource.getrlimit(resource.RLIMIT_NOFILE),\n"
        "    'fsize': resource.getrlimit(resource.RLIMIT_FSIZE),\n"
        "    'script': sys.argv[0], 'root': root}))\n"
    )
    args = ["plain", "with space", "ünïcødé ✓", "--flag=1", ""]
    result, sink = await run(
        runner, script, args=args, env={"GREETING": "héllo wörld", "PYTHONPATH": "/tmp/lib"}
    )
    # What it wrote in /job comes back as its output.
    assert (result.status, result.exit_code, result.error) == (JobStatus.SUCCEEDED, 0, None)
    seen = json.loads(sink.stdout)
    assert seen["argv"] == args
    assert seen["env"] == {
        "GREETING": "héllo wörld",
        "HOME": "/tmp",
        "PYTHONUNBUFFERED": "1",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    assert (seen["uid"], seen["gid"]) == (65534, 65534)
    assert int(seen["caps"], 16) == 0
    assert seen["job_dir"] == "writable"
    assert seen["cwd"] == "/job"
    assert "/tmp/lib" in seen["path"]
    assert seen["stdin"] == ""
    assert seen["script"] == "/job/main.py"
    assert seen["root"] == "Read-only file system"
    assert seen["nofile"] == [1024, 1024]
    assert seen["fsize"] == [256 * MiB, 256 * MiB]


async def test_large_script_arrives_intact(runner: DockerRunner) -> None:
    """A 1 MiB script (the coordinator's default maximum) reaches the container byte-exact."""
    payload = "é✓" * 205_000  # 5 bytes each
    script = f"import sys\ndata = {payload!r}\nsys.stdout.write(data)\n"
    assert len(script.encode()) > 1000 * 1024
    result, sink = await run(runner, script)
    assert result == RunResult(JobStatus.SUCCEEDED, 0)
    assert sink.stdout == payload.encode()


async def test_unicode_and_last_line_without_newline(runner: DockerRunner) -> None:
    """Non-ASCII text arrives as its UTF-8 bytes and an unterminated last line is kept."""
    script = (
        "import sys\nprint('héllo wörld ✓ 日本 🎉')\nsys.stdout.write('tail without newline')\n"
    )
    result, sink = await run(runner, script)
    assert result.status is JobStatus.SUCCEEDED
    assert sink.stdout == "héllo wörld ✓ 日本 🎉\ntail without newline".encode()


async def test_one_mib_line_is_intact(runner: DockerRunner) -> None:
    """A single 1 MiB line arrives byte for byte, as text on stdout and as bytes on stderr.

    gVisor's pipes take at most 64 KiB per write; without the sandbox's sitecustomize,
    ``python -u`` silently dropped the rest.
    """
    script = (
        "import sys\n"
        "print('ab' * (512 * 1024))\n"
        "sys.stderr.buffer.write(b'\\xfe' * (1024 * 1024))\n"
    )
    result, sink = await run(runner, script)
    assert result.status is JobStatus.SUCCEEDED
    assert sink.stdout == b"ab" * (512 * 1024) + b"\n"
    assert sink.stderr == b"\xfe" * (1024 * 1024)


async def test_invalid_utf8_passes_through_raw(runner: DockerRunner) -> None:
    """Bytes that are not UTF-8 are delivered untouched on both streams."""
    script = (
        "import sys\n"
        "sys.stdout.buffer.write(b'\\xff\\xfe bad \\x80\\xc3\\n')\n"
        "sys.stderr.buffer.write(b'\\xed\\xa0\\x80 surrogate')\n"
    )
    result, sink = await run(runner, script)
    assert result.status is JobStatus.SUCCEEDED
    assert sink.stdout == b"\xff\xfe bad \x80\xc3\n"
    assert sink.stderr == b"\xed\xa0\x80 surrogate"


async def test_hundred_thousand_lines_intact_and_fast(runner: DockerRunner) -> None:
    """100,000 separately written lines all arrive, in order, within seconds."""
    started = time.monotonic()
    result, sink = await run(runner, "for i in range(100_000):\n    print(i)\n")
    elapsed_s = time.monotonic() - started
    assert result.status is JobStatus.SUCCEEDED
    assert sink.stdout == b"".join(b"%d\n" % i for i in range(100_000))
    assert elapsed_s < 30, f"100,000 lines took {elapsed_s:.1f} s"


async def test_output_streams_while_job_runs_and_cancel_stops_it(runner: DockerRunner) -> None:
    """Output (even half a line) arrives while the script runs; cancelling ends it CANCELLED."""
    script = "import sys, time\nsys.stdout.write('started')\ntime.sleep(30)\nprint('never')\n"
    sink = Collected()
    cancel = asyncio.Event()
    job = RunSpec(job_id="streaming", script=script)
    task = asyncio.create_task(runner.run(job, sink, cancel))
    await asyncio.wait_for(sink.first.wait(), timeout=20)
    assert not task.done()
    cancelled_at = time.monotonic()
    cancel.set()
    result = await asyncio.wait_for(task, timeout=20)
    # Python dies of SIGTERM at once: no wait for the grace period.
    assert time.monotonic() - cancelled_at < runner.settings.grace_s
    assert result.status is JobStatus.CANCELLED
    assert sink.stdout == b"started"
    assert await leftover_container_ids(runner) == []


async def test_cancel_before_start_runs_nothing(runner: DockerRunner) -> None:
    """A job cancelled before run() starts no container and ends CANCELLED."""
    cancel = asyncio.Event()
    cancel.set()
    sink = Collected()
    result = await runner.run(RunSpec("early", "print('never')"), sink, cancel)
    assert result == RunResult(JobStatus.CANCELLED, None)
    assert sink.pieces == []


async def test_timeout_ends_job_as_timed_out(runner: DockerRunner) -> None:
    """A job past its wall-clock timeout is stopped and reported TIMED_OUT with a reason."""
    started = time.monotonic()
    result, sink = await run(
        runner, "import time\nprint('working')\ntime.sleep(60)\n", timeout_s=1.0
    )
    assert result.status is JobStatus.TIMED_OUT
    assert result.error == "timed out after 1 s"
    assert sink.stdout == b"working\n"
    assert time.monotonic() - started < 1.0 + runner.settings.grace_s


async def test_job_ignoring_sigterm_is_killed_after_grace(docker_engine: str) -> None:
    """SIGTERM, then SIGKILL once the grace period is over."""
    script = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: print('ignoring SIGTERM', flush=True))\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    for runtime in RUNTIMES:
        runner = DockerRunner(_settings(docker_engine, runtime, grace_s=1.0))
        try:
            sink = Collected()
            cancel = asyncio.Event()
            task = asyncio.create_task(runner.run(RunSpec("stubborn", script), sink, cancel))
            await asyncio.wait_for(sink.first.wait(), timeout=20)
            cancel.set()
            result = await asyncio.wait_for(task, timeout=20)
        finally:
            await runner.close()
        assert result.status is JobStatus.CANCELLED, runtime
        assert result.exit_code == 137, runtime
        assert sink.stdout == b"ready\nignoring SIGTERM\n", runtime


async def test_no_network_inside(runner: DockerRunner) -> None:
    """Only the loopback interface exists and connecting out fails."""
    script = (
        "import json, socket\n"
        "try:\n"
        "    socket.create_connection(('1.1.1.1', 53), timeout=3)\n"
        "    outcome = 'connected'\n"
        "except OSError as exc:\n"
        "    outcome = type(exc).__name__\n"
        "print(json.dumps({'connect': outcome,\n"
        "    'interfaces': [name for _, name in socket.if_nameindex()]}))\n"
    )
    result, sink = await run(runner, script)
    assert result.status is JobStatus.SUCCEEDED
    seen = json.loads(sink.stdout)
    assert seen["connect"] != "connected"
    assert seen["interfaces"] == ["lo"]


async def test_memory_limit_is_enforced(docker_engine: str) -> None:
    """Touching 4x the memory limit kills the job; it fails with a sentence saying why."""
    script = "print('allocating', flush=True)\nblob = b'x' * (256 * 1024 * 1024)\nprint('no')\n"
    for runtime in RUNTIMES:
        limits = Limits(memory_bytes=64 * MiB)
        runner = DockerRunner(_settings(docker_engine, runtime, limits=limits))
        try:
            result, sink = await run(runner, script)
        finally:
            await runner.close()
        assert result.status is JobStatus.FAILED, runtime
        assert result.exit_code == 137, runtime
        assert result.error == "ran out of memory (limit 64 MiB)", runtime
        assert sink.stdout == b"allocating\n", runtime


async def test_pids_limit_is_enforced(docker_engine: str) -> None:
    """The job cannot have more processes and threads than the limit."""
    script = (
        "import threading, time\n"
        "started = 0\n"
        "try:\n"
        "    for _ in range(200):\n"
        "        threading.Thread(target=time.sleep, args=(5,), daemon=True).start()\n"
        "        started += 1\n"
        "except RuntimeError:\n"
        "    pass\n"
        "print(started)\n"
    )
    for runtime in RUNTIMES:
        runner = DockerRunner(_settings(docker_engine, runtime, limits=Limits(pids=32)))
        try:
            result, sink = await run(runner, script)
        finally:
            await runner.close()
        assert result.status is JobStatus.SUCCEEDED, runtime
        # tini and the main thread count too.
        assert 0 < int(sink.stdout) <= 30, runtime


async def test_container_removed_after_each_run(runner: DockerRunner) -> None:
    """No container of this node is left after success, failure or a timeout."""
    await run(runner, "print('ok')")
    await run(runner, "raise SystemExit(2)")
    await run(runner, "import time\ntime.sleep(30)", timeout_s=0.5)
    assert await leftover_container_ids(runner) == []


async def test_cancelling_run_task_removes_container(runner: DockerRunner) -> None:
    """Cancelling the run() task itself kills and removes the container, then re-raises."""
    sink = Collected()
    job = RunSpec(job_id="abandoned", script="import time\nprint('up')\ntime.sleep(30)\n")
    task = asyncio.create_task(runner.run(job, sink, asyncio.Event()))
    await asyncio.wait_for(sink.first.wait(), timeout=20)
    [running] = await leftover_container_ids(runner)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=20)
    # Removed before run() re-raised, not in the background.
    assert running not in await managed_container_ids(runner.settings.node_id)


async def test_prepare_removes_orphans_of_this_node_only(
    docker_engine: str, tmp_path: Path
) -> None:
    """prepare() removes containers a crashed agent of this node left, not other nodes'."""
    write_site(tmp_path)
    mine = _settings(docker_engine, "runc")
    other = _settings(docker_engine, "runc")
    docker = connect()
    try:
        for settings in (mine, mine, other):
            key = sandbox_key(settings, "runc", None)
            config = container_config(key, settings.node_id, tmp_path, pooled=False)
            config["Cmd"] = ["python3", "-c", "import time; time.sleep(60)"]
            container = await docker.containers.create(config)
            await container.start()
        runner = DockerRunner(mine)
        try:
            await runner.prepare()
        finally:
            await runner.close()
        assert await managed_container_ids(mine.node_id) == []
        assert len(await managed_container_ids(other.node_id)) == 1
    finally:
        for container in await docker.containers.list(
            all=True, filters={"label": [f"compound.node_id={other.node_id}"]}
        ):
            await container.delete(force=True)
        await docker.close()


async def test_missing_image_fails_with_a_sentence(docker_engine: str) -> None:
    """A missing image: prepare() raises, run() is FAILED with no exit code and says why."""
    runner = DockerRunner(_settings("compound-test-missing:none", "runc"))
    try:
        with pytest.raises(EngineError, match="compound image ensure"):
            await runner.prepare()
        result, _ = await run(runner, "print('never')")
    finally:
        await runner.close()
    assert result.status is JobStatus.FAILED
    assert result.exit_code is None
    assert result.error == (
        "the image compound-test-missing:none is missing: run `compound image ensure`"
    )


async def test_engine_not_running_fails_with_a_sentence(tmp_path: object) -> None:
    """No engine at the address: prepare() raises and run() fails, both saying what to do."""
    settings = DockerRunnerSettings(docker_url="unix:///nonexistent/compound-docker.sock")
    runner = DockerRunner(settings)
    try:
        with pytest.raises(EngineError, match="Docker is not running"):
            await runner.prepare()
        result, _ = await run(runner, "print('never')")
    finally:
        await runner.close()
    assert result == RunResult(JobStatus.FAILED, None, NOT_RUNNING)


async def test_runtime_auto_prefers_gvisor(docker_engine: str) -> None:
    """The default runtime, auto, is gVisor when Docker has it (it does here), else runc."""
    runner = DockerRunner(_settings(docker_engine, "auto"))
    assert runner.runtime == "auto"
    try:
        await runner.prepare()
        assert runner.runtime == "runsc"
        result, sink = await run(runner, "import platform\nprint(platform.release())")
    finally:
        await runner.close()
    assert result.status is JobStatus.SUCCEEDED
    # gVisor reports its own kernel version, not the host's.
    assert sink.stdout.decode().strip() != os.uname().release
    assert DockerRunnerSettings().runtime == "auto"


def test_choose_runtime() -> None:
    """auto falls back to runc without gVisor; a named runtime must be registered."""
    assert choose_runtime("auto", {"runc": {}, "runsc": {}}) == "runsc"
    assert choose_runtime("auto", {"runc": {}}) == "runc"
    assert choose_runtime("runc", {"runc": {}, "runsc": {}}) == "runc"
    with pytest.raises(EngineError, match="runsc runtime is not registered"):
        choose_runtime("runsc", {"runc": {}})


def test_demuxer_reassembles_frames_split_anywhere() -> None:
    """Frames cut at every possible point come out whole, in order, same-stream joined."""
    frames = [(1, b"hello "), (1, b"world\n"), (2, b"oops\n"), (1, b""), (1, b"\xff\x00end")]
    wire = b"".join(
        bytes([kind, 0, 0, 0]) + len(data).to_bytes(4, "big") + data for kind, data in frames
    )
    for cut in range(len(wire) + 1):
        demuxer = FrameDemuxer()
        pieces = demuxer.feed(wire[:cut]) + demuxer.feed(wire[cut:])
        joined: dict[Stream, bytes] = {Stream.STDOUT: b"", Stream.STDERR: b""}
        for stream, data in pieces:
            joined[stream] += data
        assert joined == {Stream.STDOUT: b"hello world\n\xff\x00end", Stream.STDERR: b"oops\n"}
        assert demuxer.pending_bytes == 0
    assert FrameDemuxer().feed(wire) == [
        (Stream.STDOUT, b"hello world\n"),
        (Stream.STDERR, b"oops\n"),
        (Stream.STDOUT, b"\xff\x00end"),
    ]
