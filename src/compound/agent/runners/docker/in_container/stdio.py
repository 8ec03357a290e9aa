"""Shipped into each job container as ``sitecustomize.py``: the job's stdout and stderr.

Two jobs here. First, no byte is dropped: with ``-u`` Python writes through a raw file and
its text layer ignores short writes (fixed only in later CPython releases); gVisor's pipes
return short writes past 64 KiB, so a 1 MiB ``print`` lost all but its first 64 KiB. Here
every write is completed.

Second, output costs few system calls. Under gVisor every system call is expensive (~50 us
on its ptrace platform), and ``print`` under ``-u`` is two writes: 100,000 short lines took
16 s against 0.7 s buffered. So when the launcher set up its output relay (see
``in_container.relay``), ``sys.stdout`` and ``sys.stderr`` append records to a shared
memory ring instead, with no system call; the launcher, another process, copies them out
in order (stdout and stderr interleaved as written) a few tens of milliseconds later, or
at once when the ring fills. The buffer is not this process's: a job that calls
``os._exit``, crashes or is killed loses nothing, the launcher reads the ring after the
job ended. Before anything else could write to the same descriptors (``os.write`` on 1 or
2, a fork, an exec, a spawned program, ``subprocess``), the ring is drained first, so the
order stays as written. A forked child writes directly, as before.

The agent never imports this module: it reads its source and ships it. The work happens
only when Python imports the file as ``sitecustomize`` inside the container.
"""

# No ``from __future__ import annotations`` and no ``typing``: every job imports this
# file, and typing alone cost each job ~12 ms of CPU and put modules in its sys.modules
# that ``python3 -u`` would not have loaded.
import _thread
import io
import os
import select
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from mmap import mmap
    from typing import Any, TextIO

    from _typeshed import ReadableBuffer

# The relay's fixed descriptors in the job: the ring (a memfd), the kick pipe's write end
# (b"n": there is much to read; b"w": drain and answer), the answer pipe's read end.
RING_FD = 100
KICK_FD = 101
ANSWER_FD = 102
KICK_NUDGE = b"n"
KICK_WAIT = b"w"
# The ring's head: magic, the pid allowed to write, bytes written, bytes read (the last
# two counted since the start, little-endian, each an aligned 8-byte word written at once).
MAGIC = b"CMPDOUT1"
OWNER_AT = 8
WRITTEN_AT = 16
READ_AT = 24
DATA_AT = 64
RING_BYTES = 1024 * 1024
# A record: stream (1 or 2, one byte), length (4 bytes, little-endian), data.
RECORD_HEAD_BYTES = 5
# Past this much unread, the launcher is told to read now rather than at its next tick.
NUDGE_BYTES = 64 * 1024
# A write this big goes out directly (after the ring is drained): one system call.
DIRECT_BYTES = 64 * 1024
_HEADS = {1: b"\x01", 2: b"\x02"}


# Ours, before attach_relay wraps os.write.
_os_write = os.write


def write_all(fd: int, data: "ReadableBuffer") -> int:
    """Write every byte of ``data`` to ``fd``, waiting when a non-blocking pipe is full."""
    # Usually everything is written at once: one system call and no memoryview.
    try:
        written = _os_write(fd, data)
    except BlockingIOError:
        written = 0
    if isinstance(data, bytes) and written == len(data):
        return written
    view = memoryview(data).cast("B")
    while written < len(view):
        try:
            written += _os_write(fd, view[written:])
        except BlockingIOError:
            select.select([], [fd], [])
    return written


