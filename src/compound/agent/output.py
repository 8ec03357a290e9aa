"""Turning a job's raw output bytes into numbered log records.

Each stream is decoded incrementally (a character split across reads is kept whole; invalid
UTF-8 becomes U+FFFD). What one stream delivers in one turn of the event loop (a read of the
pipe, however many writes of the script it holds) becomes one record of all the complete
lines then available: more records only past MAX_RECORD_CHARS, cut after a newline where
there is one. A partial last line waits briefly for its end. So the records of one stream
concatenate back to exactly what the script wrote. Output past the per-job cap is dropped
with one note.
"""

from __future__ import annotations

import asyncio
import codecs
from collections.abc import Callable

from compound.protocol import MAX_RECORD_CHARS, LogRecord, Stream

RecordSink = Callable[[LogRecord], None]
# Told that output is gathered; its owner then calls ``drain`` when records can go out.
GatheredHook = Callable[[], None]

# A line still without its newline is held this long for the rest of it, then sent as is
# (so progress output without newlines still shows up live).
PARTIAL_LINE_HOLD_S = 0.05


class OutputCollector:
    def __init__(
        self,
        first_seq: int,
        max_output_bytes: int,
        sink: RecordSink,
        on_gathered: GatheredHook | None = None,
    ) -> None:
        """Without ``on_gathered``, what one turn of the event loop gathers is drained at
        the end of that turn; with it, whenever the owner calls ``drain``."""
        self._on_gathered = on_gathered
        self._next_seq = first_seq
        self._budget_bytes = max_output_bytes
        self._max_output_bytes = max_output_bytes
        self._capped = False
        self._sink = sink
        self._partial: dict[Stream, str] = {}
        # Text of one stream decoded in this turn of the event loop, not yet cut into records.
        self._gathered_stream = Stream.STDOUT
        self._gathered: list[str] = []
        self._gathered_chars = 0
        self._drain_soon: asyncio.Handle | None = None
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
        self._gather(stream, self._decoders[stream].decode(data))
        if self._capped:
            self._emit_cap_note()

    def close(self) -> None:
        """End of output: whatever a decoder still holds (a cut character) becomes U+FFFD."""
        self._drain()
        for stream, decoder in self._decoders.items():
            self._emit_text(stream, decoder.decode(b"", final=True))
        self.flush_partial_lines()

    def flush_partial_lines(self) -> None:
        self._drain()
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        partial, self._partial = self._partial, {}
        for stream, text in partial.items():
            self._emit(stream, text)

    def _flush_partial_of(self, stream: Stream) -> None:
        partial = self._partial.pop(stream, None)
        if partial:
            self._emit(stream, partial)

    def note(self, text: str) -> None:
        self._drain()
        self._emit(Stream.SYSTEM, text + "\n")

    def _gather(self, stream: Stream, text: str) -> None:
        # The runner hands over output a write of the script at a time: a record each would
        # cost every consumer a model per line. Writes are gathered until they can go out
        # (the end of this turn of the loop, or the owner's drain) and then become records
        # of many lines. Nothing waits for more output to arrive.
        if stream is not self._gathered_stream:
            # Records keep the order in which the streams were written: what the other
            # stream wrote before, a partial line included, goes out first.
            self._drain()
            self._flush_partial_of(self._gathered_stream)
            self._gathered_stream = stream
        was_empty = not self._gathered
        self._gathered.append(text)
        self._gathered_chars += len(text)
        if self._gathered_chars >= MAX_RECORD_CHARS:
            self._emit_gathered(whole_records_only=True)  # bounded, whatever the wait
        if self._on_gathered is not None:
            if was_empty:
                self._on_gathered()
        elif self._drain_soon is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # fed outside a loop (pure tests): every feed is a turn
                self._drain()
                return
            self._drain_soon = loop.call_soon(self._drain)

    def drain(self) -> None:
        """Turn everything gathered into records now (a partial last line is held)."""
        self._drain()

    def _drain(self) -> None:
        if self._drain_soon is not None:
            self._drain_soon.cancel()
            self._drain_soon = None
        self._emit_gathered(whole_records_only=False)

    def _emit_gathered(self, whole_records_only: bool) -> None:
        if not self._gathered:
            return
        text = "".join(self._gathered)
        self._gathered.clear()
        self._gathered_chars = 0
        self._emit_text(self._gathered_stream, text, whole_records_only)

    def _emit_cap_note(self) -> None:
        self._drain()
        for stream, decoder in self._decoders.items():
            self._emit_text(stream, decoder.decode(b"", final=True))
        self.flush_partial_lines()
        limit_mib = self._max_output_bytes / (1024 * 1024)
        self.note(f"[compound] output limit of {limit_mib:g} MiB reached; further output dropped")

    def _emit_text(self, stream: Stream, text: str, whole_records_only: bool = False) -> None:
        # One record holds every complete line available, up to MAX_RECORD_CHARS: a record
        # per line would cost each consumer a model per line. ``whole_records_only`` keeps
        # a rest shorter than a full record gathered, to join what comes later in the turn.
        text = self._partial.pop(stream, "") + text
        start = 0
        while start < len(text):
            if whole_records_only and len(text) - start < MAX_RECORD_CHARS:
                self._gathered.append(text[start:])
                self._gathered_chars = len(text) - start
                return
            end = _record_end(text, start)
            if end is None:
                self._hold(stream, text[start:])
                return
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


def _record_end(text: str, start: int) -> int | None:
    """Where the record starting at ``start`` ends: after its last newline within
    MAX_RECORD_CHARS, or at MAX_RECORD_CHARS for a longer line; None if what is left is
    one partial line shorter than that (held for the rest of it)."""
    limit = start + MAX_RECORD_CHARS
    newline = text.rfind("\n", start, limit)
    if newline != -1:
        return newline + 1
    if len(text) >= limit:
        return limit
    return None
