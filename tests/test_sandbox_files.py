"""Input and output files through the real DockerRunner, under runc and gVisor (runsc)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import tarfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from compound.agent.runners.base import MiB, RunResult, RunSpec
from compound.agent.runners.docker.runner import DockerRunner, DockerRunnerSettings
from compound.agent.runners.docker.spec import TRAILER_MARKER_PREFIX
from compound.agent.runners.docker.trailer import (
    FOOTER,
    FRAME,
    FRAME_END,
    FRAME_TAR,
    TrailerSplitter,
)
from compound.protocol import JobStatus
from docker_env import RUNTIMES, Collected, leftover_container_ids, run_job

pytestmark = pytest.mark.timeout(90)

GRACE_S = 4.0


@pytest.fixture(params=RUNTIMES)
async def runner(
    request: pytest.FixtureRequest, docker_engine: str, tmp_path: Path
) -> AsyncIterator[DockerRunner]:
    settings = DockerRunnerSettings(
        image=docker_engine,
        runtime=request.param,
        node_id=f"test-{uuid.uuid4().hex[:12]}",
        grace_s=GRACE_S,
        outputs_dir=tmp_path,
    )
    runner = DockerRunner(settings)
    await runner.prepare()
    yield runner
    await runner.close()


run = run_job


def _add(tar: tarfile.TarFile, name: str, data: bytes = b"", **fields: object) -> None:
    member = tarfile.TarInfo(name)
    member.size = len(data)
    for field_name, value in fields.items():
        setattr(member, field_name, value)
    tar.addfile(member, io.BytesIO(data) if data else None)


def _tar(path: Path, members: Iterator[tuple[str, bytes, dict[str, object]]]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, fields in members:
            _add(tar, name, data, **fields)
    return path


def _files_of(tar_path: Path) -> dict[str, bytes]:
    files = {}
    with tarfile.open(tar_path) as tar:
        for member in tar:
            assert member.isreg(), member.name
            source = tar.extractfile(member)
            assert source is not None
            files[member.name] = source.read()
    return files


SHA_INPUTS = """
import hashlib, json, os
seen = {}
for top, dirs, files in os.walk("."):
    for name in files:
        path = os.path.join(top, name)[2:]
        if not path.startswith(("main.py", "site/")):
            seen[path] = hashlib.sha256(open(path, "rb").read()).hexdigest()
modes = {p: oct(os.stat(p).st_mode & 0o777) for p in ("data.csv", "images", "images/deep")}
for target in ("data.csv", "images/new.txt", "new.txt"):
    open(target, "a").write("more")
print(json.dumps({"sha256": seen, "modes": modes, "cwd": os.getcwd()}))
"""


async def test_inputs_arrive_byte_identical_as_copies_the_job_may_change(
    runner: DockerRunner, tmp_path: Path
) -> None:
    """A file and a folder arrive under their names in the working directory, hash-checked
    inside the job; the job may change them and add files beside them, and exactly what it
    created or changed comes back (unchanged inputs and the script stay behind)."""
    contents = {
        "data.csv": os.urandom(1 * MiB) + b"\x00\xffcompound-outputs:",
        "images/a.png": os.urandom(300_000),
        "images/deep/b.bin": b"",
        "images/deep/ünïcødé name.txt": "héllo".encode(),
    }
    members = [("images", b"", {"type": tarfile.DIRTYPE, "mode": 0o777})]
    members += [(name, data, {"mode": 0o777}) for name, data in contents.items()]
    inputs = _tar(tmp_path / "inputs.tar", iter(members))
    result, sink = await run(runner, SHA_INPUTS, inputs_tar=inputs)
    assert (result.status, result.exit_code) == (JobStatus.SUCCEEDED, 0), sink.stderr
    seen = json.loads(sink.stdout)
    assert seen["sha256"] == {n: hashlib.sha256(d).hexdigest() for n, d in contents.items()}
    assert seen["modes"] == {"data.csv": "0o644", "images": "0o755", "images/deep": "0o755"}
    assert seen["cwd"] == "/job"
    assert result.outputs_tar is not None
    assert _files_of(result.outputs_tar) == {
        "data.csv": contents["data.csv"] + b"more",
        "images/new.txt": b"more",
        "new.txt": b"more",
    }


CWD_WRITER = """
import os, sys, traceback
open("results.csv", "w").write("a,b\\n1,2\\n")
with open("plot.png", "wb") as figure:  # what savefig does
    figure.write(bytes(range(256)) * 64)
