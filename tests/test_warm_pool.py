"""The warm sandbox pool against the real Docker engine, with runc and with gVisor (runsc)."""

from __future__ import annotations

import asyncio
import json
import marshal
import os
import shutil
import subprocess
import tarfile
import tempfile
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from compound.agent.runners.base import Limits, MiB, RunResult
from compound.agent.runners.docker.engine import connect
from compound.agent.runners.docker.in_container.launcher import (
    HEADER_LENGTH,
    LAUNCH_FAILED_EXIT,
    MARSHAL_FORMAT,
)
from compound.agent.runners.docker.payload import (
    BOOTSTRAP_SOURCE,
    SITECUSTOMIZE,
    PayloadTooBig,
    Section,
    job_sections,
    payload,
)
from compound.agent.runners.docker.runner import DockerRunner, DockerRunnerSettings, write_site
from compound.agent.runners.docker.spec import (
    JOB_UID,
    MANAGED_LABEL,
    NODE_LABEL,
    POOL_LABEL,
    SITE_DIR,
    SITECUSTOMIZE_NAME,
    container_config,
    files_control,
    launcher_boot,
    sandbox_key,
)
from compound.agent.runners.docker.warm_pool import WarmPool
from compound.desktop.settings import AppSettings, SettingsError, settings_from_dict
from compound.desktop.sidecar import agent_command
from compound.protocol import JobStatus
from docker_env import (
    RUNTIMES,
    leftover_container_ids,
    managed_container_ids,
    prepared_runner,
    run_job,
)

pytestmark = pytest.mark.timeout(90)

# The first job leaves everything it can behind: files in every writable place, a process
# that outlives it, variables in its environment (given and set).
LITTER = """
import os, subprocess, sys
for place in ('/tmp', '/dev/shm'):
    open(os.path.join(place, 'litter'), 'w').write('first job')
open('/job/litter', 'w').write('first job')
os.environ['SET_BY_FIRST'] = '1'
subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'], start_new_session=True)
print(os.uname().nodename)
"""
# The second job reports what it can see.
LOOK = """
import json, os
def cmdline(pid):
    try:
        return open(f'/proc/{pid}/cmdline', 'rb').read().replace(b'\\0', b' ').decode()
    except OSError:
        return '?'
pids = [p for p in os.listdir('/proc') if p.isdigit()]
print(json.dumps({
    'tmp': sorted(os.listdir('/tmp')), 'shm': sorted(os.listdir('/dev/shm')),
    'job': sorted(os.listdir('/job')),
    'processes': sorted(cmdline(p) for p in pids),
    'env': dict(os.environ), 'init_env': open('/proc/1/environ', 'rb').read().decode(),
    'host': os.uname().nodename,
}))
"""


def _settings(image: str, runtime: str, **changes: object) -> DockerRunnerSettings:
    base = DockerRunnerSettings(
        image=image, runtime=runtime, node_id=f"warm-{uuid.uuid4().hex[:12]}", grace_s=5.0
    )
    return replace(base, **changes)  # type: ignore[arg-type]


run = run_job


async def _pooled_ids(node_id: str) -> list[str]:
    docker = connect()
    try:
        labels = [f"{MANAGED_LABEL}=1", f"{NODE_LABEL}={node_id}", f"{POOL_LABEL}=1"]
        found = await docker.containers.list(all=True, filters={"label": labels})
        return [c.id for c in found]
    finally:
        await docker.close()


@pytest.mark.parametrize("runtime", RUNTIMES)
async def test_pooled_job_sees_nothing_of_the_job_before(
    runtime: str, docker_engine: str, runners: list[DockerRunner]
) -> None:
    """Two jobs in a row through a pool of 1: the second sees no file, process or variable
    of the first, and exactly the environment a freshly started container gives."""
    runner = await prepared_runner(runners, _settings(docker_engine, runtime, warm=1))
    first, first_out = await run(runner, LITTER, env={"GIVEN_TO_FIRST": "secret"})
    assert (first.status, first.exit_code, first.error) == (JobStatus.SUCCEEDED, 0, None)
    await runner.warm_pool.filled()
    second, second_out = await run(runner, LOOK, env={"SECOND": "2"})
    assert second == RunResult(JobStatus.SUCCEEDED, 0)
    assert runner.warm_pool.hits == 2  # both jobs ran in containers started ahead
    seen = json.loads(second_out.stdout)
    assert seen["host"] != first_out.stdout.decode().strip()
    assert (seen["tmp"], seen["shm"], seen["job"]) == ([], [], ["main.py", "outputs"])
    assert not any("time.sleep(300)" in command for command in seen["processes"])
    assert "GIVEN_TO_FIRST" not in seen["env"] and "SET_BY_FIRST" not in seen["env"]
    # tini (PID 1) never had the job's variables: the launcher passes them to exec only.
    assert "SECOND" not in seen["init_env"]

    cold = await prepared_runner(runners, _settings(docker_engine, runtime, warm=0))
    _, cold_out = await run(cold, LOOK, env={"SECOND": "2"})
    cold_seen = json.loads(cold_out.stdout)
    assert cold.warm_pool.hits == 0
    for report in (seen, cold_seen):
        del report["env"]["HOSTNAME"], report["host"]
    assert seen["env"] == cold_seen["env"]
    assert seen["env"]["SECOND"] == "2" and seen["env"]["HOME"] == "/tmp"


