"""Shipped into each job container: the job's interpreter, started before the job exists.

Starting ``python3 -u`` costs every job ~10 ms under runc and ~30-45 ms under gVisor. The
container's interpreter (``python3 -u``, with the container's environment and our
sitecustomize) forks as soon as the container starts (see docker.payload's bootstrap); the
child runs this program's ``serve(JOB_FD, READY_FD)`` with stdin on ``/dev/null``, so the
container's start is the job's start (run as ``python3 -u -c SOURCE JOB_FD READY_FD`` it
does the same). It says it is up with one byte on READY_FD, then blocks on JOB_FD until the
launcher sends the job's ``argv`` and environment (``marshal``, bytes, as ``execve`` would
take them), and
becomes what ``python3 -u script args`` would have been: ``sys.argv``, ``sys.orig_argv``,
``sys.path[0]`` (the script's directory), ``os.environ``, a fresh ``__main__`` with
``__file__``, the script run in it; an uncaught exception is printed without our frames and
the interpreter ends as it would after one (exit 1, or SIGINT for KeyboardInterrupt);
``sys.exit`` is left to the interpreter. The launcher uses it only when nothing the job's
environment sets would have changed the interpreter's start (see prestart).

It never writes to stdout or stderr before the job runs (an idle container that says
anything is discarded), and a launcher that goes away leaves it reading EOF: it exits.
The agent never imports this module: ``docker.spec`` ships it. It must import
nothing that ``python3 -u`` has not imported already, so the job finds ``sys.modules`` as
it would.
"""

# No ``from __future__ import annotations``: it would import ``__future__`` into the job.
import marshal
import os
import sys

READY = b"R"
READ_BYTES = 1024 * 1024


def receive(job_fd: int, ready_fd: int) -> tuple[list[bytes], dict[bytes, bytes]] | None:
    """Say we are up, then wait for the job; None when the launcher gave none."""
    try:
        os.write(ready_fd, READY)
        chunks = []
        while chunk := os.read(job_fd, READ_BYTES):
            chunks.append(chunk)
    except OSError:
        return None
    finally:
        os.close(ready_fd)
        os.close(job_fd)
    if not chunks:
        return None
    argv, env = marshal.loads(b"".join(chunks))
    return argv, env


def become(argv: list[bytes], env: dict[bytes, bytes]) -> str:
    """Take the job's arguments, environment and path; the script's path."""
    os.environ.clear()
    for name, value in env.items():
        os.environb[name] = value
    sys.orig_argv = [os.fsdecode(arg) for arg in argv]
    # argv is [python3, -u, script, *args]; a script's own argv starts at the script.
    sys.argv = sys.orig_argv[2:]
    script = sys.argv[0]
    # -c put "" first; a script run by path has its directory there instead (neither with
    # PYTHONSAFEPATH, which the launcher only lets through when the zygote had it too).
    if not sys.flags.safe_path:
        sys.path[0] = os.path.dirname(script)
    return script


def run_main(script: str) -> None:
    """Run ``script`` as ``__main__``, as the interpreter runs a script given by path."""
    main = type(sys)("__main__")
    loader = sys.modules["_frozen_importlib_external"].SourceFileLoader("__main__", script)
    main.__dict__.update(
        __annotations__={},
        __builtins__=sys.modules["builtins"],
        __file__=script,
        __cached__=None,
        __loader__=loader,
    )
    sys.modules["__main__"] = main
    fd = os.open(script, os.O_RDONLY)
    try:
        source = b"".join(iter(lambda: os.read(fd, READ_BYTES), b""))
    finally:
        os.close(fd)
    try:
        # dont_inherit: none of this program's __future__ flags reach the script.
        exec(compile(source, script, "exec", dont_inherit=True), main.__dict__)
    except SystemExit:
        raise
    except BaseException as exc:
        # Without our frames: the traceback starts at the script, as it would have.
        traceback = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
        exc.__traceback__ = traceback
        sys.last_type, sys.last_value, sys.last_traceback = type(exc), exc, traceback
        sys.excepthook(type(exc), exc, traceback)
        # Printed already; re-raised so the interpreter ends the way it ends after an
        # uncaught exception (exit 1; for KeyboardInterrupt, SIGINT after finalizing).
        sys.excepthook = lambda *_: None
        raise


def serve(job_fd: int, ready_fd: int) -> None:
    job = receive(job_fd, ready_fd)
    if job is None:
        os._exit(0)
    script = become(*job)
    # Started before the relay was set up: its output goes there from now on (see stdio).
    attach = getattr(sys.modules.get("sitecustomize"), "attach_relay", None)
    if attach is not None:
        attach()
    run_main(script)


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]))
