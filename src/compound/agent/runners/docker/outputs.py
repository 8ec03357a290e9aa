"""One run's stdout, split: the job's bytes to the output sink, its outputs to a tar file.

The I/O side of ``trailer``: it chooses the marker, writes the tar data to a file on
the agent's disk and turns the launcher's footer into the run's result fields.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

from compound.agent.runners.base import MiB, OutputSink, RunResult
from compound.agent.runners.docker.interleave import StderrUnframer
from compound.agent.runners.docker.spec import TRAILER_MARKER_PREFIX, DockerRunnerSettings
from compound.agent.runners.docker.trailer import MAX_OUTPUT_FILES, Footer, TrailerSplitter
from compound.protocol import JobStatus, Stream

OUTPUTS_TAR_PREFIX = "outputs-"
NO_TRAILER = "the sandbox ended before the job's outputs could be collected"


class OutputsReceiver:
    """An output sink for the attach stream that keeps the trailer off the job's stdout."""

    def __init__(self, settings: DockerRunnerSettings, on_output: OutputSink) -> None:
        # Fresh for each job and never in the job's reach (see in_container.launcher).
        self.marker = TRAILER_MARKER_PREFIX + secrets.token_hex(16).encode()
        self._on_output = on_output
        self._dir = settings.outputs_dir
        self._cap_bytes = settings.max_outputs_bytes
        self._file: BinaryIO | None = None
        self._path: Path | None = None
        # Why the outputs could not be kept on this machine (disk full...), in one sentence.
        self._store_error: str | None = None
        self.splitter = TrailerSplitter(self.marker, settings.max_outputs_bytes, self._write)
        # The launcher ends stderr with the marker alone (nothing may follow it there).
        self._stderr = TrailerSplitter(self.marker, 0, self._stderr_past_marker)
        # The job's stderr that came framed on stdout, in its place (see interleave).
        self._unframer = StderrUnframer(self.marker)

    def outputs_started(self) -> bool:
        return self.splitter.started

    def launcher_ended(self) -> Footer | None:
        """The footer once the launcher said all is out: both streams marked, the end frame
        read; nothing but the stream's close can follow. None until then."""
        footer = self.splitter.footer
        if footer is None or self.splitter.broken or not self._stderr.started:
            return None
        return footer

    async def __call__(self, stream: Stream, data: bytes) -> None:
        if stream is Stream.STDOUT:
            await self._pass_on(self._unframer.feed(self.splitter.feed(data)))
            return
        data = self._stderr.feed(data)
        if data:
            await self._on_output(stream, data)

    async def _pass_on(self, pieces: list[tuple[Stream, bytes]]) -> None:
        for stream, data in pieces:
            await self._on_output(stream, data)

    @staticmethod
    def _stderr_past_marker(data: bytes) -> None:
        """Bytes after stderr's marker: the launcher writes none (nothing to keep)."""

    def _write(self, data: bytes) -> None:
        if self._store_error is not None:
            return
        try:
            if self._file is None:
                fd, name = tempfile.mkstemp(prefix=OUTPUTS_TAR_PREFIX, suffix=".tar", dir=self._dir)
                self._path = Path(name)
                self._file = os.fdopen(fd, "wb")
            self._file.write(data)
        except OSError as exc:
            self._store_error = (
                f"the outputs could not be stored on the contributor ({exc.strerror})"
            )

    async def end_of_output(self) -> None:
        """The stream is over: pass on what was held back, close the tar file."""
        await self._pass_on(self._unframer.feed(self.splitter.end()))
        await self._pass_on(self._unframer.end())
        held = self._stderr.end()
        if held:
            await self._on_output(Stream.STDERR, held)
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()

    def discard(self) -> None:
        """Remove the tar file (the run failed, or there is nothing in it)."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
        if self._path is not None:
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()
            self._path = None

    def result(self, result: RunResult) -> RunResult:
        """``result`` with the outputs tar and note; input refusals fail the job."""
        footer = self.splitter.footer
        if footer is not None and footer.input_error:
            self.discard()
            error = f"the input files were refused: {footer.input_error}"
            return RunResult(JobStatus.FAILED, None, error)
        note = self._note(footer)
        if footer is None or footer.files == 0 or self.splitter.broken or self._store_error:
            self.discard()
        return replace(result, outputs_tar=self._path, outputs_note=note)

    def _note(self, footer: Footer | None) -> str | None:
        if self.splitter.broken or self._store_error:
            return f"{self.splitter.broken or self._store_error}; none are returned"
        if footer is None:
            return NO_TRAILER
        sentences = []
        if footer.error:
            sentences.append(footer.error)
        if footer.left_out:
            sentences.append(
                f"outputs are capped at {self._cap_bytes / MiB:g} MiB: {footer.left_out} "
                f"file(s) ({footer.left_out_bytes / MiB:.1f} MiB) were left out"
            )
        if footer.over_count:
            sentences.append(
                f"outputs are capped at {MAX_OUTPUT_FILES} files: {footer.over_count} "
                "file(s) were left out"
            )
        if footer.unkept:
            sentences.append(
                f"{footer.unkept} file(s) were skipped because their names cannot be kept: "
                f"{footer.unkept_names}"
            )
        if footer.skipped:
            sentences.append(
                f"{footer.skipped} entries in the job's folder are not regular files and were "
                "skipped"
            )
        return "; ".join(sentences) or None