async def test_pool_refills_and_never_exceeds_its_size(
    docker_engine: str, runners: list[DockerRunner]
) -> None:
    """A pool of 2 holds 2 started containers before, between and after jobs, never more."""
    runner = await prepared_runner(runners, _settings(docker_engine, "runc", warm=2))
    node = runner.settings.node_id
    assert len(await _pooled_ids(node)) == 2
    for n in range(3):
        result, sink = await run(runner, f"print({n})")
        assert result == RunResult(JobStatus.SUCCEEDED, 0)
        assert sink.stdout == f"{n}\n".encode()
        assert await leftover_container_ids(runner) == []
        assert len(await _pooled_ids(node)) == 2
    assert runner.warm_pool.hits == 3
    await runner.close()
    assert await managed_container_ids(node) == []


async def test_refill_starts_sandboxes_side_by_side() -> None:
    """A pool of 3 starts its 3 sandboxes at once (each start here finishes only once all 3
    are under way), and a take is followed by exactly one more start."""
    started: list[int] = []
    all_under_way = asyncio.Event()

    async def start(key: str) -> int:
        started.append(len(started))
        if len(started) >= 3:
            all_under_way.set()
        await all_under_way.wait()
        return started[-1]

    pool: WarmPool[str, int] = WarmPool(3, start, lambda _: True, lambda _: None)
    pool.refill("k")
    await asyncio.wait_for(pool.filled(), 5)
    assert pool.idle_count == 3 and len(started) == 3
    assert await pool.take_ready("k") is not None
    pool.refill("k")
    await asyncio.wait_for(pool.filled(), 5)
    assert pool.idle_count == 3 and len(started) == 4
    await pool.close()
    assert pool.idle_count == 0


async def test_closing_lets_a_start_in_flight_finish_and_discards_it() -> None:
    """A sandbox still starting when the pool closes is waited for and discarded, not
    cancelled half-way (the engine could keep a container nobody removes: found by the
    fault harness as an Exited (125) warm container after a clean SIGTERM)."""
    release = asyncio.Event()
    discarded: list[int] = []
    finished: list[int] = []

    async def start(key: str) -> int:
        await release.wait()
        finished.append(1)
        return 1

    pool: WarmPool[str, int] = WarmPool(1, start, lambda _: True, discarded.append)
    pool.refill("k")
    closing = asyncio.ensure_future(pool.close())
    await asyncio.sleep(0)  # close() is waiting on the start now
    assert not closing.done()
    release.set()
    await asyncio.wait_for(closing, 5)
    assert finished == [1] and discarded == [1] and pool.idle_count == 0


async def test_warm_zero_starts_no_container_ahead(
    docker_engine: str, runners: list[DockerRunner]
) -> None:
    """--warm 0: no container exists before or after a job."""
    runner = await prepared_runner(runners, _settings(docker_engine, "runc", warm=0))
    assert await managed_container_ids(runner.settings.node_id) == []
    result, _ = await run(runner, "print('cold')")
    assert result == RunResult(JobStatus.SUCCEEDED, 0)
    await runner.removals_done()
    await runner.warm_pool.filled()
    assert await managed_container_ids(runner.settings.node_id) == []
    assert runner.warm_pool.hits == 0


async def test_pool_drained_when_limits_or_image_change(
    docker_engine: str, runners: list[DockerRunner]
) -> None:
    """New limits: the warm container made for the old ones is removed, never used, and the
    pool refills with the new limits."""
    runner = await prepared_runner(runners, _settings(docker_engine, "runc", warm=1))
    [old] = runner.warm_container_ids()
    runner.settings = replace(runner.settings, limits=Limits(memory_bytes=256 * MiB))
    result, _ = await run(runner, "print('new limits')")
    assert result == RunResult(JobStatus.SUCCEEDED, 0)
    assert runner.warm_pool.hits == 0
    assert await leftover_container_ids(runner) == []
    assert old not in await managed_container_ids(runner.settings.node_id)
    [new] = runner.warm_container_ids()
    docker = connect()
    try:
        details = await docker.containers.container(new).show()
    finally:
        await docker.close()
    assert details["HostConfig"]["Memory"] == 256 * MiB
    # Another image is another key as well, as is a dependency directory.
    key = sandbox_key(runner.settings, "runc", None)
    assert sandbox_key(replace(runner.settings, image="other:tag"), "runc", None) != key
    assert sandbox_key(runner.settings, "runc", Path("/deps")) != key


