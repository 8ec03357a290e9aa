"""Splitting the launcher's outputs trailer off a job's stdout.

Pure parser, no I/O. The launcher (see in_container.launcher) ends stdout with a marker the agent
chose for this job, then frames: kind (1 byte), length (4 bytes, big-endian), data. Kind 1
carries tar data, kind 2 the footer (see ``parse_footer``) and ends the trailer. The job
cannot know the marker, so everything before it is the job's and passes through unchanged;
only a chunk's suffix that could be the start of the marker is held back until the next
chunk tells.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

FRAME = struct.Struct(">BI")
FRAME_TAR = 1
FRAME_END = 2
# The launcher sends at most 256 KiB of tar data a frame and a footer of a few hundred bytes.
MAX_FRAME_BYTES = 1024 * 1024
# Must match in_container.files.FOOTER_FORMAT: five counts, the job's exit code, whether a signal
# ended it, two text lengths, two more counts, a third text length, whether the container
# stays for another job.
FOOTER = struct.Struct(">QQQQQiBHHQQHB")
# Must match in_container.files.MAX_OUTPUT_FILES.
MAX_OUTPUT_FILES = 10_000
MAX_FOOTER_TEXT_BYTES = 1000
# The launcher's estimate of a tar's size may be off by its last record.
_TAR_SLACK_BYTES = 64 * 1024

TarSink = Callable[[bytes], None]


@dataclass(frozen=True)
class Footer:
    """What the launcher says about the outputs, checked for shape."""

    files: int = 0
    left_out: int = 0
    left_out_bytes: int = 0
    skipped: int = 0
    tar_bytes: int = 0
    # The job's exit code as a shell reports it (128 + N for signal N), and whether a
    # signal ended it.
    exit_code: int = 0
    signalled: bool = False
    error: str | None = None
    input_error: str | None = None
    # Files left out for the count cap (``left_out`` is for the byte cap).
    over_count: int = 0
    # Files skipped because their names cannot be kept, and the text naming them.
    unkept: int = 0
    unkept_names: str | None = None
    # The launcher emptied the job's folders and waits for another job (see reuse).
    stays: bool = False


def parse_footer(data: bytes) -> Footer | None:
    """The footer in ``data``, or None when it is not one."""
    if len(data) < FOOTER.size:
        return None
    fields = FOOTER.unpack_from(data)
    files, left_out, left_out_bytes, skipped, tar_bytes, exit_code, signalled = fields[:7]
    error_bytes, input_error_bytes, over_count, unkept, unkept_bytes, stays = fields[7:]
    lengths = (error_bytes, input_error_bytes, unkept_bytes)
    texts = data[FOOTER.size :]
    if max(lengths) > MAX_FOOTER_TEXT_BYTES or len(texts) != sum(lengths):
        return None
    if not 0 <= exit_code <= 255 or signalled > 1 or stays > 1:
        return None
    error, input_error, unkept_names = (
        texts[start : start + length].decode("utf-8", "replace") or None
        for start, length in zip(
            (0, error_bytes, error_bytes + input_error_bytes), lengths, strict=True
        )
    )
    return Footer(
        files,
        left_out,
        left_out_bytes,
        skipped,
        tar_bytes,
        exit_code,
        bool(signalled),
        error,
        input_error,
        over_count,
        unkept,
        unkept_names,
        bool(stays),
    )


def partial_marker(data: bytes, marker: bytes) -> int:
    """The length of the longest suffix of ``data`` that is a proper prefix of ``marker``."""
    tail = data[-(len(marker) - 1) :]
    at = tail.find(marker[:1])
    while at != -1:
        if marker.startswith(tail[at:]):
            return len(tail) - at
        at = tail.find(marker[:1], at + 1)
    return 0


class TrailerSplitter:
    """Feed stdout chunks in; the job's bytes come out, tar data goes to ``tar_sink``."""

    def __init__(self, marker: bytes, max_tar_bytes: int, tar_sink: TarSink) -> None:
        self._marker = marker
        self._max_tar_bytes = max_tar_bytes + _TAR_SLACK_BYTES
        self._tar_sink = tar_sink
        self._held = b""
        self._trailer: bytearray | None = None
        self.tar_bytes = 0
        self.footer: Footer | None = None
        # Why the trailer could not be read, in one sentence.
        self.broken: str | None = None

    @property
    def started(self) -> bool:
        """The marker has arrived: the job is over and its outputs are on their way."""
        return self._trailer is not None

    def feed(self, data: bytes) -> bytes:
        """The job's bytes among ``data`` (possibly some held back from before)."""
        if self._trailer is not None:
            self._trailer += data
            self._parse()
            return b""
        buffer = self._held + data if self._held else data
        at = buffer.find(self._marker)
        if at != -1:
            self._held = b""
            self._trailer = bytearray(buffer[at + len(self._marker) :])
            self._parse()
            return buffer[:at]
        keep = partial_marker(buffer, self._marker)
        self._held = buffer[len(buffer) - keep :] if keep else b""
        return buffer[: len(buffer) - keep]

    def end(self) -> bytes:
        """Stdout ended: bytes still held back were the job's after all."""
        held, self._held = self._held, b""
        return held

    def _parse(self) -> None:
        buffer = self._trailer
        assert buffer is not None
        offset = 0
        while self.footer is None and self.broken is None:
            if len(buffer) - offset < FRAME.size:
                break
            kind, length = FRAME.unpack_from(buffer, offset)
            if kind not in (FRAME_TAR, FRAME_END) or length > MAX_FRAME_BYTES:
                self.broken = "the sandbox sent its outputs garbled"
                break
            end = offset + FRAME.size + length
            if end > len(buffer):
                break
            self._frame(kind, bytes(buffer[offset + FRAME.size : end]))
            offset = end
        del buffer[:offset]
        if self.footer is not None or self.broken is not None:
            buffer.clear()

    def _frame(self, kind: int, data: bytes) -> None:
        if kind == FRAME_END:
            footer = parse_footer(data)
            if footer is None:
                self.broken = "the sandbox sent its outputs garbled"
            self.footer = footer
            return
        self.tar_bytes += len(data)
        if self.tar_bytes > self._max_tar_bytes:
            self.broken = "the sandbox sent more outputs than the cap"
            return
        self._tar_sink(data)
