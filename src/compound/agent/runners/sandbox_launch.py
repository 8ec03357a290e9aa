"""Shipped into each job container as its command: put the job's files in place, run the job.

The root filesystem is read-only and no host path is mounted, so the agent cannot copy
files in: the Engine API refuses an archive upload onto a read-only root, and one into a
tmpfs of a created container is hidden once the tmpfs is mounted at start. So the agent
writes them to this process's stdin instead: two big-endian 64-bit lengths, then our
sitecustomize source and the script, then the files section (see ``FilesControl``): a
fixed head, the trailer's marker and the job's input files as one tar. They go into the
job's own tmpfs, ``/job``, which is also the job's working directory: inputs are extracted
read-only and ``/job/outputs`` is left writable. Stdin is pointed at ``/dev/null`` and the
job runs as ``python3 -u`` on the script, a child of this process with its environment and
output descriptors: not a byte of the job's output comes from here.

When the job ends (or is stopped: SIGTERM is forwarded, SIGKILL follows before the agent's
grace period is over) every process of the job is killed, and what the job left in
``/job/outputs`` goes to stdout as a trailer: a marker the agent chose for this job (read
from stdin before the job started; this process is not dumpable, so the job cannot read
it), tar data in frames, an end frame with a footer. Then this process exits with the
job's exit code. See docs/sandbox.md.

The agent never imports this module: it passes the source to ``python3 -I -S -c``, so no
``PYTHON*`` variable of the job and no site-packages change how the files are put in place.
Arguments: the script's path, the directory for sitecustomize, then the job's arguments.
"""

from __future__ import annotations

# The C module behind ``signal``: the same calls with plain int constants, without the enum
# import (~3 ms) that ``import signal`` adds to every job's start.
import _signal as signal
import os
import struct
import sys
import time

# Every import here is paid by every job's start: no json (~15 ms), no contextlib.
try:  # noqa: SIM105
    from compound.agent.runners.sandbox_files import (
        OUTPUTS_DIR_NAME,
        InputRefused,
        extract_inputs,
        refuse_inputs,
        send_outputs,
    )
except ImportError:  # shipped: sandbox_files' source ran first, its names are ours
    pass

HEADER = struct.Struct(">QQ")
READ_BYTES = 1024 * 1024
# A launch that could not happen; distinct from what a Python script usually exits with.
LAUNCH_FAILED_EXIT = 125

# The files section: inputs tar size, most input files, outputs cap, SIGTERM to SIGKILL,
# the marker's length; then the marker and the inputs tar. Must match docker_spec.
CONTROL = struct.Struct(">QQQdH")
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


class FilesControl:
    """What the agent says about this job's files (see ``CONTROL``)."""

    def __init__(self) -> None:
        fields = CONTROL.unpack(read_exactly(0, CONTROL.size))
        self.inputs_bytes, self.max_input_files, self.max_outputs_bytes = fields[:3]
        self.kill_after_s: float = fields[3]
        self.marker = read_exactly(0, fields[4])


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
            try:  # noqa: SIM105
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def _on_alarm(self, _signum: int, _frame: object) -> None:
        kill_all_but_me()

    def run(self, script_path: str, args: list[str]) -> int:
        """Start the job unless stopped already; its exit code, as a shell reports it."""
        if self.terminated:
            return 128 + int(signal.SIGTERM)
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
    try:  # noqa: SIM105
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass


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
    control = FilesControl()
    job_dir = os.path.dirname(script_path)
    job = JobProcess(control.kill_after_s)
    try:
        if control.inputs_bytes:
            extract_inputs(job_dir, control.inputs_bytes, control.max_input_files)
    except InputRefused as exc:
        refuse_inputs(control.marker, str(exc))
        return LAUNCH_FAILED_EXIT
    os.mkdir(os.path.join(job_dir, OUTPUTS_DIR_NAME), 0o755)
    os.chmod(job_dir, 0o555)
    # The job gets an empty stdin, as it had before the files came this way.
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    code = job.run(script_path, args)
    wait_for_the_rest()
    send_outputs(control.marker, job_dir, control.max_outputs_bytes)
    return code


if __name__ == "__main__":
    try:
        exit_code = launch(sys.argv[1], sys.argv[2], sys.argv[3:])
    except (OSError, EOFError, ValueError, KeyError, struct.error) as exc:
        sys.stderr.write(f"[compound] could not start the job: {exc}\n")
        sys.exit(LAUNCH_FAILED_EXIT)
    # Everything went out with os.write: no buffer to flush, no interpreter to tear down.
    os._exit(exit_code)
