"""Shipped into each job container as its command: receive the job, put it in place, run it.

The root filesystem is read-only and no host path is mounted for the job's files, so the
agent cannot copy files in: the Engine API refuses an archive upload onto a read-only root,
and one into a tmpfs of a created container is hidden once the tmpfs is mounted at start. So
the agent writes the whole job to this process's stdin instead, which also makes a started
container job-agnostic (the warm pool starts containers before any job exists):

    4-byte big-endian length of the header, the header (``marshal`` format 4 of
    ``{"args": [str], "env": {str: str}, "sections": [[name, length], ...]}``),
    then each section's bytes, in the order the header lists them,
    then the files section (see ``FilesControl``): a fixed head, the trailer's marker and
    the job's input files as one tar.

Each section is handed to its writer in ``SECTION_WRITERS`` (``script_name``: the script's
file name in the job's directory, optional, before ``script``: the job's script).
``marshal``, not JSON: it is built in, where importing json costs every job's start ~9 ms;
the bytes come from the agent only (the job starts after they are read). The job's tmpfs,
``/job``, is also its working directory, writable for the job (within the tmpfs's size):
inputs are extracted there as copies the job may change, beside an empty ``outputs/``.
Stdin is pointed at ``/dev/null`` and the job runs as ``python3 -u`` on the script (in the
zygote started ahead when its environment allows, see prestart), a child of this process
with the job's arguments and environment (which never reach tini, PID 1, nor this
process) and its output descriptors: not a byte of the job's output comes from here.

When the job ends (or is stopped: SIGTERM is forwarded, SIGKILL follows before the agent's
grace period is over) every process of the job is killed, and what the job left in
``/job/outputs`` and the files it created or changed in ``/job`` go to stdout as a
trailer: a marker the agent chose for this job (read from stdin before the job started;
this process is not dumpable, so the job cannot read it), tar data in frames, an end
frame with a footer that carries the job's exit code (the agent reports the result from
it without waiting for the container to end); the marker goes to stderr too, after the
job's last byte there. Then this process exits with the job's exit code. See
docs/sandbox.md.

The container's ``python3 -u -c BOOTSTRAP_SOURCE`` (see docker.payload) reads this program
from stdin, forks the zygote, keeps only the standard library on ``sys.path`` and runs it,
so no dependency directory and no input file changes how the job is put in place. The
agent imports this module for its constants only. Arguments: the script's default path and the
zygote as ``PID:JOB_WRITE_FD:READY_READ_FD`` (see prestart; empty: none, every job
starts its own interpreter).
"""

from __future__ import annotations

# The C module behind ``signal``: the same calls with plain int constants, without the enum
# import (~3 ms) that ``import signal`` adds to every job's start.
import _signal as signal
import marshal
import os
import stat
import struct
import sys
import time

# Every import here is paid by every job's start: no json (~15 ms), no contextlib, no typing.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

try:
    from compound.agent.runners.docker.in_container.files import (
        OUTPUTS_DIR_NAME,
        InputRefused,
        extract_inputs,
        refuse_inputs,
        send_outputs,
        snapshot,
        write_all,
    )
    from compound.agent.runners.docker.in_container.prestart import Zygote
    from compound.agent.runners.docker.in_container.relay import OutputRelay
except ImportError:  # shipped: files' and prestart's source ran first, its names are ours
    pass

HEADER_LENGTH = struct.Struct(">I")
# The header carries arguments and environment, both bounded far lower by the coordinator.
MAX_HEADER_BYTES = 4 * 1024 * 1024
MARSHAL_FORMAT = 4
SCRIPT_SECTION = "script"
SCRIPT_NAME_SECTION = "script_name"
# A script's file name: plain, ending in .py (compound.protocol.script_names makes them).
MAX_SCRIPT_NAME_BYTES = 100
_SCRIPT_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
READ_BYTES = 1024 * 1024
# A launch that could not happen; distinct from what a Python script usually exits with.
LAUNCH_FAILED_EXIT = 125

