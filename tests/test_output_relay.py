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
    """Bursts written to stdout and stderr in turn reach the agent whole and in write order.

    The engine carries the two streams on two pipes, so only writes apart in time keep
    their order across streams (as without the relay); within a stream every byte does.
    """
    script = (
        "import sys, time\n"
        "for i in range(4):\n"
        "    for j in range(200):\n"
        "        print(f'out {i}.{j}')\n"
        "    time.sleep(0.2)\n"
        "    for j in range(200):\n"
        "        print(f'err {i}.{j}', file=sys.stderr)\n"
        "    time.sleep(0.2)\n"
    )
    result, sink = await run_job(runner, script)
    assert result.status is JobStatus.SUCCEEDED
    runs: list[tuple[Stream, bytes]] = []
    for stream, data in sink.pieces:
        if runs and runs[-1][0] is stream:
            runs[-1] = (stream, runs[-1][1] + data)
        else:
            runs.append((stream, data))
    expected = []
    for i in range(4):
        expected.append((Stream.STDOUT, b"".join(b"out %d.%d\n" % (i, j) for j in range(200))))
        expected.append((Stream.STDERR, b"".join(b"err %d.%d\n" % (i, j) for j in range(200))))
    assert runs == expected


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
