"""The result of a run comes from the launcher's end frame, not from the container's end.

Real Docker, runc and gVisor: the exit code travels in the trailer's footer, the job's
output (both streams) is complete and exact when run() returns, and the container's wait
and removal happen afterwards, in the background.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from compound.agent.runners.docker.runner import DockerRunner, DockerRunnerSettings
from compound.agent.runners.docker.spec import TRAILER_MARKER_PREFIX
from compound.protocol import JobStatus
from docker_env import RUNTIMES, leftover_container_ids, managed_container_ids, run_job

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=RUNTIMES)
async def runner(request: pytest.FixtureRequest, docker_engine: str) -> AsyncIterator[DockerRunner]:
    settings = DockerRunnerSettings(
        image=docker_engine, runtime=request.param, node_id=f"test-{uuid.uuid4().hex[:12]}"
    )
    runner = DockerRunner(settings)
    await runner.prepare()
    yield runner
    await runner.close()


async def test_result_does_not_wait_for_the_container_removal(runner: DockerRunner) -> None:
    """run() returns while the job's container still exists; it is removed afterwards."""
    result, sink = await run_job(runner, "print('done')")
    assert result.status is JobStatus.SUCCEEDED and result.exit_code == 0
    assert sink.stdout == b"done\n"
    warm = runner.warm_container_ids()
    # The removal is a background task that has not run yet when run() returns.
    still_there = set(await managed_container_ids(runner.settings.node_id)) - warm
    assert still_there
    assert await leftover_container_ids(runner) == []


async def test_exit_codes_and_signals_come_through_the_footer(runner: DockerRunner) -> None:
    """Plain exit codes, a job ended by SIGTERM and one by SIGKILL keep their codes."""
    result, _ = await run_job(runner, "raise SystemExit(3)")
    assert (result.status, result.exit_code, result.error) == (JobStatus.FAILED, 3, None)
    script = "import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\n"
    result, _ = await run_job(runner, script)
    assert (result.status, result.exit_code, result.error) == (JobStatus.FAILED, 143, None)
    # SIGKILL: the engine is asked whether it was the out-of-memory killer (it was not).
    script = "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n"
    result, _ = await run_job(runner, script)
    assert (result.status, result.exit_code, result.error) == (JobStatus.FAILED, 137, None)


async def test_stderr_written_right_before_exit_all_arrives(runner: DockerRunner) -> None:
    """Lots of stderr (and stdout) written just before exit is all there, exact, in order."""
    script = (
        "import os, sys\n"
        "for i in range(2000):\n"
        "    os.write(2, b'e%05d' % i + b'.' * 500 + b'\\n')\n"
        "    if i % 100 == 0:\n"
        "        os.write(1, b'o%05d\\n' % i)\n"
        "os.write(2, b'last words without newline')\n"
        "raise SystemExit(5)\n"
    )
    want_err = b"".join(b"e%05d" % i + b"." * 500 + b"\n" for i in range(2000))
    want_err += b"last words without newline"
    want_out = b"".join(b"o%05d\n" % i for i in range(0, 2000, 100))
    for _ in range(3):
        result, sink = await run_job(runner, script)
        assert (result.status, result.exit_code) == (JobStatus.FAILED, 5)
        assert sink.stderr == want_err
        assert sink.stdout == want_out


async def test_marker_look_alikes_on_stderr_pass_through(runner: DockerRunner) -> None:
    """A job's stderr ending in a prefix of the trailer's marker reaches the sink unchanged."""
    tail = TRAILER_MARKER_PREFIX[:-1]
    script = (
        f"import os\nos.write(2, b'x' + {TRAILER_MARKER_PREFIX!r} + b'y')\nos.write(2, {tail!r})\n"
    )
    result, sink = await run_job(runner, script)
    assert result.status is JobStatus.SUCCEEDED
    assert sink.stderr == b"x" + TRAILER_MARKER_PREFIX + b"y" + tail