async def test_prepare_removes_a_crashed_agents_warm_containers(
    docker_engine: str, runners: list[DockerRunner], tmp_path: Path
) -> None:
    """Warm containers left by a crashed agent of this node are removed by prepare()."""
    write_site(tmp_path)
    settings = _settings(docker_engine, "runc", warm=0)
    docker = connect()
    try:
        config = container_config(
            sandbox_key(settings, "runc", None), settings.node_id, tmp_path, pooled=True
        )
        for _ in range(2):
            await (await docker.containers.create(config)).start()
    finally:
        await docker.close()
    assert len(await _pooled_ids(settings.node_id)) == 2
    await prepared_runner(runners, settings)
    assert await managed_container_ids(settings.node_id) == []


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("noticed", [True, False], ids=["noticed", "unnoticed"])
async def test_warm_container_killed_from_outside_is_replaced(
    runtime: str, noticed: bool, docker_engine: str, runners: list[DockerRunner]
) -> None:
    """A warm container killed by someone else is discarded and the job runs in a fresh one,
    also when the kill lands just before the handover, where the idle watch cannot see it."""
    runner = await prepared_runner(runners, _settings(docker_engine, runtime, warm=1))
    [warm] = runner.warm_pool.idle()
    victim = warm.container.id
    if not noticed:
        # The race made certain: the pool's watch is blind, only the job's run can tell.
        assert warm.idle_watch is not None
        warm.idle_watch.cancel()
        warm.idle_watch = asyncio.create_task(asyncio.Event().wait())
    docker = connect()
    try:
        container = docker.containers.container(victim)
        await container.kill(signal="SIGKILL")
        await container.wait()
    finally:
        await docker.close()
    result, sink = await run(runner, "print('still runs')")
    assert result == RunResult(JobStatus.SUCCEEDED, 0)
    assert sink.stdout == b"still runs\n"
    assert await leftover_container_ids(runner) == []
    assert victim not in await managed_container_ids(runner.settings.node_id)


async def test_timeout_counts_from_the_handover(
    docker_engine: str, runners: list[DockerRunner]
) -> None:
    """A warm container idle for longer than the job's timeout still gives the job all of it."""
    runner = await prepared_runner(runners, _settings(docker_engine, "runc", warm=1))
    # The pool's container ages past the timeout on purpose: the fact under test. The
    # margins leave the job seconds to start on a busy machine.
    await asyncio.sleep(4.0)
    result, sink = await run(runner, "import time\ntime.sleep(0.2)\nprint('done')", timeout_s=3.0)
    assert result == RunResult(JobStatus.SUCCEEDED, 0)
    assert sink.stdout == b"done\n"
    assert runner.warm_pool.hits == 1


def _header(value: object) -> bytes:
    encoded = marshal.dumps(value, MARSHAL_FORMAT)
    return HEADER_LENGTH.pack(len(encoded)) + encoded


def _with_files(job: bytes) -> bytes:
    """``job`` followed by a files section without input files."""
    return job + files_control(b"marker", 0, DockerRunnerSettings())


def _boot(job: Path, *, compiled: bool) -> bytes:
    """The container's boot for a job directory ``job``; without usable bytecode (``compiled``
    False, as for an image whose Python reads other bytecode), from the sources."""
    booted = launcher_boot(str(job / "main.py"))
    if compiled:
        return booted
    _, programs, args = marshal.loads(booted[HEADER_LENGTH.size :])
    return _header((b"other magic", programs, args))


def _launch(
    stdin: bytes, *, compiled: bool = True, booted: bool = True
) -> subprocess.CompletedProcess[bytes]:
    """The real container program on this machine, as the container runs it (as nobody,
    with the system's python3): the launcher's boot (unless not ``booted``), then ``stdin``.

    Only for payloads refused before any job starts: past that the launcher kills every
    process of its uid, which outside a container's PID namespace is no place to be.
    """
    with tempfile.TemporaryDirectory() as where:
        job = Path(where) / "job"
        job.mkdir()
        os.chown(job, JOB_UID, JOB_UID)
        Path(where).chmod(0o755)
        head = _boot(job, compiled=compiled) if booted else b""
        return subprocess.run(
            ["/usr/bin/python3", "-u", "-c", BOOTSTRAP_SOURCE],
            input=head + stdin,
            capture_output=True,
            timeout=30,
            env={"PATH": os.environ.get("PATH", "")},
            user=JOB_UID,
            group=JOB_UID,
        )


