"""Shipped into each job container as its command: put the job's files in place, run the job.

The root filesystem is read-only and no host path is mounted, so the agent cannot copy
files in: the Engine API refuses an archive upload onto a read-only root, and one into a
tmpfs of a created container is hidden once the tmpfs is mounted at start. So the agent
writes them to this process's stdin instead: two big-endian 64-bit lengths, then our
sitecustomize source and the script, then the files section (see ``read_files_control``):
a JSON control block and the job's input files as one tar. They go into the job's own
tmpfs, ``/job``, which is also the job's working directory; inputs are extracted read-only
and ``/job/outputs`` is left writable. Stdin is pointed at ``/dev/null`` and the job runs
as ``python3 -u`` on the script, a child of this process with its environment and output
descriptors: not a byte of the job's output comes from here.

When the job ends (or is stopped: SIGTERM is forwarded, SIGKILL follows before the agent's
grace period is over) every process of the job is killed, and what the job left in
``/job/outputs`` goes to stdout as a trailer: a marker the agent chose for this job (read
from stdin before the job started; this process is not dumpable, so the job cannot read
it), tar data in frames, an end frame with a JSON footer. Then this process exits with the
job's exit code. See docs/sandbox.md.

The agent never imports this module: it passes the source to ``python3 -I -S -c``, so no
``PYTHON*`` variable of the job and no site-packages change how the files are put in place.
Arguments: the script's path, the directory for sitecustomize, then the job's arguments.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import stat
import struct
import sys
import time
from typing import Any

HEADER = struct.Struct(">QQ")
READ_BYTES = 1024 * 1024
# A launch that could not happen; distinct from what a Python script usually exits with.
LAUNCH_FAILED_EXIT = 125

# The files section: the length of the JSON control block, the block, then the inputs tar.
CONTROL_HEADER = struct.Struct(">Q")
MAX_CONTROL_BYTES = 64 * 1024
OUTPUTS_DIR_NAME = "outputs"
# Top-level names in /job that are ours: an input may not take them.
RESERVED_NAMES = frozenset({"main.py", "site", OUTPUTS_DIR_NAME})
MAX_INPUT_PATH_BYTES = 1024
# Trailer frames: kind (1 byte), length (4 bytes), data.
FRAME = struct.Struct(">BI")
FRAME_TAR = 1
FRAME_END = 2
FRAME_DATA_BYTES = 256 * 1024
MAX_OUTPUT_FILES = 10_000
# What a tar entry costs beyond its data at most: its header, a pax header and its data.
_TAR_ENTRY_OVERHEAD_BYTES = 3 * 512
# The end-of-archive blocks and the padding to a whole record.
_TAR_END_BYTES = 2 * 512 + 20 * 512
# After the last SIGKILL, how long the job's processes get to disappear.
_REAP_WAIT_S = 2.0
PR_SET_DUMPABLE = 4


def read_exactly(fd: int, size: int) -> bytes:
    chunks = []
    while size > 0:
        chunk = os.read(fd, min(size, READ_BYTES))
        if not chunk:
            raise EOFError("the agent closed stdin before sending the whole job")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def write_read_only(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


class InputRefused(Exception):
    """The input files cannot be put in place; the message is one sentence for the user."""


class StdinTar:
    """The next ``size`` bytes of stdin as a file for ``tarfile``'s stream mode."""

    def __init__(self, size: int) -> None:
        self._left = size

    def read(self, size: int = -1) -> bytes:
        size = self._left if size < 0 else min(size, self._left)
        if size <= 0:
            return b""
        data = os.read(0, min(size, READ_BYTES))
        if not data:
            raise EOFError("the agent closed stdin before sending the whole input files")
        self._left -= len(data)
        return data


def read_files_control() -> dict[str, Any]:
    """The control block: ``marker`` (hex), ``inputs_bytes``, ``max_outputs_bytes``,
    ``max_input_files`` and ``kill_after_s`` (SIGTERM to SIGKILL)."""
    (size,) = CONTROL_HEADER.unpack(read_exactly(0, CONTROL_HEADER.size))
    if size > MAX_CONTROL_BYTES:
        raise EOFError("the agent sent a control block that is too large")
    control: dict[str, Any] = json.loads(read_exactly(0, size))
    return control


def _input_parts(name: str) -> list[str]:
    if name.startswith("/"):
        raise InputRefused(f"{name!r} is an absolute path")
    if len(name.encode("utf-8", "surrogateescape")) > MAX_INPUT_PATH_BYTES:
        raise InputRefused(f"a path is longer than {MAX_INPUT_PATH_BYTES} bytes")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise InputRefused(f"{name!r} points outside the job's directory")
    if not parts:
        raise InputRefused(f"{name!r} is not a file name")
    if parts[0] in RESERVED_NAMES:
        raise InputRefused(f"{parts[0]!r} is reserved in the job's directory; rename it")
    return parts


def _kind(member: Any) -> str | None:
    """Why ``member`` cannot be an input (what it is), or None for a file or directory."""
    if member.isdir() or (member.isreg() and not member.issparse()):
        return None
    if member.issym():
        return "a symbolic link"
    if member.islnk():
        return "a hard link"
    if member.ischr() or member.isblk():
        return "a device"
    if member.isfifo():
        return "a fifo"
    return "not a regular file or directory"


