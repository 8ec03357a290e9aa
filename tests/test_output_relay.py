"""The job's output through the launcher's relay: batched, yet complete, in order and prompt.

Real containers under runc and gVisor (see docker_env); ``test_relay_records`` checks the
record parser alone.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from tests.docker_env import RUNTIMES, Collected, run_job

from compound.agent.runners.base import RunSpec
from compound.agent.runners.docker.in_container import relay, stdio
from compound.agent.runners.docker.interleave import StderrUnframer
from compound.agent.runners.docker.runner import DockerRunner, DockerRunnerSettings
from compound.protocol import JobStatus, Stream

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(params=RUNTIMES)
async def runner(request: pytest.FixtureRequest, docker_engine: str) -> AsyncIterator[DockerRunner]:
    settings = DockerRunnerSettings(
        image=docker_engine,
        runtime=request.param,
        node_id=f"test-{uuid.uuid4().hex[:12]}",
        grace_s=2.0,
    )
    runner = DockerRunner(replace(settings))
    await runner.prepare()
    yield runner
    await runner.close()


def _runs(pieces: list[tuple[Stream, bytes]]) -> list[tuple[Stream, bytes]]:
    """Consecutive pieces of one stream joined."""
    runs: list[tuple[Stream, bytes]] = []
    for stream, data in pieces:
        if runs and runs[-1][0] is stream:
            runs[-1] = (stream, runs[-1][1] + data)
        else:
            runs.append((stream, data))
    return runs


def test_relay_constants_match_stdio() -> None:
    """The job's writer and the launcher's reader agree on the ring's format."""
    names = ("RING_FD", "KICK_FD", "ANSWER_FD", "KICK_WAIT", "MAGIC", "OWNER_AT")
    names += ("WRITTEN_AT", "READ_AT", "DATA_AT", "RING_BYTES", "RECORD_HEAD_BYTES")
    assert {n: getattr(relay, n) for n in names} == {n: getattr(stdio, n) for n in names}


def test_relay_records() -> None:
    """Records come out as runs per stream in order; a broken record is refused."""

    def record(fd: int, data: bytes) -> bytes:
        return bytes((fd,)) + len(data).to_bytes(4, "little") + data

    data = record(1, b"a") + record(1, b"b") + record(2, b"c") + record(1, b"d")
    assert relay._records(data) == [(1, b"ab"), (2, b"c"), (1, b"d")]
    assert relay._records(data[:-1]) is None
    assert relay._records(record(3, b"x")) is None


async def test_interleaved_streams_keep_write_order(runner: DockerRunner) -> None:
    """Lines written to stdout and stderr in turn, back to back, reach the agent in write
    order (the job's stderr travels framed on stdout, see interleave), each stream exact."""
    script = (
        "import sys\n"
        "for i in range(300):\n"
        "    print(f'out {i}')\n"
        "    print(f'err {i}', file=sys.stderr)\n"
    )
    result, sink = await run_job(runner, script)
    assert result.status is JobStatus.SUCCEEDED
    # Pieces of one stream may be cut anywhere: join them before tagging lines.
    tagged = b"".join(
        b"[%s]%s\n" % (stream.value.encode(), line)
        for stream, data in _runs(sink.pieces)
        for line in data.splitlines()
    )
    assert tagged == b"".join(b"[stdout]out %d\n[stderr]err %d\n" % (i, i) for i in range(300))
    assert sink.stderr == b"".join(b"err %d\n" % i for i in range(300))


def test_unframer_splits_at_any_chunk_boundary() -> None:
    """Stderr frames on stdout come out in place however the bytes are cut into chunks."""
    marker = b"\x00\xffcompound-outputs:" + b"0123456789abcdef" * 2
    tag = relay.stderr_tag(marker)
    stdout = b"a\x00b" + tag + (3).to_bytes(4, "big") + b"err" + b"c\x00" + tag[:5] + b"d"
    stdout += b"".join(relay._stderr_frames(tag, b"E" * 10_000)) + b"\x00\xfe"
    expected = [
        (Stream.STDOUT, b"a\x00b"),
        (Stream.STDERR, b"err"),
        (Stream.STDOUT, b"c\x00" + tag[:5] + b"d"),
        (Stream.STDERR, b"E" * 10_000),
        (Stream.STDOUT, b"\x00\xfe"),
    ]
    for size in (1, 2, 7, 64, 4096, len(stdout)):
        unframer = StderrUnframer(marker)
        pieces: list[tuple[Stream, bytes]] = []
        for at in range(0, len(stdout), size):
            pieces += unframer.feed(stdout[at : at + size])
        pieces += unframer.end()
        assert _runs(pieces) == expected, size


