"""Containers kept for their submitter's next job, against the real Docker engine.

A container whose job ended by itself runs the next job of the same tenant (the
coordinator's opaque name for its submitter) and of no one else; that job finds nothing of
the last one: no file, process or variable, and the environment of a fresh container.
"""

from __future__ import annotations

import asyncio
import json
import tarfile
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from compound.agent.runners.base import RunResult, RunSpec
from compound.agent.runners.docker.reuse import ReuseStash
from compound.agent.runners.docker.runner import DockerRunner, DockerRunnerSettings
from compound.protocol import JobStatus, Stream
from docker_env import RUNTIMES, Collected, managed_container_ids, prepared_runner, run_job
from support import Agent, Coordinator, stream_text, wait_until

pytestmark = pytest.mark.timeout(120)

ALICE = "a1" * 16
BOB = "b2" * 16
HOST = "import os; print(os.uname().nodename)"
# A job that leaves everything it can behind: files in every writable place (one in a
# folder it took its own rights away from), processes that outlive it (one ignoring
# SIGTERM), variables in its environment.
LITTER = r"""
import os, subprocess, sys
for place in ('/tmp', '/dev/shm', '/job'):
    open(os.path.join(place, 'litter'), 'w').write('first job')
os.makedirs('/tmp/locked/inner')
open('/tmp/locked/inner/secret', 'w').write('first job')
os.chmod('/tmp/locked/inner', 0)
os.chmod('/tmp/locked', 0)
os.makedirs('/job/outputs/kept')
open('/job/outputs/kept/result', 'w').write('first job')
os.environ['SET_BY_FIRST'] = '1'
for code in ('import time; time.sleep(300)',
             'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)'):
    subprocess.Popen([sys.executable, '-c', code], start_new_session=True)
print(os.uname().nodename)
"""
LOOK = r"""
import json, os, sys
modules, path = sorted(sys.modules), list(sys.path)
def cmdline(pid):
    try:
        return open(f'/proc/{pid}/cmdline', 'rb').read().replace(b'\0', b' ').decode()
    except OSError:
        return '?'
print(json.dumps({
    'tmp': sorted(os.listdir('/tmp')), 'shm': sorted(os.listdir('/dev/shm')),
    'job': sorted(os.listdir('/job')), 'outputs': sorted(os.listdir('/job/outputs')),
    'processes': sorted(cmdline(p) for p in os.listdir('/proc') if p.isdigit()),
    'env': dict(os.environ), 'host': os.uname().nodename,
    'modules': modules, 'path': path, 'argv': sys.argv, 'flags': str(sys.flags),
}))
"""
# stdout and stderr in turns, a partial last line, then an exit that flushes nothing.
INTERLEAVED = r"""
import os, sys
for i in range(3000):
    print(f'out {i}')
    print(f'err {i}', file=sys.stderr)
sys.stdout.write('no newline')
os._exit(3)
"""