class Ring:
    """The writing end of the launcher's relay: records appended in shared memory."""

    def __init__(self, region: "mmap") -> None:
        self._region = region
        self._written = int.from_bytes(region[WRITTEN_AT:READ_AT], "little")
        # What the launcher had read when last looked at: re-read only when it matters.
        self._read_seen = self._read()
        self._nudged = self._written
        self._lock = _thread.RLock()
        self._busy = False
        # The launcher's relay stopped answering: write directly from now on.
        self.gone = False

    def _read(self) -> int:
        return int.from_bytes(self._region[READ_AT : READ_AT + 8], "little")

    def append(self, fd: int, data: "ReadableBuffer") -> bool:
        """Append ``data`` for ``fd``; False when it must be written directly instead
        (a write from a signal handler that interrupted one here, or no relay left)."""
        with self._lock:
            if self._busy or self.gone:
                return False
            self._busy = True
            try:
                # What the text layer hands over is bytes; anything else is made bytes.
                if type(data) is not bytes:
                    data = memoryview(data).tobytes()
                if len(data) >= DIRECT_BYTES and fd == 1:
                    # One system call for this much is cheap: drain, then write it directly.
                    # (Stderr stays in the ring: the relay keeps its place among stdout.)
                    self.drain()
                    write_all(fd, data)
                    return True
                for at in range(0, len(data), DIRECT_BYTES):
                    piece = data[at : at + DIRECT_BYTES]
                    self._put(_HEADS[fd] + len(piece).to_bytes(4, "little") + piece)
            finally:
                self._busy = False
        return True

    def _put(self, record: bytes) -> None:
        size = len(record)
        written = self._written
        if written + size - self._read_seen > RING_BYTES:
            while True:
                self._read_seen = self._read()
                if written + size - self._read_seen <= RING_BYTES:
                    break
                if not self._wait():
                    raise OSError("the output relay is gone")
        region = self._region
        at = written % RING_BYTES
        if at + size <= RING_BYTES:
            region[DATA_AT + at : DATA_AT + at + size] = record
        else:
            first = RING_BYTES - at
            region[DATA_AT + at : DATA_AT + RING_BYTES] = record[:first]
            region[DATA_AT : DATA_AT + size - first] = record[first:]
        written += size
        self._written = written
        # Published after the record's bytes: the launcher only reads whole records.
        region[WRITTEN_AT:READ_AT] = written.to_bytes(8, "little")
        if written - self._nudged >= NUDGE_BYTES:
            self._nudged = written
            _os_write(KICK_FD, KICK_NUDGE)

    def _wait(self) -> bool:
        """Ask the launcher to read everything and wait until it did; False: it is gone."""
        try:
            _os_write(KICK_FD, KICK_WAIT)
            answered = os.read(ANSWER_FD, 1) != b""
        except OSError:
            answered = False
        self.gone = self.gone or not answered
        return answered

    def drain(self) -> None:
        """Return once the launcher has written out everything appended so far."""
        with self._lock:
            while not self.gone and self._read() < self._written:
                self._wait()
            self._read_seen = self._read()


class Output:
    """Where the job's output goes: the ring while this process owns it, else the fds."""

    def __init__(self) -> None:
        self.ring: Ring | None = None

    def write(self, fd: int, data: "ReadableBuffer") -> int:
        ring = self.ring
        if ring is not None:
            try:
                if ring.append(fd, data):
                    return memoryview(data).nbytes
            except OSError:
                # No relay to read the ring: what it held is lost with it; write directly.
                self.ring = None
        return write_all(fd, data)

    def drain(self) -> None:
        ring = self.ring
        if ring is not None:
            ring.drain()

    def detach(self) -> None:
        self.ring = None


OUTPUT = Output()


class FullWriter(io.RawIOBase):
    """A raw, unbuffered writer on ``fd`` whose ``write`` always takes everything."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return os.isatty(self._fd)

    def write(self, data: "ReadableBuffer") -> int:
        ring = OUTPUT.ring
        if ring is not None and type(data) is bytes:
            # The usual case, without a call more.
            try:
                if ring.append(self._fd, data):
                    return len(data)
            except OSError:
                OUTPUT.ring = None
        return OUTPUT.write(self._fd, data)


def _rewrap(stream: "TextIO | None", fd: int) -> "TextIO | None":
    if stream is None:
        return None
    # A raw file under the text layer, as -u sets it up; typeshed only admits buffered ones.
    raw: Any = FullWriter(fd)
    return io.TextIOWrapper(raw, encoding=stream.encoding, errors=stream.errors, write_through=True)


def _draining(function: "Any") -> "Any":
    """``function``, once the ring is drained: what it starts may write to our fds."""

    def drained(*args: "Any", **kwargs: "Any") -> "Any":
        OUTPUT.drain()
        return function(*args, **kwargs)

    drained.__name__ = function.__name__
    drained.__doc__ = function.__doc__
    return drained


def _write(fd: int, data: "ReadableBuffer") -> int:
    if fd in (1, 2):
        OUTPUT.drain()
    return _os_write(fd, data)


_write.__doc__ = os.write.__doc__


def attach_relay() -> bool:
    """Send this process's output through the launcher's relay if it set one up for it."""
    try:
        head = os.pread(RING_FD, DATA_AT, 0)
    except OSError:
        return False
    if (
        head[:OWNER_AT] != MAGIC
        or int.from_bytes(head[OWNER_AT:WRITTEN_AT], "little") != os.getpid()
    ):
        return False
    import mmap as mmap_module

    OUTPUT.ring = Ring(mmap_module.mmap(RING_FD, DATA_AT + RING_BYTES))
    # Everything that lets something else write to fds 1 and 2 drains the ring first.
    # subprocess makes its error pipe right before it forks and execs the child.
    for name in ("execv", "execve", "posix_spawn", "posix_spawnp", "system", "pipe"):
        setattr(os, name, _draining(getattr(os, name)))
    os.write = _write
    os.register_at_fork(before=OUTPUT.drain, after_in_child=OUTPUT.detach)
    return True


def install() -> None:
    """Replace ``sys.stdout`` and ``sys.stderr`` (``sys.__stdout__`` keeps the originals)."""
    stdout = _rewrap(sys.stdout, 1)
    if stdout is not None:
        sys.stdout = stdout
    stderr = _rewrap(sys.stderr, 2)
    if stderr is not None:
        sys.stderr = stderr
    attach_relay()


if __name__ == "sitecustomize":
    install()