assert open("results.csv").read() == "a,b\\n1,2\\n"
os.makedirs("deep/er", exist_ok=True)
open("deep/er/x.txt", "w").write("x")
open("outputs/kept.txt", "w").write("from outputs")
open("kept.txt", "w").write("from the folder")
open("gone.txt", "w").write("removed before the end")
os.remove("gone.txt")
os.symlink("/etc/passwd", "link")
print(__file__, os.listdir("/job") and "listed")
raise RuntimeError("shown with the script's name")
"""


async def test_the_working_directory_is_writable_and_what_the_job_writes_comes_back(
    runner: DockerRunner,
) -> None:
    """Files written in the working directory (text, binary, read back, in new folders)
    come back beside outputs/'s, which win a name clash; the script runs under its own
    name, which __file__ and tracebacks show, and never comes back itself."""
    spec = RunSpec(f"cwd-{uuid.uuid4().hex[:8]}", CWD_WRITER, script_name="analysis.py")
    sink = Collected()
    result = await asyncio.wait_for(runner.run(spec, sink, asyncio.Event()), timeout=60)
    assert (result.status, result.exit_code) == (JobStatus.FAILED, 1), sink.stderr
    assert sink.stdout == b"/job/analysis.py listed\n"
    assert b'File "/job/analysis.py", line 15' in sink.stderr, sink.stderr
    assert result.outputs_tar is not None
    assert _files_of(result.outputs_tar) == {
        "kept.txt": b"from outputs",
        "results.csv": b"a,b\n1,2\n",
        "plot.png": bytes(range(256)) * 64,
        "deep/er/x.txt": b"x",
    }
    assert result.outputs_note == (
        "1 file(s) were skipped because their names cannot be kept: 'kept.txt' is also in "
        "outputs/, which was kept; 1 entries in the job's folder are not regular files and "
        "were skipped"
    )


HOSTILE_TARS: dict[str, tuple[list[tuple[str, bytes, dict[str, object]]], str]] = {
    "absolute path": ([("/etc/evil", b"x", {})], "'/etc/evil' is an absolute path"),
    "dot-dot": ([("images/../../tmp/evil", b"x", {})], "points outside the job's directory"),
    "symlink": (
        [("link", b"", {"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"})],
        "'link' is a symbolic link",
    ),
    "hardlink": (
        [("a", b"x", {}), ("b", b"", {"type": tarfile.LNKTYPE, "linkname": "a"})],
        "'b' is a hard link",
    ),
    "device": (
        [("dev", b"", {"type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3})],
        "'dev' is a device",
    ),
    "fifo": ([("pipe", b"", {"type": tarfile.FIFOTYPE})], "'pipe' is a fifo"),
    "reserved name": ([("main.py", b"print('evil')", {})], "'main.py' is reserved"),
    "file twice": ([("a", b"x", {}), ("a", b"y", {})], "'a' appears twice"),
    "too many members": (
        [(f"f{i}", b"", {}) for i in range(201)],
        "there are more than 200 input files",
    ),
}


async def test_hostile_input_tars_are_refused_before_the_job_runs(
    runner: DockerRunner, tmp_path: Path
) -> None:
    """Absolute paths, .., links, devices, fifos, reserved names, duplicates and too many
    members each fail the job with a sentence naming the entry; the script never runs."""
    runner.settings = replace(runner.settings, max_input_files=200)
    for case, (members, reason) in HOSTILE_TARS.items():
        inputs = _tar(tmp_path / f"{case}.tar", iter(members))
        result, sink = await run(runner, "print('the job ran')", inputs_tar=inputs)
        assert result.status is JobStatus.FAILED, case
        assert result.exit_code is None, case
        assert result.error is not None and result.error.startswith(
            "the input files were refused: "
        ), case
        assert reason in result.error, (case, result.error)
        assert sink.stdout == b"", case
        assert result.outputs_tar is None
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(os.urandom(4096))
    result, sink = await run(runner, "print('the job ran')", inputs_tar=garbage)
    assert result.error is not None and "not a valid tar archive" in result.error
    assert sink.stdout == b""
    await runner.removals_done()
    assert await leftover_container_ids(runner) == []


WRITE_OUTPUTS = """
import os, sys
os.makedirs("outputs/nested/deeper", exist_ok=True)
for name, size in [("result.bin", 2_000_000), ("nested/deeper/ünï.txt", 10), ("empty", 0)]:
    with open(os.path.join("outputs", name), "wb") as f:
        f.write(bytes(range(256)) * (size // 256) + b"x" * (size % 256))
os.symlink("/etc/passwd", "outputs/link")
print("written", flush=True)
"""


def _expected_outputs() -> dict[str, bytes]:
    def body(size: int) -> bytes:
        return bytes(range(256)) * (size // 256) + b"x" * (size % 256)

    return {
        "result.bin": body(2_000_000),
        "nested/deeper/ünï.txt": body(10),
        "empty": b"",
    }


@pytest.mark.parametrize(
    ("ending", "tail", "timeout_s", "status", "exit_code"),
    [
        ("success", "", None, JobStatus.SUCCEEDED, 0),
        ("failure", "sys.exit(3)\n", None, JobStatus.FAILED, 3),
        ("timeout", "import time\ntime.sleep(60)\n", 1.0, JobStatus.TIMED_OUT, 143),
        (
            "timeout ignoring SIGTERM",
            "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(60)\n",
            1.0,
            JobStatus.TIMED_OUT,
            137,
        ),
    ],
)
async def test_outputs_come_back_however_the_job_ends(
    runner: DockerRunner,
    ending: str,
    tail: str,
    timeout_s: float | None,
    status: JobStatus,
    exit_code: int,
) -> None:
    """Files under outputs/ come back byte-identical after success, exit 3, a timeout and a
    job that ignores SIGTERM (killed in the grace period); a link there is skipped, noted."""
    result, sink = await run(runner, WRITE_OUTPUTS + tail, timeout_s=timeout_s)
    assert (result.status, result.exit_code) == (status, exit_code), sink.stderr
    assert sink.stdout == b"written\n"
    assert result.outputs_tar is not None
    assert _files_of(result.outputs_tar) == _expected_outputs()
    assert result.outputs_note == (
        "1 entries in the job's folder are not regular files and were skipped"
    )


async def test_outputs_over_the_cap_give_what_fits_and_a_note(runner: DockerRunner) -> None:
    """Past the cap, the files that fit come back and the note says how much was left out."""
    runner.settings = replace(runner.settings, max_outputs_bytes=1 * MiB)
    script = (
        "for name, size in [('a', 600_000), ('b', 600_000), ('c', 100_000)]:\n"
        "    open(f'outputs/{name}', 'wb').write(name.encode() * size)\n"
    )
    result, _ = await run(runner, script)
    assert result.status is JobStatus.SUCCEEDED
    assert result.outputs_tar is not None
    assert result.outputs_tar.stat().st_size <= 1 * MiB
    assert _files_of(result.outputs_tar) == {"a": b"a" * 600_000, "c": b"c" * 100_000}
    assert result.outputs_note == ("outputs are capped at 1 MiB: 1 file(s) (0.6 MiB) were left out")


async def test_forged_trailer_passes_through_unchanged(runner: DockerRunner) -> None:
    """A job printing marker-like bytes (without the nonce) has them delivered as output,
    including a marker prefix held at the end of a chunk, and its real outputs still come."""
    forged = (
        TRAILER_MARKER_PREFIX + b"0" * 32 + FRAME.pack(FRAME_END, 13) + b'{"files": 99}' + b"\n"
    )
    script = (
        "import sys, time\n"
        f"sys.stdout.buffer.write({forged!r})\n"
        f"sys.stdout.buffer.write({TRAILER_MARKER_PREFIX[:5]!r})\n"
        "sys.stdout.flush()\n"
        "time.sleep(0.3)\n"
        "sys.stdout.buffer.write(b'after')\n"
        "open('outputs/real', 'w').write('real')\n"
    )
    result, sink = await run(runner, script)
    assert result.status is JobStatus.SUCCEEDED
    assert sink.stdout == forged + TRAILER_MARKER_PREFIX[:5] + b"after"
    assert result.outputs_tar is not None
    assert _files_of(result.outputs_tar) == {"real": b"real"}


async def test_job_cannot_read_the_launcher(runner: DockerRunner) -> None:
    """The launcher's memory, descriptors and environment are closed to the job (it is not
    dumpable), and leftover processes the job started end before the outputs are taken."""
    script = """
import json, os, subprocess, sys
parent = os.getppid()
seen = {}
for what in ("mem", "environ", "fd/0", "fd/1"):
    try:
        data = open(f"/proc/{parent}/{what}", "rb").read(1 << 20)
        same = data == open(f"/proc/self/{what}", "rb").read(1 << 20) if what == "environ" else 0
        seen[what] = "same as mine" if same else "empty" if data == b"" else "read"
    except OSError as exc:
        seen[what] = exc.strerror
print(json.dumps(seen), flush=True)
subprocess.Popen([sys.executable, "-c",
    "import time\\nwhile True:\\n    open('outputs/late', 'a').write('x')\\n    time.sleep(0.01)"])
"""
    result, sink = await run(runner, script)
    assert result.status is JobStatus.SUCCEEDED
    seen = json.loads(sink.stdout)
    # The marker is only in the launcher's memory; its stdin is /dev/null by now. gVisor
    # lets the job open the launcher's environ (the job's own) and fd/0 (/dev/null).
    assert seen["mem"] == "Permission denied", seen
    assert "read" not in seen.values(), seen
    # The straggler was killed: its file no longer grows, and the run ended.
    await runner.removals_done()
    assert await leftover_container_ids(runner) == []


def test_trailer_split_anywhere() -> None:
    """Job bytes, then the trailer, cut at every point: job bytes exact, tar data exact."""
    marker = TRAILER_MARKER_PREFIX + b"a" * 32
    job = b"line\n\x00\xffcomp\x00" + TRAILER_MARKER_PREFIX + b"b" * 32 + b"\x00"
    footer = FOOTER.pack(1, 0, 0, 0, 6, 3, 0, 0, 0, 0, 0, 0, 0)
    trailer = (
        marker
        + FRAME.pack(FRAME_TAR, 4)
        + b"abcd"
        + FRAME.pack(FRAME_TAR, 2)
        + b"ef"
        + FRAME.pack(FRAME_END, len(footer))
        + footer
    )
    wire = job + trailer
    for cut in range(len(wire) + 1):
        tar = bytearray()
        splitter = TrailerSplitter(marker, 100, tar.extend)
        out = splitter.feed(wire[:cut]) + splitter.feed(wire[cut:]) + splitter.end()
        assert out == job, cut
        assert tar == b"abcdef", cut
        assert splitter.footer is not None and splitter.footer.files == 1
        assert splitter.footer.exit_code == 3 and not splitter.footer.signalled
        assert splitter.broken is None
    held = TrailerSplitter(marker, 100, tar.extend)
    assert held.feed(b"abc\x00\xff") == b"abc"
    assert held.end() == b"\x00\xff"


def test_trailer_from_a_broken_launcher_is_bounded() -> None:
    """Bad frame kinds, huge lengths, too much tar data and a bad footer are refused."""
    marker = TRAILER_MARKER_PREFIX + b"a" * 32
    for rest, broken in [
        (FRAME.pack(9, 1) + b"x", "garbled"),
        (FRAME.pack(FRAME_TAR, 1 << 30), "garbled"),
        (FRAME.pack(FRAME_END, 4) + b"null", "garbled"),
        (
            FRAME.pack(FRAME_END, FOOTER.size + 1)
            + FOOTER.pack(1, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0)
            + b"x",
            "garbled",
        ),
        (
            FRAME.pack(FRAME_END, FOOTER.size)
            + FOOTER.pack(1, 0, 0, 0, 0, 0, 0, 5000, 0, 0, 0, 0, 0),
            "garbled",
        ),
        (
            FRAME.pack(FRAME_END, FOOTER.size)
            + FOOTER.pack(1, 0, 0, 0, 0, -1, 0, 0, 0, 0, 0, 0, 0),
            "garbled",
        ),
        (
            FRAME.pack(FRAME_END, FOOTER.size)
            + FOOTER.pack(1, 0, 0, 0, 0, 256, 0, 0, 0, 0, 0, 0, 0),
            "garbled",
        ),
        (
            FRAME.pack(FRAME_END, FOOTER.size) + FOOTER.pack(1, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0),
            "garbled",
        ),
        (
            FRAME.pack(FRAME_END, FOOTER.size) + FOOTER.pack(1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2),
            "garbled",
        ),
        (b"".join(FRAME.pack(FRAME_TAR, 1 << 20) + b"x" * (1 << 20) for _ in range(2)), "cap"),
    ]:
        splitter = TrailerSplitter(marker, 1000, lambda _: None)
        assert splitter.feed(b"job" + marker + rest) == b"job"
        assert splitter.broken is not None and broken in splitter.broken


async def test_cancelled_job_returns_its_outputs(runner: DockerRunner) -> None:
    """Cancelling a running job still brings back what it wrote to outputs/."""
    script = (
        "import time\nopen('outputs/partial', 'w').write('so far')\nprint('up')\ntime.sleep(60)"
    )
    sink = Collected()
    cancel = asyncio.Event()
    task = asyncio.create_task(runner.run(RunSpec("cancelled", script), sink, cancel))
    await asyncio.wait_for(sink.first.wait(), timeout=30)
    cancel.set()
    result = await asyncio.wait_for(task, timeout=30)
    assert result.status is JobStatus.CANCELLED
    assert result.outputs_tar is not None
    assert _files_of(result.outputs_tar) == {"partial": b"so far"}


async def test_prepare_removes_outputs_a_crashed_agent_left(
    docker_engine: str, tmp_path: Path
) -> None:
    """prepare() creates the outputs directory and removes stale outputs tars, only those."""
    outputs_dir = tmp_path / "state" / "outputs"
    outputs_dir.mkdir(parents=True)
    (outputs_dir / "outputs-stale.tar").write_bytes(b"old")
    (outputs_dir / "keep.txt").write_bytes(b"not ours")
    runner = DockerRunner(DockerRunnerSettings(image=docker_engine, outputs_dir=outputs_dir))
    try:
        await runner.prepare()
    finally:
        await runner.close()
    assert sorted(p.name for p in outputs_dir.iterdir()) == ["keep.txt"]


async def test_outputs_replaced_by_a_link_yield_nothing(runner: DockerRunner) -> None:
    """A job that swaps outputs/ for a link (to the launcher's /proc) gets nothing back."""
    script = (
        "import os\n"
        "os.chmod('/job', 0o755)\n"
        "os.rmdir('outputs')\n"
        "os.symlink(f'/proc/{os.getppid()}', 'outputs')\n"
    )
    result, _ = await run(runner, script)
    assert result == RunResult(JobStatus.SUCCEEDED, 0)
