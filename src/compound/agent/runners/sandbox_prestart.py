"""Shipped into each job container with the launcher: the job's interpreter, started early.

The launcher starts a ``Zygote`` (see sandbox_zygote) when the container starts, so the
job's ``python3 -u`` is up by the time the job arrives, and hands it the job instead of
starting one. It is the launcher's child, as the job's process always is: SIGTERM is
forwarded to it and its exit code is the job's. It serves one job and no other: it
is started in a container used for exactly one job, and gets nothing but that job.

Only when the job's environment would start an interpreter exactly as the zygote was
started: a ``PYTHON*`` variable, the locale, ``HOME`` (the user site directory) or ``TZ``
(``time`` is imported at start) that differs from the container's means the zygote is
discarded and the job runs as ``python3 -u script`` (``JobProcess``), as it always did.

The agent never imports this module: ``docker_spec`` ships its source before the
launcher's (one program), so its names are the launcher's.
"""

from __future__ import annotations

# The C module behind ``signal``: see sandbox_launch.
import _signal as signal
import marshal
import os
import sys

# Read while an interpreter starts, besides every PYTHON* variable.
STARTUP_VARIABLES = frozenset({"HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ"})
STARTUP_PREFIX = "PYTHON"
ZYGOTE_READY = b"R"
# Must match sandbox_launch.LAUNCH_FAILED_EXIT (not imported: shipped before it).
_EXEC_FAILED_EXIT = 125


def starts_alike(env: dict[str, str], started_with: dict[str, str]) -> bool:
    """Whether an interpreter started with ``env`` starts as one with ``started_with``."""
    names = {*env, *started_with}
    startup = {n for n in names if n.startswith(STARTUP_PREFIX) or n in STARTUP_VARIABLES}
    return all(env.get(name) == started_with.get(name) for name in startup)


class Zygote:
    """A started ``python3 -u`` waiting for one job (see sandbox_zygote)."""

    def __init__(self, source: str) -> None:
        """Start it with this process's environment, stdin on /dev/null."""
        job_read, self._job_write = os.pipe()
        self._ready_read, ready_write = os.pipe()
        self.started_with = dict(os.environ)
        self.pid = os.fork()
        if self.pid == 0:
            try:
                null = os.open(os.devnull, os.O_RDONLY)
                os.dup2(null, 0)
                os.set_inheritable(job_read, True)
                os.set_inheritable(ready_write, True)
                argv = [sys.executable, "-u", "-c", source, str(job_read), str(ready_write)]
                os.execv(sys.executable, argv)
            finally:
                os._exit(_EXEC_FAILED_EXIT)
        os.close(job_read)
        os.close(ready_write)

    def serves(self, env: dict[str, str]) -> bool:
        return starts_alike(env, self.started_with)

    def hand(self, argv: list[bytes], env: dict[bytes, bytes]) -> bool:
        """Give it the job, once it is up; False (and nothing sent) if it never came up."""
        ready = os.read(self._ready_read, 1)
        self._close_ready()
        if ready != ZYGOTE_READY:
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
