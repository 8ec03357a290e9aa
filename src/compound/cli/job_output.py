"""A job's output on the user's terminal: raw bytes to a pipe or file, sanitised text to a TTY.

A job's output is written by the script and reported by a contributor, who can forge it: it
must not drive the user's terminal. Written raw, an OSC 52 sequence sets the clipboard (the
next paste runs the contributor's command), OSC 0/2 rename the window, CSI sequences clear
the screen or move the cursor back over what the CLI printed, and DCS strings talk to the
terminal itself. So when a stream is a terminal, its records go through `TerminalSanitizer`:
text, newlines, tabs, carriage returns (a progress bar redraws its own line, which is all a
carriage return can reach) and plain SGR colour sequences pass; every other escape sequence
is dropped whole (OSC, DCS, SOS, PM, APC, CSI other than SGR, two-character ESC sequences);
other C0 controls and DEL are shown as their control pictures (BEL as ␇) and C1 controls as
␛ and their 7-bit letter (U+009B as ␛[), so nothing of them acts. Piped or redirected, the
output stays byte-identical to what the job wrote (`compound logs ID > f` is the stored log).

Standard library only and cheap to import: `compound logs` and `compound submit` load it.
"""

from __future__ import annotations

import re
import sys
from typing import BinaryIO

# Characters that end plain text: C0 controls but tab, newline and carriage return; DEL; C1.
_SPECIAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# What ends an OSC/DCS/SOS/PM/APC string: BEL, ESC (of ESC \), or a newline (an unterminated
# string must not swallow the rest of a log).
_STRING_END = re.compile("[\x07\x1b\n]")
_SGR_BODY = re.compile("[0-9;:]*")
MAX_CSI_CHARS = 64  # a longer CSI is dropped whole: hostile input cannot grow the state

_GROUND = 0
_ESCAPE = 1  # after ESC
_INTERMEDIATE = 2  # ESC then 0x20-0x2F bytes, until a final byte
_CSI = 3  # after ESC [: parameters until a final byte 0x40-0x7E
_STRING = 4  # OSC, DCS, SOS, PM, APC: dropped until BEL, ESC \ or a newline
_STRING_ESCAPE = 5  # ESC inside a string

_STRING_INTRODUCERS = frozenset("]PX^_")
_RESET = "\x1b[0m"


def visible(char: str) -> str:
    """A control character as text that does nothing: its control picture (C0, DEL), or ␛
    and the letter of its 7-bit form (C1: U+009B is ESC [)."""
    code = ord(char)
    if code < 0x20:
        return chr(0x2400 + code)
    if code == 0x7F:
        return "\u2421"
    return "\u241b" + chr(code - 0x40)