# The files section: inputs tar size, most input files, outputs cap, SIGTERM to SIGKILL,
# the marker's length, whether to stay for another job (see ``reset_for_next_job``); then
# the marker and the inputs tar. Must match docker.spec.
CONTROL = struct.Struct(">QQQdHB")
# After the trailer of a job whose container stays: written once the next job's
# interpreter is up (the marker, then this). Must match docker.spec.READY_SUFFIX.
READY_SUFFIX = b":ready"
# What the agent asks it with (EOF instead: the container ends). Must match docker.spec.
ASK_READY = b"?"
# Writable for the job besides /job (see docker.spec): emptied before a next job.
SCRATCH_DIRS = ("/tmp", "/dev/shm", "/dev/mqueue")
# After the last SIGKILL, how long the job's processes get to disappear.
_REAP_WAIT_S = 2.0
PR_SET_DUMPABLE = 4


class LaunchError(Exception):
    """The job could not be received or put in place; ``str(exc)`` is one sentence."""


def read_exactly(fd: int, size: int) -> bytes:
    chunks = []
    while size > 0:
        chunk = os.read(fd, min(size, READ_BYTES))
        if not chunk:
            raise LaunchError("the agent closed stdin before sending the whole job")
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
        self.stay = bool(fields[5])
        self.marker = read_exactly(0, fields[4])


class JobProcess:
    """The job as this process's child: SIGTERM is forwarded, SIGKILL follows in time."""

    def __init__(self, kill_after_s: float) -> None:
        self.pid: int | None = None
        self.terminated = False
        # The job ended by a signal (its exit code is then 128 + the signal's number).
        self.signalled = False
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

    def run(
        self,
        script_path: str,
        args: list[str],
        env: dict[str, str],
        zygote: Zygote | None,
        relay: OutputRelay | None,
    ) -> int:
        """Start the job unless stopped already; its exit code, as a shell reports it.

        In ``zygote`` when it serves this environment (it is discarded otherwise), else
        as ``python3 -u script``; its output through ``relay`` when there is one.
        """
        argv, env_bytes = exec_arguments([sys.executable, "-u", script_path, *args], env)
        if zygote is not None and not self.terminated and zygote.serves(env):
            # Set first: a SIGTERM from here on reaches the zygote, which then never
            # comes up or dies with the job's first instruction.
            self.pid = zygote.pid
            if relay is not None:
                relay.own(zygote.pid)
            if not zygote.hand(argv, env_bytes):
                self.pid = None
                zygote.discard()
                zygote = None
        elif zygote is not None:
            zygote.discard()
            zygote = None
        if self.terminated and zygote is None:
            return 128 + int(signal.SIGTERM)
        if zygote is None:
            self.pid = os.fork()
            if self.pid == 0:
                try:
                    # Stdin stays the launcher's (the next job may come there).
                    give_empty_stdin()
                    if relay is not None:
                        relay.own(os.getpid())
                    os.execve(argv[0], argv, env_bytes)
                finally:
                    os._exit(LAUNCH_FAILED_EXIT)
        assert self.pid is not None
        _, status = os.waitpid(self.pid, 0)
        signal.setitimer(signal.ITIMER_REAL, 0)
        code = os.waitstatus_to_exitcode(status)
        self.signalled = code < 0
        return 128 - code if code < 0 else code


def exec_arguments(argv: list[str], env: dict[str, str]) -> tuple[list[bytes], dict[bytes, bytes]]:
    """``argv`` and ``env`` as exec takes them; LaunchError on what it cannot take.

    Encoded here, not in the child: text exec cannot take (a lone surrogate, a NUL) fails
    the launch with a sentence instead of a silent exit of the child.
    """
    argv_bytes = [os.fsencode(arg) for arg in argv]
    env_bytes = {os.fsencode(name): os.fsencode(value) for name, value in env.items()}
    if any(b"\0" in item for item in [*argv_bytes, *env_bytes, *env_bytes.values()]):
        raise LaunchError("the job's arguments or environment contain a NUL character")
    return argv_bytes, env_bytes


def give_empty_stdin() -> None:
    """Point this process's stdin at /dev/null (the job's, as ``python3 -u`` had it)."""
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)


def kill_all_but_me() -> None:
    """SIGKILL every process of our uid but this one (and init): the job and what it left."""
    try:  # noqa: SIM105
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass


def wait_for_the_rest() -> bool:
    """Kill what is left of the job and wait until it is gone, so it can write no more;
    whether it is (a process may outlast ``_REAP_WAIT_S`` in the kernel's hands)."""
    deadline = time.monotonic() + _REAP_WAIT_S
    while time.monotonic() < deadline:
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            return True
        time.sleep(0.01)
    return False