def _ensure_dirs(job_dir: str, parts: list[str], made: list[str]) -> str:
    """Create the directories ``parts`` under ``job_dir`` as needed; the last one's path."""
    path = job_dir
    for part in parts:
        path = os.path.join(path, part)
        try:
            os.mkdir(path, 0o755)
            made.append(path)
        except FileExistsError:
            # Nothing but this function has written here, and it makes no links.
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                where = path[len(job_dir) + 1 :]
                raise InputRefused(f"{where!r} is both a file and a folder") from None
    return path


def _write_input(tar: Any, member: Any, path: str) -> None:
    source = tar.extractfile(member)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except FileExistsError:
        raise InputRefused(f"{member.name!r} appears twice") from None
    try:
        while chunk := source.read(READ_BYTES):
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
        os.fchmod(fd, 0o444)
    finally:
        os.close(fd)


def extract_inputs(job_dir: str, size: int, max_files: int) -> None:
    """Extract the tar of ``size`` bytes on stdin into ``job_dir``, read-only for the job.

    Only files and directories with relative paths inside ``job_dir``; anything else
    refuses the whole lot (InputRefused). Sizes are bounded by the tmpfs (ENOSPC).
    """
    import tarfile  # only jobs with inputs pay for the import

    made: list[str] = []
    count = 0
    try:
        with tarfile.open(fileobj=StdinTar(size), mode="r|") as tar:  # type: ignore[call-overload]
            for member in tar:
                count += 1
                if count > max_files:
                    raise InputRefused(f"there are more than {max_files} input files")
                parts = _input_parts(member.name)
                kind = _kind(member)
                if kind is not None:
                    raise InputRefused(f"{member.name!r} is {kind}")
                if member.isdir():
                    _ensure_dirs(job_dir, parts, made)
                else:
                    parent = _ensure_dirs(job_dir, parts[:-1], made)
                    _write_input(tar, member, os.path.join(parent, parts[-1]))
    except tarfile.TarError as exc:
        raise InputRefused(f"the input files are not a valid tar archive ({exc})") from None
    except OSError as exc:
        raise InputRefused(f"the input files could not be written ({exc.strerror})") from None
    for path in reversed(made):
        os.chmod(path, 0o555)


class FrameWriter:
    """Writes the trailer to stdout: tar data in bounded frames, then the end frame."""

    def __init__(self, marker: bytes) -> None:
        self._buffer = bytearray(marker)
        self.tar_bytes = 0

    def write(self, data: bytes) -> int:
        self.tar_bytes += len(data)
        view = memoryview(data)
        while view:
            piece = view[:FRAME_DATA_BYTES]
            self._buffer += FRAME.pack(FRAME_TAR, len(piece))
            self._buffer += piece
            view = view[len(piece) :]
            if len(self._buffer) >= FRAME_DATA_BYTES:
                self.flush()
        return len(data)

    def end(self, footer: dict[str, Any]) -> None:
        data = json.dumps(footer).encode()
        self._buffer += FRAME.pack(FRAME_END, len(data)) + data
        self.flush()

    def flush(self) -> None:
        write_all(1, self._buffer)
        self._buffer.clear()


def write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            select.select([], [fd], [])


def _output_files(root: str, found: list[tuple[str, str]], skipped: list[str]) -> None:
    """Regular files under ``root`` as (path, name in the tar); links and others skipped."""
    stack = [""]
    while stack:
        relative = stack.pop()
        with os.scandir(os.path.join(root, relative)) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                name = f"{relative}/{entry.name}" if relative else entry.name
                if entry.is_dir(follow_symlinks=False):
                    stack.append(name)
                elif entry.is_file(follow_symlinks=False):
                    found.append((entry.path, name))
                else:
                    skipped.append(name)


def _add_output(tar: Any, path: str, name: str) -> int | None:
    """Add one file to ``tar``; its size, or None when it is not a regular file."""
    import tarfile

    # O_NONBLOCK: a fifo swapped in must not hang us (the job is dead, but be sure).
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as source:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        member = tarfile.TarInfo(name)
        member.size = info.st_size
        member.mtime = int(info.st_mtime)
        member.mode = 0o644
        tar.addfile(member, source)
        return info.st_size


def collect_outputs(writer: FrameWriter, outputs_dir: str, max_bytes: int) -> dict[str, Any]:
    """Write what fits of ``outputs_dir`` into ``writer`` as a tar; the footer's fields."""
    import tarfile

    found: list[tuple[str, str]] = []
    skipped: list[str] = []
    _output_files(outputs_dir, found, skipped)
    files, left_out, left_out_bytes = 0, 0, 0
    with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for path, name in found:
            size = os.lstat(path).st_size
            cost = size + _TAR_ENTRY_OVERHEAD_BYTES + len(name.encode("utf-8", "surrogateescape"))
            over = writer.tar_bytes + cost + _TAR_END_BYTES > max_bytes
            if over or files >= MAX_OUTPUT_FILES:
                left_out, left_out_bytes = left_out + 1, left_out_bytes + size
                continue
            try:
                added = _add_output(tar, path, name)
            except OSError:
                added = None
            if added is None:
                skipped.append(name)
            else:
                files += 1
    return {
        "files": files,
        "left_out": left_out,
        "left_out_bytes": left_out_bytes,
        "skipped": len(skipped),
    }