async def test_output_before_os_exit_is_kept(runner: DockerRunner) -> None:
    """A job that writes and then calls ``os._exit`` loses none of its output."""
    script = (
        "import os, sys\n"
        "for i in range(5000):\n"
        "    print(f'line {i}')\n"
        "print('last words', file=sys.stderr)\n"
        "os._exit(3)\n"
    )
    result, sink = await run_job(runner, script)
    assert result.exit_code == 3
    assert sink.stdout == b"".join(b"line %d\n" % i for i in range(5000))
    assert sink.stderr == b"last words\n"


async def test_output_of_a_job_killed_by_its_timeout_is_kept(runner: DockerRunner) -> None:
    """A job killed at its timeout (SIGTERM ignored, then SIGKILL) loses none of its output."""
    script = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "for i in range(3000):\n"
        "    print(f'line {i}')\n"
        "print('waiting', file=sys.stderr)\n"
        "time.sleep(60)\n"
    )
    result, sink = await run_job(runner, script, timeout_s=3)
    assert result.status is JobStatus.TIMED_OUT
    assert sink.stdout == b"".join(b"line %d\n" % i for i in range(3000))
    assert sink.stderr == b"waiting\n"


async def test_subprocess_output_keeps_its_place(runner: DockerRunner) -> None:
    """A child program's output comes after what the job printed before starting it."""
    script = (
        "import os, subprocess\n"
        "print('before')\n"
        "subprocess.run(['echo', 'child'], check=True)\n"
        "os.write(1, b'raw\\n')\n"
        "print('after')\n"
    )
    result, sink = await run_job(runner, script)
    assert result.status is JobStatus.SUCCEEDED
    assert sink.stdout == b"before\nchild\nraw\nafter\n"


async def test_a_line_then_sleep_shows_promptly(runner: DockerRunner) -> None:
    """A line printed before a sleep reaches the agent within a bound of being printed."""
    script = "import time\nprint(time.time(), flush=True)\ntime.sleep(20)\n"
    sink = Collected()
    cancel = asyncio.Event()
    job = RunSpec(job_id=uuid.uuid4().hex, script=script)
    task = asyncio.create_task(runner.run(job, sink, cancel))
    try:
        await asyncio.wait_for(sink.first.wait(), timeout=30)
        arrived = time.time()
        printed = float(sink.of(Stream.STDOUT).split()[0])
        # The relay's tick is 20 ms; the engine's path adds a few ms, a loaded machine more.
        assert arrived - printed < 0.15 * 3, f"{arrived - printed:.3f} s"
    finally:
        cancel.set()
        await asyncio.wait_for(task, timeout=30)


async def test_a_job_scribbling_on_the_ring_only_loses_its_own_output(
    runner: DockerRunner,
) -> None:
    """Garbage a job writes over the ring's head ends the relay, not the job or its result."""
    script = (
        "import os, sys\n"
        "print('before')\n"
        "os.pwrite(100, b'\\xff' * 16, 16)\n"
        "for i in range(3):\n"
        "    print(f'after {i}')\n"
        "sys.exit(7)\n"
    )
    result, sink = await run_job(runner, script)
    assert result.exit_code == 7
    assert sink.stdout.startswith(b"before\n") or sink.stdout == b""


async def test_a_big_stderr_write_keeps_its_place(runner: DockerRunner) -> None:
    """A 1 MiB write to stderr between two stdout lines arrives whole and between them."""
    script = "import sys\nprint('before')\nsys.stderr.write('e' * (1 << 20))\nprint('after')\n"
    result, sink = await run_job(runner, script)
    assert result.status is JobStatus.SUCCEEDED
    assert _runs(sink.pieces) == [
        (Stream.STDOUT, b"before\n"),
        (Stream.STDERR, b"e" * (1 << 20)),
        (Stream.STDOUT, b"after\n"),
    ]
