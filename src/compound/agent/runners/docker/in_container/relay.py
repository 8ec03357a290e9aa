"""Shipped into each job container with the launcher: the job's output, a few writes at a time.

Under gVisor every system call of the job costs ~50 us, and ``python3 -u`` writes every
line (``print`` is two writes). So the job does not write its output itself: its
sitecustomize (see stdio) appends records to a ring in shared memory, with no system call,
and this relay, a thread of the launcher, copies them out to the container's stdout in
the order they were written (stderr framed there, see ``stderr_tag``), consecutive
records of one stream joined into one write. It reads every ``TICK_S`` (so a line shows
within tens of milliseconds), at once when the job says much is waiting or that it waits
for the ring to be drained (a full ring, or before something else writes to the same
descriptors). The buffer is not the job's: when
the job ended, however (``os._exit``, a crash, SIGKILL), the launcher copies out what is
left before the outputs trailer.

The ring is set up by the container's bootstrap (see docker.payload), before the zygote is
forked, at fixed descriptors every job interpreter inherits; the launcher names the job's
pid in its head, and only that process writes there (see stdio.attach_relay). The format
(head, records) is stdio's; the constants must match. What the job writes into the ring
is its own output: garbage there ends the relay, never the launcher.
"""

from __future__ import annotations

import _thread
import os
import select

RING_FD = 100
KICK_FD = 101
ANSWER_FD = 102
KICK_WAIT = b"w"
ANSWER = b"a"
MAGIC = b"CMPDOUT1"
OWNER_AT = 8
WRITTEN_AT = 16
READ_AT = 24
DATA_AT = 64
RING_BYTES = 1024 * 1024
RECORD_HEAD_BYTES = 5
# How long a line may wait in the ring before it is written out.
TICK_S = 0.02
_STREAM_FDS = (1, 2)
# The engine carries stdout and stderr on two pipes, which lose the order between them: so
# the job's stderr from the ring goes on stdout too, framed as ``stderr_tag(marker)``, a
# 4-byte big-endian length and the bytes (see docker.interleave, which takes it apart). The
# tag derives from the trailer's marker, which the job cannot read, so it cannot forge one.
# Each frame is one write of at most PIPE_BUF bytes: a write of another process to the
# same pipe (a child of the job) cannot land inside it.
PIPE_BUF = 4096


def stderr_tag(marker: bytes) -> bytes:
    """The tag of a stderr frame on stdout: the marker with its second byte changed (so
    neither is found inside the other)."""
    return marker[:1] + b"\xfe" + marker[2:]


def _stderr_frames(tag: bytes, data: bytes) -> list[bytes]:
    step = PIPE_BUF - len(tag) - 4
    return [
        tag + len(piece).to_bytes(4, "big") + piece
        for piece in (data[at : at + step] for at in range(0, len(data), step))
    ]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            select.select([], [fd], [])


def _records(data: bytes) -> list[tuple[int, bytes]] | None:
    """``data`` cut into ``(fd, bytes)`` runs, consecutive ones of a stream joined; None
    when it is not a sequence of whole records."""
    runs: list[tuple[int, list[bytes]]] = []
    offset = 0
    while offset < len(data):
        fd = data[offset]
        end = offset + RECORD_HEAD_BYTES + int.from_bytes(data[offset + 1 : offset + 5], "little")
        if fd not in _STREAM_FDS or end > len(data):
            return None
        if not runs or runs[-1][0] != fd:
            runs.append((fd, []))
        runs[-1][1].append(data[offset + RECORD_HEAD_BYTES : end])
        offset = end
    return [(fd, b"".join(chunks)) for fd, chunks in runs]


