"""Taking the job's stderr frames off its stdout, so both streams keep the job's order.

Pure parser, no I/O. The engine carries stdout and stderr on two pipes and loses the order
between them, so the launcher's output relay (see in_container.relay) sends the job's
stderr on stdout as frames: a tag only the launcher knows (``stderr_tag`` of the trailer's
marker), a 4-byte big-endian length, the bytes. Everything else on stdout is the job's
stdout and passes through unchanged; only a chunk's suffix that could be the start of a
tag, or a frame not yet whole, is held back until the next chunk tells.
"""

from __future__ import annotations

from compound.agent.runners.docker.in_container.relay import PIPE_BUF, stderr_tag
from compound.agent.runners.docker.trailer import partial_marker
from compound.protocol import Stream

_LENGTH_BYTES = 4

Pieces = list[tuple[Stream, bytes]]


class StderrUnframer:
    """Feed the job's stdout in (the trailer already split off); ``(stream, bytes)`` out."""

    def __init__(self, marker: bytes) -> None:
        self._tag = stderr_tag(marker)
        self._held = b""

    def feed(self, data: bytes) -> Pieces:
        buffer = self._held + data if self._held else data
        pieces: Pieces = []
        while buffer:
            at = buffer.find(self._tag)
            if at == -1:
                keep = partial_marker(buffer, self._tag)
                _add(pieces, Stream.STDOUT, buffer[: len(buffer) - keep])
                buffer = buffer[len(buffer) - keep :]
                break
            _add(pieces, Stream.STDOUT, buffer[:at])
            head_end = at + len(self._tag) + _LENGTH_BYTES
            if len(buffer) < head_end:
                buffer = buffer[at:]
                break
            length = int.from_bytes(buffer[head_end - _LENGTH_BYTES : head_end], "big")
            if length > PIPE_BUF:
                # Not a frame the launcher writes: pass it on as it came.
                _add(pieces, Stream.STDOUT, buffer[at:head_end])
                buffer = buffer[head_end:]
                continue
            if len(buffer) < head_end + length:
                buffer = buffer[at:]
                break
            _add(pieces, Stream.STDERR, buffer[head_end : head_end + length])
            buffer = buffer[head_end + length :]
        self._held = buffer
        return pieces

    def end(self) -> Pieces:
        """Stdout ended: what is still held back was the job's stdout after all."""
        held, self._held = self._held, b""
        return [(Stream.STDOUT, held)] if held else []


def _add(pieces: Pieces, stream: Stream, data: bytes) -> None:
    if not data:
        return
    if pieces and pieces[-1][0] is stream:
        pieces[-1] = (stream, pieces[-1][1] + data)
    else:
        pieces.append((stream, data))
