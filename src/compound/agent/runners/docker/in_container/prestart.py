"""Shipped into each job container with the launcher: the job's interpreter, started early.

The container's bootstrap (see docker.payload) forks a zygote (see zygote) as the
container starts, so the job's ``python3 -u`` is up by the time the job arrives, and the
launcher hands it the job instead of starting one (a ``Zygote`` adopts it). It is the
launcher's child, as the job's process always is: SIGTERM is forwarded to it and its exit
code is the job's. It serves one job and no other: it is started in a container used for
exactly one job, and gets nothing but that job.

Only when the job's environment would start an interpreter exactly as the zygote was
started: a ``PYTHON*`` variable, the locale, ``HOME`` (the user site directory) or ``TZ``
(``time`` is imported at start) that differs from the container's means the zygote is
discarded and the job runs as ``python3 -u script`` (``JobProcess``), as it always did.

The agent never imports this module: ``docker.spec`` ships its source before the
launcher's (one program), so its names are the launcher's.
"""

from __future__ import annotations

# The C module behind ``signal``: see launcher.
import _signal as signal
import marshal
import os
import sys

# Read while an interpreter starts, besides every PYTHON* variable.
STARTUP_VARIABLES = frozenset({"HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ"})
STARTUP_PREFIX = "PYTHON"
ZYGOTE_READY = b"R"


def starts_alike(env: dict[str, str], started_with: dict[str, str]) -> bool:
    """Whether an interpreter started with ``env`` starts as one with ``started_with``."""
    names = {*env, *started_with}
    startup = {n for n in names if n.startswith(STARTUP_PREFIX) or n in STARTUP_VARIABLES}
    return all(env.get(name) == started_with.get(name) for name in startup)


class Zygote:
    """A started ``python3 -u`` waiting for one job (see zygote)."""

    def __init__(self, pid: int, job_write: int, ready_read: int) -> None:
        self.pid = pid
        self._job_write = job_write
        self._ready_read = ready_read
        # Forked from this process's interpreter before anything else ran: its environment.
        self.started_with = dict(os.environ)
        # Whether it said it is up, once read (see ``wait_ready``).
        self._ready: bool | None = None

    @classmethod
    def spawn(cls, source: str) -> Zygote:
        """A new one, for the next job of a reused container: ``python3 -u -c source``
        (zygote's own source) with this process's environment, as the bootstrap's was."""
        job_read, job_write = os.pipe()
        ready_read, ready_write = os.pipe()
        argv = [sys.executable, "-u", "-c", source, str(job_read), str(ready_write)]
        pid = os.fork()
        if pid == 0:
            try:
                null = os.open(os.devnull, os.O_RDONLY)
                os.dup2(null, 0)
                os.set_inheritable(job_read, True)
                os.set_inheritable(ready_write, True)
                os.execv(argv[0], argv)
            finally:
                os._exit(127)
        os.close(job_read)
        os.close(ready_write)
        return cls(pid, job_write, ready_read)

    @classmethod
    def adopt(cls, spec: str) -> Zygote:
        """The zygote the container's bootstrap forked: ``PID:JOB_WRITE_FD:READY_READ_FD``."""
        pid, job_write, ready_read = (int(part) for part in spec.split(":"))
        return cls(pid, job_write, ready_read)

    def serves(self, env: dict[str, str]) -> bool:
        return starts_alike(env, self.started_with)

    def wait_ready(self) -> bool:
        """Wait until it is up (or gone); whether it is up."""
        if self._ready is None:
            self._ready = os.read(self._ready_read, 1) == ZYGOTE_READY
            self._close_ready()
        return self._ready

    def hand(self, argv: list[bytes], env: dict[bytes, bytes]) -> bool:
        """Give it the job, once it is up; False (and nothing sent) if it never came up."""
        if not self.wait_ready():
            return False
        message = memoryview(marshal.dumps((argv, env)))
        try:
            while message:
                message = message[os.write(self._job_write, message) :]
        except BrokenPipeError:
            pass  # it was killed after it came up: its exit status says so
        finally:
            self._close_job()
        return True

    def discard(self) -> None:
        """Kill it and reap it (the job runs another way, or not at all)."""
        self._close_ready()
        self._close_job()
        try:  # noqa: SIM105
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(self.pid, 0)

    def _close_ready(self) -> None:
        if self._ready_read >= 0:
            os.close(self._ready_read)
            self._ready_read = -1

    def _close_job(self) -> None:
        # Closed, the zygote reads EOF: with no job sent, it exits.
        if self._job_write >= 0:
            os.close(self._job_write)
            self._job_write = -1