def reset_for_next_job(job_dir: str) -> bool:
    """Leave nothing of the last job for the next (the agent sends a job of the same
    submitter only): its files in ``job_dir`` and the scratch mounts. Its processes are
    gone already (``wait_for_the_rest``). False when something would not go: the container
    then ends with its job, as it does without reuse."""
    try:
        for directory in (job_dir, *SCRATCH_DIRS):
            if os.path.isdir(directory):
                empty_dir(directory)
    except (OSError, RecursionError):
        return False
    return True


def empty_dir(directory: str) -> None:
    """Remove everything in ``directory``, whatever rights the job left on it."""
    with os.scandir(directory) as entries:
        paths = [entry.path for entry in entries]
    for path in paths:
        info = os.lstat(path)
        if stat.S_ISDIR(info.st_mode):
            # The job owns what it made: it may have taken its own rights away.
            os.chmod(path, 0o700)
            empty_dir(path)
            os.rmdir(path)
        else:
            os.unlink(path)


def make_undumpable() -> None:
    """Neither ptrace nor /proc/PID/{mem,environ,fd} of this process for the job's uid."""
    # prctl through _ctypes itself: the ctypes package's import cost every job ~2 ms of CPU.
    import _ctypes

    class Int(_ctypes._SimpleCData):  # type: ignore[type-arg]  # ctypes.c_int
        _type_ = "i"

    class Function(_ctypes.CFuncPtr):  # what ctypes.CDLL(None, use_errno=True) makes
        _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
        _restype_ = Int

    class Process:
        # dlopen(NULL): this program and its libraries; typeshed knows only named ones.
        _handle = _ctypes.dlopen(None, 0)  # type: ignore[arg-type]

    prctl = Function(("prctl", Process()))  # type: ignore[arg-type]  # any object with _handle
    if prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(_ctypes.get_errno(), "prctl(PR_SET_DUMPABLE) failed")


def _is_str_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _is_section_list(value: object) -> bool:
    return isinstance(value, list) and all(
        isinstance(item, list)
        and len(item) == 2
        and isinstance(item[0], str)
        and isinstance(item[1], int)
        and item[1] >= 0
        for item in value
    )


def read_header(fd: int, first: bytes = b"") -> dict[str, object]:
    """The header (``first``: its first bytes, read already), checked for shape; raises
    LaunchError on anything else."""
    prefix = first + read_exactly(fd, HEADER_LENGTH.size - len(first))
    (length,) = HEADER_LENGTH.unpack(prefix)
    if length > MAX_HEADER_BYTES:
        raise LaunchError(f"the job's header is too big ({length} bytes)")
    try:
        header = marshal.loads(read_exactly(fd, length))
    except (ValueError, EOFError, TypeError) as exc:
        raise LaunchError("the job's header cannot be read") from exc
    env = header.get("env") if isinstance(header, dict) else None
    if not (
        isinstance(header, dict)
        and _is_str_list(header.get("args"))
        and isinstance(env, dict)
        and _is_str_list([*env, *env.values()])
        and _is_section_list(header.get("sections"))
    ):
        raise LaunchError("the job's header has the wrong shape")
    return header


def script_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be the script's file name, or None."""
    if len(name) > MAX_SCRIPT_NAME_BYTES or not name.endswith(".py") or name.startswith("."):
        return "is not a plain Python file name"
    if not set(name) <= _SCRIPT_NAME_CHARS:
        return "has characters a script's name may not have"
    return None


class Placement:
    """Where the sections go: the script's path (its name may come as a section)."""

    def __init__(self, script_path: str) -> None:
        self.script_path = script_path

    def script_name(self, data: bytes) -> None:
        name = data.decode("ascii", "replace")
        problem = script_name_problem(name)
        if problem is not None:
            raise LaunchError(f"the script's name {name[:100]!r} {problem}")
        self.script_path = os.path.join(os.path.dirname(self.script_path), name)

    def script(self, data: bytes) -> None:
        write_read_only(self.script_path, data)


SECTION_WRITERS: dict[str, Callable[[Placement, bytes], None]] = {
    SCRIPT_NAME_SECTION: Placement.script_name,
    SCRIPT_SECTION: Placement.script,
}


def receive(fd: int, placement: Placement, first: bytes = b"") -> tuple[list[str], dict[str, str]]:
    """Read the job from ``fd`` (``first``: its first bytes, read already), write its
    sections; the job's arguments and environment."""
    header = read_header(fd, first)
    for name, length in header["sections"]:  # type: ignore[attr-defined]
        writer = SECTION_WRITERS.get(name)
        if writer is None:
            raise LaunchError(f"unknown section {name!r} in the job")
        writer(placement, read_exactly(fd, length))
    return header["args"], header["env"]  # type: ignore[return-value]