@pytest.mark.parametrize(
    "stdin",
    [
        b"",
        b"\x00\x00",
        b"\xff\xff\xff\xff",
        b"\x00\x00\x00\x05[1,2",
        _header(["not", "a", "dict"]),
        _header({"args": [1], "env": {}, "sections": []}),
        payload(["a"], {"A": "1"}, [Section("bogus", b"x")]),
        payload(["a"], {"A": "1"}, job_sections("print(1)"))[:-3],
        _with_files(payload(["a"], {"BAD": "\ud800"}, job_sections("print(1)"))),
    ],
    ids=[
        "empty",
        "short",
        "huge-length",
        "bad-marshal",
        "not-a-dict",
        "wrong-type",
        "unknown-section",
        "truncated",
        "surrogate",
    ],
)
@pytest.mark.parametrize("compiled", [True, False], ids=["bytecode", "source"])
def test_launcher_refuses_bad_payloads_with_a_sentence(stdin: bytes, compiled: bool) -> None:
    """Whatever arrives on its stdin, the launcher exits 125 with one line, no traceback."""
    done = _launch(stdin, compiled=compiled)
    assert done.returncode == LAUNCH_FAILED_EXIT
    assert done.stdout == b""
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("[compound] could not start the job: ")


@pytest.mark.parametrize("cut", [0, 2, 40], ids=["nothing", "in-length", "in-launcher"])
def test_container_program_without_its_whole_launcher_exits_quietly(cut: int) -> None:
    """Stdin closed before the launcher arrived whole: exit 125, not a word, no traceback."""
    with tempfile.TemporaryDirectory() as where:
        head = _boot(Path(where), compiled=True)[:cut]
    done = _launch(head, booted=False)
    assert (done.returncode, done.stdout, done.stderr) == (LAUNCH_FAILED_EXIT, b"", b"")


def test_payload_header_is_bounded() -> None:
    """Arguments past the launcher's header bound are refused before any container exists."""
    with pytest.raises(PayloadTooBig, match="too big"):
        payload(["x" * (5 * MiB)], {}, [])


def test_warm_setting_reaches_the_agent_and_is_validated() -> None:
    """The desktop app passes --warm to its agent; nonsense is refused with a sentence."""
    settings = settings_from_dict({"agent_warm": 0})
    argv = agent_command(settings, Path("/state"))
    assert argv[argv.index("--warm") + 1] == "0"
    assert "--warm" not in agent_command(AppSettings(), Path("/state"))
    for bad in (-1, 9, True, "2", 1.5):
        with pytest.raises(SettingsError, match="Warm containers"):
            settings_from_dict({"agent_warm": bad})


def _deps_dir(root: Path, modules: dict[str, str]) -> Path:
    """A dependency directory under ``root`` holding ``modules`` (name: source), readable by
    the job's user."""
    deps = root / "deps"
    deps.mkdir(mode=0o755)
    deps.chmod(0o755)
    for name, source in modules.items():
        (deps / f"{name}.py").write_text(source)
        (deps / f"{name}.py").chmod(0o644)
    return deps


@pytest.mark.parametrize("runtime", RUNTIMES)
async def test_deps_dir_is_read_only_and_importable(
    runtime: str, docker_engine: str, runners: list[DockerRunner], tmp_path: Path
) -> None:
    """A job's dependency directory is importable, read-only, and gets a warm container of
    its own kind after the first such job."""
    deps = _deps_dir(tmp_path, {"helper": "GREETING = 'from deps'\n"})
    script = (
        "import helper, sys\n"
        "try:\n"
        "    open('/opt/compound/deps/written', 'w')\n"
        "    outcome = 'writable'\n"
        "except OSError:\n"
        "    outcome = 'refused'\n"
        "print(helper.GREETING, outcome, sys.path.index('/opt/compound/deps') == 2)\n"
    )
    runner = await prepared_runner(runners, _settings(docker_engine, runtime, warm=1))
    for hits in (0, 1):
        result, sink = await run(runner, script, deps_dir=deps)
        assert result == RunResult(JobStatus.SUCCEEDED, 0), sink.stderr
        assert sink.stdout == b"from deps refused True\n"
        assert runner.warm_pool.hits == hits
        await runner.warm_pool.filled()
    assert not (deps / "written").exists()