def _settings(image: str, runtime: str, **changes: object) -> DockerRunnerSettings:
    base = DockerRunnerSettings(
        image=image,
        runtime=runtime,
        node_id=f"reuse-{uuid.uuid4().hex[:12]}",
        grace_s=3.0,
        warm=1,
        reuse=2,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


async def _host(runner: DockerRunner, tenant: str | None) -> str:
    result, sink = await run_job(runner, HOST, tenant=tenant)
    assert result == RunResult(JobStatus.SUCCEEDED, 0), (result, sink.stderr)
    return sink.stdout.decode().strip()


@pytest.mark.parametrize("runtime", RUNTIMES)
async def test_a_kept_container_runs_its_submitters_next_job_with_nothing_of_the_last(
    runtime: str, docker_engine: str, runners: list[DockerRunner]
) -> None:
    """The second job of a tenant runs in the first one's container (same host name) and
    sees no file, process or variable of it: the environment, modules, path and flags of a
    fresh container's job."""
    runner = await prepared_runner(runners, _settings(docker_engine, runtime))
    first, first_out = await run_job(runner, LITTER, env={"GIVEN": "secret"}, tenant=ALICE)
    assert first.status is JobStatus.SUCCEEDED, first_out.stderr
    assert first.outputs_tar is not None  # the first job's outputs came back
    assert len(runner.reuse) == 1
    second, second_out = await run_job(runner, LOOK, env={"SECOND": "2"}, tenant=ALICE)
    assert second == RunResult(JobStatus.SUCCEEDED, 0)
    assert runner.reuse.hits == 1
    seen = json.loads(second_out.stdout)
    assert seen["host"] == first_out.stdout.decode().strip()
    assert (seen["tmp"], seen["shm"]) == ([], [])
    assert (seen["job"], seen["outputs"]) == (["main.py", "outputs"], [])
    assert not any("time.sleep(300)" in command for command in seen["processes"])
    assert "GIVEN" not in seen["env"] and "SET_BY_FIRST" not in seen["env"]

    cold = await prepared_runner(runners, _settings(docker_engine, runtime, warm=0, reuse=0))
    _, cold_out = await run_job(cold, LOOK, env={"SECOND": "2"})
    cold_seen = json.loads(cold_out.stdout)
    for report in (seen, cold_seen):
        del report["env"]["HOSTNAME"], report["host"]
        # The job's own interpreter and the launcher; their pids differ, not their count.
        report["processes"] = len(report["processes"])
    assert seen == cold_seen


async def test_a_kept_container_never_runs_another_submitters_job(
    docker_engine: str, runners: list[DockerRunner]
) -> None:
    """Jobs of bob, and jobs with no tenant at all, never run in a container kept for
    alice; a job with no tenant leaves no container behind."""
    runner = await prepared_runner(runners, _settings(docker_engine, "runc"))
    alice = await _host(runner, ALICE)
    bob = await _host(runner, BOB)
    nobody = await _host(runner, None)
    assert len({alice, bob, nobody}) == 3
    assert len(runner.reuse) == 2  # alice's and bob's
    assert await _host(runner, ALICE) == alice
    assert await _host(runner, BOB) == bob
    assert runner.reuse.hits == 2


@pytest.mark.parametrize(
    ("script", "timeout_s", "status", "exit_code"),
    [
        ("import time; time.sleep(60)", 1.0, JobStatus.TIMED_OUT, None),
        ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", None, JobStatus.FAILED, 137),
        # The launcher itself killed: no trailer, the container ends.
        ("import os, signal; os.kill(os.getppid(), signal.SIGKILL)", None, JobStatus.FAILED, None),
    ],
    ids=["timed-out", "killed-by-a-signal", "launcher-killed"],
)
async def test_a_job_that_did_not_end_by_itself_leaves_its_container_to_no_one(
    script: str,
    timeout_s: float | None,
    status: JobStatus,
    exit_code: int | None,
    docker_engine: str,
    runners: list[DockerRunner],
) -> None:
    """A job stopped, killed or whose launcher died is not kept: the next job of the same
    submitter runs in another container, and no container is left behind."""
    runner = await prepared_runner(runners, _settings(docker_engine, "runc"))
    before = await _host(runner, ALICE)
    assert len(runner.reuse) == 1
    result, _ = await run_job(runner, script, tenant=ALICE, timeout_s=timeout_s)
    assert result.status is status
    if exit_code is not None:
        assert result.exit_code == exit_code
    assert len(runner.reuse) == 0
    after = await _host(runner, ALICE)
    assert after != before
    await runner.removals_done()
    await runner.warm_pool.filled()
    kept = {s.container.id for s in runner.reuse.sandboxes()}
    others = set(await managed_container_ids(runner.settings.node_id)) - kept
    assert others == runner.warm_container_ids()


async def test_a_job_that_exits_137_by_itself_is_told_at_once(
    docker_engine: str, runners: list[DockerRunner]
) -> None:
    """An exit code that looks like SIGKILL but was the job's own choice: the launcher's
    word stands (the container stays up, so there is nothing else to wait for)."""
    runner = await prepared_runner(runners, _settings(docker_engine, "runc"))
    result, _ = await asyncio.wait_for(
        run_job(runner, "import sys; sys.exit(137)", tenant=ALICE), timeout=20
    )
    assert (result.status, result.exit_code) == (JobStatus.FAILED, 137)
    assert len(runner.reuse) == 1


async def test_a_cancelled_job_leaves_its_container_to_no_one(
    docker_engine: str, runners: list[DockerRunner]
) -> None:
    """A job cancelled mid-run is not kept."""
    runner = await prepared_runner(runners, _settings(docker_engine, "runc"))
    before = await _host(runner, ALICE)
    sink = Collected()
    cancel = asyncio.Event()
    spec = RunSpec(
        job_id=uuid.uuid4().hex,
        script="import time; print('up', flush=True); time.sleep(60)",
        tenant=ALICE,
    )
    running = asyncio.create_task(runner.run(spec, sink, cancel))
    await asyncio.wait_for(sink.first.wait(), 20)
    cancel.set()
    result = await asyncio.wait_for(running, 30)
    assert result.status is JobStatus.CANCELLED
    assert len(runner.reuse) == 0
    assert await _host(runner, ALICE) != before


@pytest.mark.parametrize("runtime", RUNTIMES)
async def test_output_of_a_kept_containers_next_job_is_whole_and_in_order(
    runtime: str, docker_engine: str, runners: list[DockerRunner]
) -> None:
    """Through the renewed output relay: stdout and stderr in the order written, the
    partial last line of a job that ends with os._exit, its exit code."""
    runner = await prepared_runner(runners, _settings(docker_engine, runtime))
    host = await _host(runner, ALICE)
    script = INTERLEAVED.replace("import os, sys", "import os, sys\nprint(os.uname().nodename)")
    result, sink = await run_job(runner, script, tenant=ALICE)
    assert (result.status, result.exit_code) == (JobStatus.FAILED, 3)
    assert runner.reuse.hits == 1
    runs: list[tuple[Stream, bytes]] = []  # pieces of one stream in a row, joined
    for stream, data in sink.pieces:
        if runs and runs[-1][0] is stream:
            runs[-1] = (stream, runs[-1][1] + data)
        else:
            runs.append((stream, data))
    lines: list[str] = []
    for stream, data in runs:
        tag = "out" if stream is Stream.STDOUT else "err"
        lines += [f"{tag}:{line}" for line in data.decode().splitlines()]
    expected = [f"out:{host}"]
    for i in range(3000):
        expected += [f"out:out {i}", f"err:err {i}"]
    assert lines == [*expected, "out:no newline"]


async def test_a_kept_containers_next_job_gets_its_own_inputs_and_outputs(
    docker_engine: str, runners: list[DockerRunner], tmp_path: Path
) -> None:
    """Input files and outputs/ are the job's own in a kept container: the last job's are
    gone before the next one's arrive."""
    runner = await prepared_runner(runners, _settings(docker_engine, "runc"))
    script = (
        "import os; print(sorted(os.listdir('.'))); "
        "open('outputs/made', 'w').write(open(sorted(n for n in os.listdir('.') "
        "if n.endswith('.txt'))[0]).read())"
    )
    made = []
    for name in ("first.txt", "second.txt"):
        inputs = tmp_path / f"{name}.tar"
        source = tmp_path / name
        source.write_text(name)
        with tarfile.open(inputs, "w") as tar:
            tar.add(source, arcname=name)
        result, sink = await run_job(runner, script, tenant=ALICE, inputs_tar=inputs)
        assert result.status is JobStatus.SUCCEEDED, sink.stderr
        assert sink.stdout.decode().strip() == str(sorted([name, "main.py", "outputs"]))
        assert result.outputs_tar is not None
        with tarfile.open(result.outputs_tar) as tar:
            made.append({m.name: tar.extractfile(m).read() for m in tar if m.isfile()})  # type: ignore[union-attr]
    assert made == [{"made": b"first.txt"}, {"made": b"second.txt"}]
    assert runner.reuse.hits == 1


async def test_a_job_leaving_what_cannot_be_cleared_ends_its_container(
    docker_engine: str, runners: list[DockerRunner]
) -> None:
    """A folder tree deeper than the launcher clears: the container is not kept (the next
    job of the same submitter gets another one), and nothing reaches that job."""
    runner = await prepared_runner(runners, _settings(docker_engine, "runc"))
    deep = "import os\npath = '/tmp'\nfor _ in range(1500):\n    path += '/d'\n    os.mkdir(path)\n"
    result, sink = await run_job(runner, deep + HOST, tenant=ALICE)
    assert result.status is JobStatus.SUCCEEDED, sink.stderr
    assert len(runner.reuse) == 0
    result, look = await run_job(runner, LOOK, tenant=ALICE)
    assert json.loads(look.stdout)["tmp"] == []
    assert json.loads(look.stdout)["host"] != sink.stdout.decode().strip()


async def test_a_fork_bomb_leaves_nothing_for_its_submitters_next_job(
    docker_engine: str, runners: list[DockerRunner]
) -> None:
    """A job whose processes fork as fast as they can up to the pids limit: whether its
    container is kept or not, the next job of its submitter finds none of them."""
    runner = await prepared_runner(runners, _settings(docker_engine, "runc"))
    # The job's first process ends after a second; the others fork on.
    bomb = (
        "import os, time\nmain, end = os.getpid(), time.time() + 1\n"
        "while os.getpid() != main or time.time() < end:\n    try:\n        os.fork()\n"
        "    except OSError:\n        time.sleep(0.01)\n"
    )
    result, _ = await run_job(runner, bomb, tenant=ALICE, timeout_s=30.0)
    assert result.status is JobStatus.SUCCEEDED
    result, look = await run_job(runner, LOOK, tenant=ALICE)
    assert result.status is JobStatus.SUCCEEDED, look.stderr
    # tini, the launcher and the job itself: nothing else.
    assert len(json.loads(look.stdout)["processes"]) == 3


async def test_kept_containers_go_once_idle_and_when_the_runner_closes(
    docker_engine: str, runners: list[DockerRunner]
) -> None:
    """A kept container left idle past ``reuse_idle_s`` is removed; close() removes the
    others."""
    runner = await prepared_runner(runners, _settings(docker_engine, "runc", reuse_idle_s=0.5))
    await _host(runner, ALICE)
    assert len(runner.reuse) == 1
    deadline = asyncio.get_running_loop().time() + 10
    while len(runner.reuse) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    assert len(runner.reuse) == 0
    await runner.removals_done()
    await runner.warm_pool.filled()
    assert set(await managed_container_ids(runner.settings.node_id)) == (
        runner.warm_container_ids()
    )
    keeping = await prepared_runner(runners, _settings(docker_engine, "runc", warm=0))
    await _host(keeping, ALICE)
    await _host(keeping, BOB)
    assert len(keeping.reuse) == 2
    await keeping.close()
    assert await managed_container_ids(keeping.settings.node_id) == []


async def test_a_burst_of_one_submitter_starts_few_containers(
    docker_engine: str, runners: list[DockerRunner]
) -> None:
    """Twenty jobs of one submitter, two at a time, run in the kept containers: far fewer
    containers are started than jobs run."""
    runner = await prepared_runner(runners, _settings(docker_engine, "runc", warm=2))
    gate = asyncio.Semaphore(2)

    async def one(n: int) -> None:
        async with gate:
            result, sink = await run_job(runner, f"print({n})", tenant=ALICE)
            assert result == RunResult(JobStatus.SUCCEEDED, 0)
            assert sink.stdout == f"{n}\n".encode()

    await asyncio.gather(*(one(n) for n in range(20)))
    assert runner.reuse.hits >= 15


# ------------------------------------------------------------------ the stash on its own


async def test_the_stash_holds_its_size_hands_out_by_key_and_expires() -> None:
    """At most ``size`` kept (the oldest goes first), a take only of the asked key and
    filter, unusable ones discarded at take, idle ones discarded after ``idle_s``."""
    discarded: list[str] = []
    dead = {"dead"}
    stash: ReuseStash[str, str] = ReuseStash(2, lambda s: s not in dead, discarded.append, 0.2)
    stash.keep("a", "a1")
    stash.keep("b", "b1")
    stash.keep("a", "a2")
    assert discarded == ["a1"] and len(stash) == 2
    assert stash.take("c") is None
    assert stash.take("a", lambda s: s != "a2") is None
    assert stash.take("a") == "a2" and stash.hits == 1
    stash.keep("a", "dead")
    assert stash.take("a") is None and discarded == ["a1", "dead"]
    await asyncio.sleep(0.4)  # past idle_s: the clock is the point here
    assert len(stash) == 0 and discarded == ["a1", "dead", "b1"]
    stash.keep("a", "a3")
    stash.close()
    assert discarded[-1] == "a3" and len(stash) == 0


# ------------------------------------------------------- through a coordinator and agent


def test_an_agent_reuses_a_container_only_between_one_submitters_jobs(
    secured: tuple[Coordinator, dict[str, str]], tmp_path: Path
) -> None:
    """Through a real coordinator and agent: alice's jobs share a container, bob's job
    gets another (alice's stays kept meanwhile), and the agent's SIGTERM leaves no
    container behind."""
    coordinator, tokens = secured
    # Two slots: two containers kept, one for each submitter.
    agent = Agent(
        coordinator.url, tmp_path / "agent", token=tokens["worker"], extra_args=["--slots", "2"]
    ).start()
    try:
        hosts = [_run_as(coordinator, tokens[name]) for name in ("alice", "bob", "alice")]
        assert hosts[0] == hosts[2] != hosts[1]
    finally:
        agent.stop()
    wait_until(
        lambda: not asyncio.run(managed_container_ids(agent.node_id)),
        30,
        "the agent's containers to be removed",
    )


def _run_as(coordinator: Coordinator, token: str) -> str:
    """Run HOST as the owner of ``token``; what it printed."""
    headers = {"Authorization": f"Bearer {token}"}
    response = coordinator.api("POST", "/api/v1/jobs", json={"script": HOST}, headers=headers)
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]

    def status() -> str | None:
        job = coordinator.api("GET", f"/api/v1/jobs/{job_id}", headers=headers).json()
        return str(job["status"]) if job["status"] in ("succeeded", "failed") else None

    assert wait_until(status, 60, f"job {job_id} to end") == "succeeded"
    page = coordinator.api("GET", f"/api/v1/jobs/{job_id}/logs", headers=headers).json()
    return stream_text(page["records"]).strip()