def send_outputs(marker: bytes, job_dir: str, max_bytes: int) -> None:
    """Write the trailer; any failure becomes the footer's ``error`` (the job's code stands)."""
    writer = FrameWriter(marker)
    outputs_dir = os.path.join(job_dir, OUTPUTS_DIR_NAME)
    footer: dict[str, Any] = {"files": 0}
    try:
        if os.listdir(outputs_dir):
            footer = collect_outputs(writer, outputs_dir, max_bytes)
    except Exception as exc:  # whatever the job left, the trailer must end properly
        footer = {"files": 0, "error": f"the outputs could not be collected ({exc})"}
    footer["tar_bytes"] = writer.tar_bytes
    writer.end(footer)


def refuse_inputs(marker: bytes, reason: str) -> None:
    FrameWriter(marker).end({"files": 0, "tar_bytes": 0, "input_error": reason})


class JobProcess:
    """The job as this process's child: SIGTERM is forwarded, SIGKILL follows in time."""

    def __init__(self, kill_after_s: float) -> None:
        self.pid: int | None = None
        self.terminated = False
        self._kill_after_s = kill_after_s
        signal.signal(signal.SIGTERM, self._on_sigterm)
        signal.signal(signal.SIGALRM, self._on_alarm)

    def _on_sigterm(self, _signum: int, _frame: object) -> None:
        if not self.terminated:
            self.terminated = True
            signal.setitimer(signal.ITIMER_REAL, self._kill_after_s)
        # Not in the child between fork and exec (pid 0): that would signal our group.
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)

    def _on_alarm(self, _signum: int, _frame: object) -> None:
        kill_all_but_me()

    def run(self, script_path: str, args: list[str]) -> int:
        """Start the job unless stopped already; its exit code, as a shell reports it."""
        if self.terminated:
            return 128 + signal.SIGTERM
        self.pid = os.fork()
        if self.pid == 0:
            try:
                os.execv(sys.executable, [sys.executable, "-u", script_path, *args])
            finally:
                os._exit(LAUNCH_FAILED_EXIT)
        _, status = os.waitpid(self.pid, 0)
        signal.setitimer(signal.ITIMER_REAL, 0)
        code = os.waitstatus_to_exitcode(status)
        return 128 - code if code < 0 else code


def kill_all_but_me() -> None:
    """SIGKILL every process of our uid but this one (and init): the job and what it left."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(-1, signal.SIGKILL)


def wait_for_the_rest() -> None:
    """Kill what is left of the job and wait until it is gone, so it can write no more."""
    deadline = time.monotonic() + _REAP_WAIT_S
    while time.monotonic() < deadline:
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            return
        time.sleep(0.01)


def make_undumpable() -> None:
    """Neither ptrace nor /proc/PID/{mem,environ,fd} of this process for the job's uid."""
    import ctypes

    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE) failed")


def put_job_files(script_path: str, site_dir: str) -> None:
    """Read sitecustomize and the script from stdin and write them read-only."""
    script_bytes, site_bytes = HEADER.unpack(read_exactly(0, HEADER.size))
    site_source = read_exactly(0, site_bytes)
    script = read_exactly(0, script_bytes)
    os.mkdir(site_dir, 0o755)
    write_read_only(os.path.join(site_dir, "sitecustomize.py"), site_source)
    os.chmod(site_dir, 0o555)
    write_read_only(script_path, script)


def launch(script_path: str, site_dir: str, args: list[str]) -> int:
    """Put the files in place, run the job, send its outputs; the job's exit code."""
    make_undumpable()
    put_job_files(script_path, site_dir)
    control = read_files_control()
    marker = bytes.fromhex(control["marker"])
    job_dir = os.path.dirname(script_path)
    job = JobProcess(float(control["kill_after_s"]))
    try:
        if control["inputs_bytes"]:
            extract_inputs(job_dir, int(control["inputs_bytes"]), int(control["max_input_files"]))
    except InputRefused as exc:
        refuse_inputs(marker, str(exc))
        return LAUNCH_FAILED_EXIT
    os.mkdir(os.path.join(job_dir, OUTPUTS_DIR_NAME), 0o755)
    os.chmod(job_dir, 0o555)
    # The job gets an empty stdin, as it had before the files came this way.
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    code = job.run(script_path, args)
    wait_for_the_rest()
    send_outputs(marker, job_dir, int(control["max_outputs_bytes"]))
    return code


if __name__ == "__main__":
    try:
        exit_code = launch(sys.argv[1], sys.argv[2], sys.argv[3:])
    except (OSError, EOFError, ValueError, KeyError, struct.error) as exc:
        sys.stderr.write(f"[compound] could not start the job: {exc}\n")
        sys.exit(LAUNCH_FAILED_EXIT)
    sys.exit(exit_code)