class TerminalSanitizer:
    """One stream's filter: feed text as it comes (a sequence may be split anywhere across
    feeds; its start is held, never written half), get what is safe to show."""

    def __init__(self) -> None:
        self._state = _GROUND
        self._csi: str | None = ""  # None: past MAX_CSI_CHARS, dropped at its final byte
        self._styled = False  # an SGR other than a reset was passed: the colour may be on

    def feed(self, text: str) -> str:
        out: list[str] = []
        i = 0
        n = len(text)
        while i < n:
            if self._state == _GROUND:
                special = _SPECIAL.search(text, i)
                end = special.start() if special else n
                if end > i:
                    out.append(text[i:end])
                    i = end
                    continue
            elif self._state == _STRING:
                ending = _STRING_END.search(text, i)
                if ending is None:
                    break  # all of it is inside the string
                i = ending.start()
            self._step(text[i], out)
            i += 1
        return "".join(out)

    def end_styles(self) -> str:
        """What puts the terminal's colours back to default (empty when nothing was passed
        that could have changed them); the CLI's own sentences and the prompt come next."""
        if not self._styled:
            return ""
        self._styled = False
        return _RESET

    def _step(self, char: str, out: list[str]) -> None:
        """One character outside plain text, or inside an escape sequence."""
        state = self._state
        if state == _GROUND:
            self._ground(char, out)
        elif state == _ESCAPE:
            self._escape_char(char, ord(char), out)
        elif state == _INTERMEDIATE:
            code = ord(char)
            if not 0x20 <= code <= 0x2F:
                self._state = _GROUND  # complete (0x30-0x7E) or broken: dropped either way
                if not 0x30 <= code <= 0x7E:
                    self._ground(char, out)
        elif state == _CSI:
            self._csi_char(char, ord(char), out)
        else:
            self._string_char(char, out)

    def _escape_char(self, char: str, code: int, out: list[str]) -> None:
        if char == "[":
            self._state = _CSI
            self._csi = ""
        elif char in _STRING_INTRODUCERS:
            self._state = _STRING
        elif 0x20 <= code <= 0x2F:
            self._state = _INTERMEDIATE
        elif 0x30 <= code <= 0x7E:
            self._state = _GROUND  # a two-character sequence (ESC 7, ESC c, ...): dropped
        else:
            out.append(visible("\x1b"))  # a lone ESC: shown, and the character is text
            if char != "\x1b":  # (a second ESC may start a sequence of its own)
                self._state = _GROUND
                self._ground(char, out)

    def _string_char(self, char: str, out: list[str]) -> None:
        """BEL, ESC or a newline inside a string (the rest is skipped by ``feed``), or any
        character after an ESC inside one."""
        if self._state == _STRING_ESCAPE and char not in "\\\n\x1b":
            self._state = _STRING  # not ESC \: the string goes on
        elif char == "\x1b":
            self._state = _STRING_ESCAPE
        else:  # BEL, ESC \ or a newline: the end of the string, which is dropped
            self._state = _GROUND
            if char == "\n":
                out.append(char)

    def _csi_char(self, char: str, code: int, out: list[str]) -> None:
        if 0x40 <= code <= 0x7E:
            self._state = _GROUND
            body = self._csi
            if char == "m" and body is not None and _SGR_BODY.fullmatch(body):
                out.append(f"\x1b[{body}m")
                self._styled = body not in ("", "0")
            # any other CSI (cursor moves, erase, scroll, modes, private ones): dropped
        elif 0x20 <= code <= 0x3F:
            if self._csi is not None:
                self._csi = self._csi + char if len(self._csi) < MAX_CSI_CHARS else None
        else:
            # A control or other character breaks the sequence: dropped, the character
            # counts as text (or as the start of the next sequence).
            self._state = _GROUND
            self._ground(char, out)

    def _ground(self, char: str, out: list[str]) -> None:
        if char == "\x1b":
            self._state = _ESCAPE
        elif _SPECIAL.match(char):
            out.append(visible(char))
        else:
            out.append(char)


class JobOutput:
    """Where a job's records go: stdout records to stdout, stderr and system records to
    stderr; each stream sanitised when it is a terminal, byte-exact otherwise."""

    def __init__(
        self, stdout: BinaryIO, stderr: BinaryIO, stdout_tty: bool, stderr_tty: bool
    ) -> None:
        self._streams = (stdout, stderr)
        self._filters = (
            TerminalSanitizer() if stdout_tty else None,
            TerminalSanitizer() if stderr_tty else None,
        )
        # Where the job's output starts in a regular file: a later attempt's output replaces
        # an earlier one's there (None: a pipe or terminal, which cannot be taken back).
        self._stdout_start = _position(stdout)

    @classmethod
    def of_process(cls) -> JobOutput:
        return cls(sys.stdout.buffer, sys.stderr.buffer, sys.stdout.isatty(), sys.stderr.isatty())

    def write(self, to_stdout: bool, text: str, flush: bool = False) -> None:
        """Write a record's text to its stream; ``flush`` it there (output that interleaves
        stdout and stderr on one terminal keeps its order)."""
        stream = self._streams[0 if to_stdout else 1]
        sanitizer = self._filters[0 if to_stdout else 1]
        if sanitizer is not None:
            # A lone surrogate from a forged record must not end the command with a traceback.
            stream.write(sanitizer.feed(text).encode("utf-8", "replace"))
        else:
            stream.write(text.encode("utf-8"))
        if flush:
            stream.flush()

    def restart_stdout(self) -> bool:
        """Take back what was written to stdout (a job's attempt ended without a result and
        another starts), so a file holds one clean run; False where it cannot be (a pipe or
        a terminal: what was shown stays)."""
        stdout = self._streams[0]
        stdout.flush()
        if self._stdout_start is None:
            return False
        try:
            stdout.seek(self._stdout_start)
            stdout.truncate()
        except OSError:
            return False
        return True

    def end_styles(self) -> None:
        """Colours the job left on go back to default (terminals only), and both streams are
        flushed: call before the CLI writes a line of its own and at the end."""
        for stream, sanitizer in zip(self._streams, self._filters, strict=True):
            if sanitizer is not None:
                stream.write(sanitizer.end_styles().encode("ascii"))
            stream.flush()


def _position(stream: BinaryIO) -> int | None:
    """Where ``stream`` writes next, if it is a file that can be rewound."""
    try:
        return stream.tell() if stream.seekable() else None
    except (OSError, ValueError):
        return None
