"""Shipped into each job container as its command: receive the job, put it in place, become it.

The root filesystem is read-only and no host path is mounted for the job's files, so the
agent cannot copy files in: the Engine API refuses an archive upload onto a read-only root,
and one into a tmpfs of a created container is hidden once the tmpfs is mounted at start. So
the agent writes the whole job to this process's stdin instead, which also makes a started
container job-agnostic (the warm pool starts containers before any job exists):

    4-byte big-endian length of the header, the header (UTF-8 JSON object:
    ``{"args": [str], "env": {str: str}, "sections": [[name, length], ...]}``),
    then each section's bytes, in the order the header lists them.

Each section is handed to its writer in ``SECTION_WRITERS`` (``site``: our sitecustomize,
``script``: the job's script); a new kind of content is one more entry there and one more
``Section`` on the agent's side (see ``sandbox_payload``). The job's tmpfs is then made
read-only (for the job's sake: it owns the tmpfs, so this is no security boundary), stdin is
pointed at ``/dev/null`` and the process execs ``python3 -u`` on the script with the job's
arguments and environment, keeping its PID and output descriptors: not a byte of output
comes from here on success.

The agent passes the source to ``python3 -I -S -c``, so no ``PYTHON*`` variable and no
site-packages change how the job is put in place; the job's environment reaches only the
exec'd interpreter, never tini (PID 1) nor this process. The agent imports this module for
its constants only. Arguments: the script's path, then the directory for sitecustomize.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from collections.abc import Callable

HEADER_LENGTH = struct.Struct(">I")
# The header carries arguments and environment, both bounded far lower by the coordinator.
MAX_HEADER_BYTES = 4 * 1024 * 1024
READ_BYTES = 1024 * 1024
# A launch that could not happen; distinct from what a Python script usually exits with.
LAUNCH_FAILED_EXIT = 125
SITE_SECTION = "site"
SCRIPT_SECTION = "script"


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


def read_header(fd: int) -> dict[str, object]:
    """The header, checked for shape; raises LaunchError on anything else."""
    (length,) = HEADER_LENGTH.unpack(read_exactly(fd, HEADER_LENGTH.size))
    if length > MAX_HEADER_BYTES:
        raise LaunchError(f"the job's header is too big ({length} bytes)")
    try:
        header = json.loads(read_exactly(fd, length))
    except ValueError as exc:
        raise LaunchError("the job's header is not valid JSON") from exc
    env = header.get("env") if isinstance(header, dict) else None
    if not (
        isinstance(header, dict)
        and _is_str_list(header.get("args"))
        and isinstance(env, dict)
        and all(isinstance(value, str) for value in env.values())
        and _is_section_list(header.get("sections"))
    ):
        raise LaunchError("the job's header has the wrong shape")
    return header


class Placement:
    """Where the sections go: the script's path and our sitecustomize's directory."""

    def __init__(self, script_path: str, site_dir: str) -> None:
        self.script_path = script_path
        self.site_dir = site_dir

    def site(self, data: bytes) -> None:
        os.mkdir(self.site_dir, 0o755)
        write_read_only(os.path.join(self.site_dir, "sitecustomize.py"), data)
        os.chmod(self.site_dir, 0o555)

    def script(self, data: bytes) -> None:
        write_read_only(self.script_path, data)


SECTION_WRITERS: dict[str, Callable[[Placement, bytes], None]] = {
    SITE_SECTION: Placement.site,
    SCRIPT_SECTION: Placement.script,
}


def receive(fd: int, placement: Placement) -> tuple[list[str], dict[str, str]]:
    """Read the job from ``fd``, write its sections; the job's arguments and environment."""
    header = read_header(fd)
    for name, length in header["sections"]:  # type: ignore[attr-defined]
        writer = SECTION_WRITERS.get(name)
        if writer is None:
            raise LaunchError(f"unknown section {name!r} in the job")
        writer(placement, read_exactly(fd, length))
    return header["args"], header["env"]  # type: ignore[return-value]


def launch(script_path: str, site_dir: str) -> None:
    """Receive the job from stdin and exec it; returns only by raising."""
    args, job_env = receive(0, Placement(script_path, site_dir))
    os.chmod(os.path.dirname(script_path), 0o555)
    # The image's variables, then the job's (as the agent merged them with ours), exactly
    # what the container's own environment used to be.
    env = {**os.environ, **job_env}
    # The job gets an empty stdin, as it had before the files came this way.
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.execve(sys.executable, [sys.executable, "-u", script_path, *args], env)


if __name__ == "__main__":
    try:
        launch(sys.argv[1], sys.argv[2])
    except (OSError, LaunchError, ValueError, struct.error) as exc:
        # ValueError: text the interpreter cannot pass to exec (a lone surrogate, a NUL).
        sys.stderr.write(f"[compound] could not start the job: {exc}\n")
        sys.exit(LAUNCH_FAILED_EXIT)
