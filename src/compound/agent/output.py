"""Turning a job's raw output bytes into numbered log records.

Each stream is decoded incrementally (a character split across reads is kept whole; invalid
UTF-8 becomes U+FFFD) and cut after every newline, so the records of one stream concatenate
back to exactly what the script wrote. Output past the per-job cap is dropped with one note.
"""

from __future__ import annotations

import asyncio
import codecs
from collections.abc import Callable

from compound.protocol import MAX_RECORD_CHARS, LogRecord, Stream

RecordSink = Callable[[LogRecord], None]

# A line still without its newline is held this long for the rest of it, then sent as is
# (so progress output without newlines still shows up live).
PARTIAL_LINE_HOLD_S = 0.05


class OutputCollector:
    def __init__(self, first_seq: int, max_output_bytes: int, sink: RecordSink) -> None:
        self._next_seq = first_seq
        self._budget_bytes = max_output_bytes
        self._max_output_bytes = max_output_bytes
        self._capped = False
        self._sink = sink
        self._partial: dict[Stream, str] = {}
        self._flush_timer: asyncio.TimerHandle | None = None
        self._decoders = {
            stream: codecs.getincrementaldecoder("utf-8")(errors="replace")
            for stream in (Stream.STDOUT, Stream.STDERR)
        }

    @property
    def last_seq(self) -> int:
        return self._next_seq - 1

    def feed(self, stream: Stream, data: bytes) -> None:
        if self._capped:
            return
        if len(data) > self._budget_bytes:
            data = data[: self._budget_bytes]
            self._capped = True
        self._budget_bytes -= len(data)
        self._emit_text(stream, self._decoders[stream].decode(data))
        if self._capped:
            self._emit_cap_note()

    def close(self) -> None:
        """End of output: whatever a decoder still holds (a cut character) becomes U+FFFD."""
        for stream, decoder in self._decoders.items():
            self._emit_text(stream, decoder.decode(b"", final=True))
        self.flush_partial_lines()

    def flush_partial_lines(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        partial, self._partial = self._partial, {}
        for stream, text in partial.items():
            self._emit(stream, text)

    def note(self, text: str) -> None:
        self._emit(Stream.SYSTEM, text + "\n")

    def _emit_cap_note(self) -> None:
        for stream, decoder in self._decoders.items():
            self._emit_text(stream, decoder.decode(b"", final=True))
        self.flush_partial_lines()
        limit_mib = self._max_output_bytes / (1024 * 1024)
        self.note(f"[compound] output limit of {limit_mib:g} MiB reached; further output dropped")

    def _emit_text(self, stream: Stream, text: str) -> None:
        text = self._partial.pop(stream, "") + text
        start = 0
        while start < len(text):
            newline = text.find("\n", start, start + MAX_RECORD_CHARS)
            if newline == -1 and len(text) - start < MAX_RECORD_CHARS:
                self._hold(stream, text[start:])
                return
            end = newline + 1 if newline != -1 else start + MAX_RECORD_CHARS
            self._emit(stream, text[start:end])
            start = end

    def _hold(self, stream: Stream, partial: str) -> None:
        self._partial[stream] = partial
        if self._flush_timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # fed outside a loop (pure tests): nothing to wait for
                self.flush_partial_lines()
                return
            self._flush_timer = loop.call_later(PARTIAL_LINE_HOLD_S, self.flush_partial_lines)

    def _emit(self, stream: Stream, data: str) -> None:
        self._sink(LogRecord(seq=self._next_seq, stream=stream, data=data))
        self._next_seq += 1