@pytest.mark.parametrize("runtime", RUNTIMES)
async def test_dependencies_cannot_shadow_the_launchers_modules(
    runtime: str, docker_engine: str, runners: list[DockerRunner], tmp_path: Path
) -> None:
    """The launcher shares the job's interpreter start, not its path: modules of the job's
    dependency directory named like what the launcher imports reach only the job, and the
    job is put in place, run and its outputs sent back as always."""
    shadowing = "raise SystemExit('shadowed ' + __name__)\n"
    deps = _deps_dir(tmp_path, dict.fromkeys(("struct", "tarfile", "ctypes", "marshal"), shadowing))
    script = (
        "import sys\n"
        "print(sys.path.index('/opt/compound/deps'))\n"
        "open('outputs/result.txt', 'w').write('kept')\n"
        "import tarfile\n"
    )
    runner = await prepared_runner(runners, _settings(docker_engine, runtime, warm=1))
    for hits in (0, 1):
        result, sink = await run(runner, script, deps_dir=deps)
        # The job's own import of tarfile found the dependency directory's.
        assert (result.status, result.exit_code) == (JobStatus.FAILED, 1)
        assert sink.stdout == b"2\n" and sink.stderr == b"shadowed tarfile\n"
        assert result.outputs_tar is not None
        with tarfile.open(result.outputs_tar) as tar:
            member = tar.extractfile("result.txt")
            assert member is not None and member.read() == b"kept"
        result.outputs_tar.unlink()
        assert runner.warm_pool.hits == hits
        await runner.warm_pool.filled()


async def test_sitecustomize_directory_is_kept_in_place(
    docker_engine: str, runners: list[DockerRunner], tmp_path: Path
) -> None:
    """Our sitecustomize is written where the settings say, readable by the job's user,
    put back when something removed or changed it, and the job's interpreter runs it."""
    site = tmp_path / "state" / "site"
    settings = _settings(docker_engine, "runc", warm=0, site_dir=site)
    target = site / SITECUSTOMIZE_NAME
    runner = await prepared_runner(runners, settings)
    assert target.read_bytes() == SITECUSTOMIZE
    assert (site.stat().st_mode & 0o777, target.stat().st_mode & 0o777) == (0o755, 0o644)
    script = (
        "import sys\n"
        "print(type(sys.stdout.buffer).__name__, sys.modules['sitecustomize'].__file__)\n"
    )
    expected = f"FullWriter {SITE_DIR}/{SITECUSTOMIZE_NAME}\n".encode()
    target.write_text("raise SystemExit('stale')\n")
    await runner.prepare()
    assert target.read_bytes() == SITECUSTOMIZE
    shutil.rmtree(site)
    result, sink = await run(runner, script)
    assert (result, sink.stdout) == (RunResult(JobStatus.SUCCEEDED, 0), expected)
    assert target.read_bytes() == SITECUSTOMIZE


async def test_private_sitecustomize_directory_is_removed_at_close(docker_engine: str) -> None:
    """Without a directory in the settings the runner makes a private one and removes it."""
    runner = DockerRunner(_settings(docker_engine, "runc", warm=1))
    try:
        await runner.prepare()
        site = runner.site_dir
        assert site is not None and (site / SITECUSTOMIZE_NAME).read_bytes() == SITECUSTOMIZE
    finally:
        await runner.close()
    assert not site.exists()


async def test_script_too_big_for_the_job_tmpfs_fails_with_a_sentence(
    docker_engine: str, runners: list[DockerRunner]
) -> None:
    """A script that cannot fit the fixed /job tmpfs fails before any container is used."""
    runner = await prepared_runner(
        runners, _settings(docker_engine, "runc", job_dir_bytes=2 * MiB, outputs_room_bytes=0)
    )
    [warm] = runner.warm_container_ids()
    result, _ = await run(runner, "#" * (1536 * 1024))
    assert result.status is JobStatus.FAILED and result.exit_code is None
    assert result.error == "the script is too big for the sandbox (at most 1.0 MiB)"
    assert runner.warm_container_ids() == {warm}


async def test_close_while_refilling_leaves_no_container(docker_engine: str) -> None:
    """An agent stopping while its pool is creating or starting a container leaves none."""
    for delay_s in (0.0, 0.01, 0.05, 0.1, 0.2):
        runner = DockerRunner(_settings(docker_engine, "runc", warm=1))
        await runner.prepare()
        # Stop at different points of the refill: create, attach, start.
        await asyncio.sleep(delay_s)
        await runner.close()
        assert await managed_container_ids(runner.settings.node_id) == [], delay_s