def launch(
    script_path: str, zygote_spec: str, relay_spec: str = "", zygote_source: str = ""
) -> int:
    """Run the jobs the agent sends, one after the other, until one is the last; the last
    one's exit code.

    Each job runs in a zygote when one serves it (see prestart): the first in the one
    ``zygote_spec`` names, later ones in one started from ``zygote_source`` once the
    previous job is cleared away; output through the relay ``relay_spec`` names (see
    relay), a fresh one for each later job.
    """
    if os.getuid() == 0:
        # kill(-1) as root outside a sandbox would end every process of the machine.
        raise LaunchError("the launcher never runs as root")
    zygote = Zygote.adopt(zygote_spec) if zygote_spec else None
    relay = OutputRelay.adopt(relay_spec)
    make_undumpable()
    first = b""
    while True:
        code, marker, stays = run_job(script_path, zygote, relay, first)
        if not stays:
            return code
        # Fresh for the next job: the last one had the ring and the pipes to play with.
        if relay is not None:
            relay = relay.renewed()
        # After the relay's renewal: the interpreter inherits the new ring.
        zygote = Zygote.spawn(zygote_source) if zygote_source else None
        # The agent asks once it has read the trailer's end (so it cannot read the answer
        # with it), and hands a kept container its next job only once it has the answer.
        if os.read(0, 1) != ASK_READY:
            return code
        if zygote is not None:
            zygote.wait_ready()
        write_all(1, marker + READY_SUFFIX)
        # The next job, or EOF: the agent keeps this container no longer.
        first = os.read(0, 1)
        if not first:
            return code


def run_job(
    script_path: str, zygote: Zygote | None, relay: OutputRelay | None, first: bytes
) -> tuple[int, bytes, bool]:
    """Receive one job (``first``: its first byte, when already read), put its files in
    place, run it, send its outputs; its exit code, its trailer's marker, and whether this
    container stays for another job (the agent asked, the job ended by itself, nothing of
    it is left: see ``reset_for_next_job``)."""
    placement = Placement(script_path)
    args, job_env = receive(0, placement, first)
    control = FilesControl()
    job_dir, script_name = os.path.split(placement.script_path)
    job = JobProcess(control.kill_after_s)
    try:
        if control.inputs_bytes:
            extract_inputs(job_dir, control.inputs_bytes, control.max_input_files, script_name)
    except InputRefused as exc:
        refuse_inputs(control.marker, str(exc), LAUNCH_FAILED_EXIT)
        return LAUNCH_FAILED_EXIT, control.marker, False
    os.mkdir(os.path.join(job_dir, OUTPUTS_DIR_NAME), 0o755)
    # The script and the inputs as they are now: what the job creates or changes comes back.
    before = snapshot(job_dir)
    # The image's variables, then the job's (as the agent merged them with ours), exactly
    # what the container's own environment would be.
    if relay is not None:
        relay.start(control.marker)
    code = job.run(placement.script_path, args, {**os.environ, **job_env}, zygote, relay)
    all_gone = wait_for_the_rest()
    if relay is not None:
        # After the job's last process is gone and before the trailer's marker.
        relay.stop()
    # The script is never an output, even changed by the job.
    before[script_name] = None
    # A job stopped (SIGTERM), ended by a signal or with a process still there ends its
    # container, as without reuse.
    stay = control.stay and all_gone and not job.terminated and not job.signalled

    def stays() -> bool:
        # Between the outputs and the end frame: the footer tells the agent.
        return stay and reset_for_next_job(job_dir)

    ending = (code, job.signalled)
    stayed = send_outputs(control.marker, job_dir, before, control.max_outputs_bytes, ending, stays)
    return code, control.marker, stayed


if __name__ == "__main__":
    try:
        exit_code = launch(*sys.argv[1:5])
    except (OSError, LaunchError, EOFError, ValueError, KeyError, struct.error) as exc:
        # ValueError: text the interpreter cannot pass to exec (a lone surrogate).
        sys.stderr.write(f"[compound] could not start the job: {exc}\n")
        sys.exit(LAUNCH_FAILED_EXIT)
    # Everything went out with os.write: no buffer to flush, no interpreter to tear down.
    os._exit(exit_code)