class OutputRelay:
    """The reading end of the ring: ``start`` before the job runs, ``stop`` once it ended."""

    def __init__(self, kick_read: int, answer_write: int) -> None:
        import mmap

        self._region = mmap.mmap(RING_FD, DATA_AT + RING_BYTES)
        self._kick = kick_read
        self._answer = answer_write
        self._read = 0
        self._stopping = False
        # Held while the ring is copied out: the thread and ``stop`` never write at once.
        self._copying = _thread.allocate_lock()
        self.broken = False
        # Set by ``start``: stderr records go on stdout, framed with this tag.
        self._stderr_tag = b""
        # Held by the thread while it runs (see ``renewed``).
        self._running = _thread.allocate_lock()

    @classmethod
    def adopt(cls, spec: str) -> OutputRelay | None:
        """The relay the bootstrap set up (``KICK_READ_FD:ANSWER_WRITE_FD``), if it did."""
        if not spec:
            return None
        kick_read, answer_write = (int(part) for part in spec.split(":"))
        return cls(kick_read, answer_write)

    def own(self, pid: int) -> None:
        """Let process ``pid`` (the job's) write to the ring; no other process will."""
        self._region[OWNER_AT:WRITTEN_AT] = pid.to_bytes(8, "little")

    @classmethod
    def fresh(cls) -> OutputRelay:
        """A new ring and pipes at the fixed descriptors (as the container's bootstrap sets
        them up, see docker.payload), for the next job a reused container runs."""
        ring = os.memfd_create("compound-output")
        os.ftruncate(ring, DATA_AT + RING_BYTES)
        os.pwrite(ring, MAGIC, 0)
        kick_read, kick_write = os.pipe()
        answer_read, answer_write = os.pipe()
        for fd, fixed in zip(
            (ring, kick_write, answer_read), (RING_FD, KICK_FD, ANSWER_FD), strict=True
        ):
            os.dup2(fd, fixed)  # inheritable: the job's interpreter finds them there
            os.close(fd)
        return cls(kick_read, answer_write)

    def renewed(self) -> OutputRelay:
        """This relay's successor for the next job, once this one's thread has ended: the
        last job had the ring, its head and the pipes to play with."""
        # Wakes the thread now rather than at its next tick: it sees the stop and ends.
        try:  # noqa: SIM105  # contextlib costs every job's start an import
            os.write(KICK_FD, b"x")
        except OSError:
            pass
        with self._running:
            pass
        os.close(self._kick)
        self._region.close()
        return OutputRelay.fresh()

    def start(self, marker: bytes) -> None:
        """Relay from now on; stderr goes framed on stdout (see ``stderr_tag``)."""
        self._stderr_tag = stderr_tag(marker)
        self._running.acquire()
        _thread.start_new_thread(self._run, ())

    def stop(self) -> None:
        """Copy out what is left (the job is gone: nothing comes) and stop relaying.

        Without waiting for the thread's next tick (up to ``TICK_S`` on every job's end):
        from here on the thread writes nothing and ends at that tick by itself.
        """
        with self._copying:
            self._stopping = True
            self.copy_out()

    def _run(self) -> None:
        try:
            while True:
                ready, _, _ = select.select([self._kick], [], [], TICK_S)
                waiting = os.read(self._kick, 4096).count(KICK_WAIT) if ready else 0
                with self._copying:
                    if self._stopping:
                        return
                    self.copy_out()
                if waiting:
                    _write_all(self._answer, ANSWER * waiting)
        except OSError:
            self.broken = True
        finally:
            # A job waiting for an answer reads EOF and writes directly from then on.
            os.close(self._answer)
            self._running.release()

    def copy_out(self) -> None:
        """Write out every whole record in the ring, in order, then mark it read."""
        written = int.from_bytes(self._region[WRITTEN_AT:READ_AT], "little")
        pending = written - self._read
        if pending <= 0:
            return
        if pending > RING_BYTES or self.broken:
            # The job wrote over the ring's head: what it writes there is skipped, and a
            # job waiting for room still gets it.
            self.broken = True
            self._mark_read(written)
            return
        at = self._read % RING_BYTES
        first = min(pending, RING_BYTES - at)
        data = self._region[DATA_AT + at : DATA_AT + at + first]
        if first < pending:
            data += self._region[DATA_AT : DATA_AT + pending - first]
        runs = _records(data)
        if runs is None:
            self.broken = True
            runs = []
        for fd, chunk in runs:
            if fd == 1:
                _write_all(1, chunk)
            else:
                for frame in _stderr_frames(self._stderr_tag, chunk):
                    _write_all(1, frame)
        self._mark_read(written)

    def _mark_read(self, written: int) -> None:
        self._read = written
        self._region[READ_AT : READ_AT + 8] = written.to_bytes(8, "little")
