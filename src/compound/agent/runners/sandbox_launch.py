"""Shipped into each job container as its command: put the job's files in place, become the job.

The root filesystem is read-only and no host path is mounted, so the agent cannot copy
files in: the Engine API refuses an archive upload onto a read-only root, and one into a
tmpfs of a created container is hidden once the tmpfs is mounted at start. So the agent
writes them to this process's stdin instead: two big-endian 64-bit lengths, then our
sitecustomize source and the script. They go into the job's own tmpfs, which is then made
read-only (for the job's sake: it owns the tmpfs, so this is no security boundary). Stdin
is pointed at ``/dev/null`` and the process execs ``python3 -u`` on the script, keeping its
PID, environment and output descriptors: not a byte of output comes from here on success.

The agent never imports this module: it passes the source to ``python3 -I -S -c``, so no
``PYTHON*`` variable of the job and no site-packages change how the files are put in place.
Arguments: the script's path, the directory for sitecustomize, then the job's arguments.
"""

from __future__ import annotations

import os
import struct
import sys

HEADER = struct.Struct(">QQ")
READ_BYTES = 1024 * 1024
# A launch that could not happen; distinct from what a Python script usually exits with.
LAUNCH_FAILED_EXIT = 125


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


def launch(script_path: str, site_dir: str, args: list[str]) -> None:
    """Read the files from stdin, write them, exec the script; returns only by raising."""
    script_bytes, site_bytes = HEADER.unpack(read_exactly(0, HEADER.size))
    site_source = read_exactly(0, site_bytes)
    script = read_exactly(0, script_bytes)
    os.mkdir(site_dir, 0o755)
    write_read_only(os.path.join(site_dir, "sitecustomize.py"), site_source)
    os.chmod(site_dir, 0o555)
    write_read_only(script_path, script)
    os.chmod(os.path.dirname(script_path), 0o555)
    # The job gets an empty stdin, as it had before the files came this way.
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.execv(sys.executable, [sys.executable, "-u", script_path, *args])


if __name__ == "__main__":
    try:
        launch(sys.argv[1], sys.argv[2], sys.argv[3:])
    except (OSError, EOFError, struct.error) as exc:
        sys.stderr.write(f"[compound] could not start the job: {exc}\n")
        sys.exit(LAUNCH_FAILED_EXIT)
